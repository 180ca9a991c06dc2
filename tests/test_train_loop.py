"""Training loop, config files and the `streamrestore train` command (tiny configs, CPU)."""
import csv
import json

import numpy as np
import pytest
import torch

from streamrestore.errors import InputError
from streamrestore.model.config import tiny_config
from streamrestore.train.config import TrainConfig, build_model_config, load_train_config
from streamrestore.train.loop import StepBatchSampler, TimeBudget, Trainer, _lr_lambda, augment_copies

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
IDENTITIES = ("deepface:id01", "deepface:id02", "deepface:id03")


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    """Tiny networks run fastest single-threaded, and far faster on a busy shared machine."""


@pytest.fixture(scope="module")
def tiny_pack(shared, train_ok_folders, tmp_path_factory):
    """Photos of three train-ok people aligned at 32 px (the tiny model's resolution)."""
    from streamrestore.data.pack import pack_dataset
    from streamrestore.data.sources import shared_sources
    from streamrestore.faces.detect import ScrfdDetector

    path = tmp_path_factory.mktemp("pack") / "tiny.npz"
    sources = shared_sources(shared / "data", train_ok_folders=train_ok_folders, identities=IDENTITIES)
    pack_dataset(sources, path, 32, detector=ScrfdDetector(shared / "models/scrfd/det_500m.onnx"))
    return path


def tiny_train_config(pack, shared, out, **changes) -> TrainConfig:
    # x0 predicted directly from the clean latent: a from-scratch network learns it in a few steps
    model = tiny_config("pixel", add_noise=False, prediction_type="sample")
    base = dict(model=model, data=str(pack), output_dir=str(out), judge_models=str(shared / "models"),
                identity_weights=str(shared / "models/recog/mobilefacenet_foamliu.pt"), steps=6,
                batch_size=4, lr=2e-3, warmup_steps=1, val_every=0, val_fraction=0.3, val_cases=2,
                checkpoint_every=100, log_every=1, self_ref_start=0.8, self_ref_until=0.5, landmark_weight=10.0,
                identity_weight=0.0)
    base.update(changes)
    return TrainConfig(**base)


def fixed_l1(trainer: Trainer, count: int = 8) -> float:
    """Mean L1 of the current weights on fixed samples (each with its references)."""
    restorer = trainer.restorer("cpu")
    errors = []
    for i in range(count):
        sample = trainer.dataset[i]
        refs = sample["references"][sample["ref_mask"]]
        out = restorer.restore(sample["degraded"][None], [restorer.encode_references(refs)])
        errors.append(float((out[0] - sample["target"]).abs().mean()))
    return float(np.mean(errors))


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    net = trainer.accelerator.unwrap_model(trainer.model).net
    return {k: v.detach().clone() for k, v in net.weights_state_dict().items()}


def test_training_lowers_the_loss(tiny_pack, shared, tmp_path):
    trainer = Trainer(tiny_train_config(tiny_pack, shared, tmp_path, steps=10, lr=3e-3, identity_weight=0.5))
    before = fixed_l1(trainer)
    result = trainer.train(progress=False)
    after = fixed_l1(trainer)
    assert result.step == 10
    assert after < before, (before, after)
    rows = list(csv.DictReader((tmp_path / "losses.csv").open()))
    first, last = (np.mean([float(r["loss"]) for r in part]) for part in (rows[:3], rows[-3:]))
    assert last < 0.75 * first, (first, last)
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("loss", "pixel", "ssim", "identity", "landmark"))
    assert float(rows[0]["self_ref_p"]) > 0 and float(rows[-1]["self_ref_p"]) == 0  # the curriculum ran out
    # the final step validates on the held-out person and exports the shippable file
    methods = {r["method"] for r in result.validation}
    assert {"input", "model_norefs", "model_refs4"} <= methods
    from streamrestore.model.registry import load_model

    restorer = load_model(result.exported, device="cpu")
    face = trainer.dataset[0]["degraded"][None]
    out = restorer.restore(face, [None])
    assert out.shape == face.shape and torch.isfinite(out).all()


def test_resume_continues_exactly(tiny_pack, shared, tmp_path):
    straight = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "a"))
    straight.train(progress=False)

    interrupted = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "b", checkpoint_every=2))
    first = interrupted.train(stop_at=3, progress=False)
    assert first.step == 3 and first.checkpoint.name == "step_0000003" and first.exported is None
    del interrupted
    resumed = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "b", checkpoint_every=2), resume="latest")
    assert resumed.step == 3
    assert resumed.scheduler.get_last_lr() == pytest.approx(
        [straight.config.lr * _lr_lambda(straight.config)(3)])
    resumed.train(progress=False)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # the logged losses after the resume are the ones of the uninterrupted run
    rows_a = list(csv.DictReader((tmp_path / "a/losses.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "b/losses.csv").open()))
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    for ra, rb in zip(rows_a, rows_b):
        assert float(rb["loss"]) == pytest.approx(float(ra["loss"]), rel=1e-4, abs=1e-6)
    # only keep_checkpoints complete checkpoints are kept
    assert len(list((tmp_path / "b/checkpoints").glob("step_*"))) <= 2


@pytest.mark.parametrize("select", ["loss", "identity"])
def test_heldout_losses_keep_the_best_weights_and_leave_training_alone(tiny_pack, shared, tmp_path, select):
    plain = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "plain", steps=4, lr=3e-3, identity_weight=0.5))
    plain.train(progress=False)
    trainer = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "h", steps=4, lr=3e-3, identity_weight=0.5,
                                        heldout_every=1, heldout_samples=6, export_dtype="float32",
                                        heldout_select=select))
    # the same held-out samples and losses at every call, and the model back in training mode
    first = trainer.heldout_losses()
    assert trainer.heldout_losses() == first and trainer.accelerator.unwrap_model(trainer.model).training
    assert sum(b["degraded"].shape[0] for b in trainer._heldout_batches()) == 6
    trainer.train(progress=False)
    # measuring held-out losses draws nothing from the training's random streams
    a, b = weights(plain), weights(trainer)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    rows = list(csv.DictReader((tmp_path / "h/heldout.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[0]["loss"]) == pytest.approx(first["loss"], rel=1e-5)
    losses = [float(r[select]) for r in rows]
    assert len(set(losses)) > 1  # the weights changed, and so did their held-out loss
    best_step = int(np.argmin(losses))
    assert [int(r["best"]) for r in rows] == [int(v < min(losses[:i], default=np.inf)) for i, v in enumerate(losses)]
    assert json.loads((tmp_path / "h/heldout_best.json").read_text())["step"] == best_step
    # best.safetensors holds the weights of that step: their held-out loss is the row's
    from streamrestore.model.checkpoint import read_model_file

    best = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "check", steps=4, heldout_samples=6,
                                     identity_weight=0.5, export_dtype="float32"))
    net = best.accelerator.unwrap_model(best.model).net
    net.load_state_dict(read_model_file(tmp_path / "h/best.safetensors").state_dict())
    assert best.heldout_losses()[select] == pytest.approx(losses[best_step], rel=2e-3)


def test_train_only_trains_the_named_parameters_alone(tiny_pack, shared, tmp_path):
    trainer = Trainer(tiny_train_config(tiny_pack, shared, tmp_path, steps=2, lr=3e-3, train_only=["attn1"]))
    before = weights(trainer)
    trainer.train(progress=False)
    after = weights(trainer)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("attn1" in k for k in changed), sorted(changed)
    assert trainer.num_trainable < trainer.num_parameters
    with pytest.raises(ValueError, match="no_such_layer"):
        Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "bad", train_only=["no_such_layer"]))


def test_phases_run_in_order_and_resume_exactly(tiny_pack, shared, tmp_path):
    # phase 1: landmark loss, no identity loss; phase 2: the other way round. The run ends with
    # the last phase (step 4), before the schedule's 6 steps.
    phases = [{"until": 2, "identity_weight": 0.0}, {"until": 4, "identity_weight": 0.5, "landmark_weight": 0.0}]
    straight = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "a", steps=6, phases=phases))
    assert straight.identity_loss is None and straight.map_layer is not None
    result = straight.train(progress=False)
    assert result.step == 4 and result.exported is not None
    assert straight.identity_loss is not None and straight.map_layer is None
    rows = list(csv.DictReader((tmp_path / "a/losses.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["identity"]) > 0 for r in rows] == [False, False, True, True]
    assert [float(r["landmark"]) > 0 for r in rows] == [True, True, False, False]
    boundary = json.loads((tmp_path / "a/checkpoints/step_0000002/trainer_state.json").read_text())
    assert boundary["config"]["identity_weight"] == 0.0  # each phase ends with a checkpoint

    # stopped inside phase 1 or at its end, a resumed run goes on through the phases as if never stopped
    for stop in (1, 2):
        out = tmp_path / f"stop{stop}"
        first = Trainer(tiny_train_config(tiny_pack, shared, out, steps=6, phases=phases)).train(stop_at=stop, progress=False)
        assert first.step == stop and first.exported is None
        resumed = Trainer(tiny_train_config(tiny_pack, shared, out, steps=6, phases=phases), resume="latest")
        assert resumed.config.identity_weight == (0.0 if stop < 2 else 0.5)
        assert resumed.train(progress=False).step == 4
        a, b = weights(straight), weights(resumed)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
        resumed_losses = [float(r["loss"]) for r in csv.DictReader((out / "losses.csv").open())]
        assert resumed_losses == pytest.approx([float(r["loss"]) for r in rows], rel=1e-4, abs=1e-6)


def test_phases_are_checked(tmp_path):
    base = 'steps = 10\nidentity_weight = 0.0\n'
    for phases, message in (
        ('[[phases]]\nidentity_weight = 0.0\n', "until"),
        ('[[phases]]\nuntil = 11\n', "at most steps"),
        ('[[phases]]\nuntil = 5\n[[phases]]\nuntil = 5\n', "after 5"),
        ('[[phases]]\nuntil = 5\nlr = 1e-3\n', "cannot change"),
        ('[[phases]]\nuntil = 5\nidentity_wieght = 1.0\n', "identity_wieght"),
        ('[[phases]]\nuntil = 5\nlandmark_kind = "l2"\n', "landmark_kind"),
    ):
        (tmp_path / "c.toml").write_text(base + phases)
        with pytest.raises(InputError, match=message):
            load_train_config(tmp_path / "c.toml")
    assert TrainConfig(steps=10).final_step == 10 and TrainConfig(steps=10).phase(3) == (TrainConfig(steps=10), 10)


def test_step_sampler_is_a_function_of_the_batch_number():
    full = list(StepBatchSampler(targets=7, batch_size=3, num_batches=10, seed=5))
    tail = list(StepBatchSampler(targets=7, batch_size=3, num_batches=10, seed=5, start_batch=4))
    assert tail == full[4:]
    flat = [i for batch in full for i in batch]
    # every epoch visits each target exactly once
    for epoch in range(len(flat) // 7):
        assert sorted(i % 7 for i in flat[epoch * 7:(epoch + 1) * 7]) == list(range(7))
        assert all(i // 7 == epoch for i in flat[epoch * 7:(epoch + 1) * 7])
    assert full != list(StepBatchSampler(targets=7, batch_size=3, num_batches=10, seed=6))


def test_augmented_copies_carry_their_landmarks():
    r = 64
    points = torch.tensor([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.75], [0.65, 0.7]]])
    images = torch.zeros(5, 3, r, r)
    for k in range(5):  # one bright blob per image, at landmark k
        x, y = (points[0, k] * r).round().long()
        images[k, :, y - 1:y + 2, x - 1:x + 2] = 1.0
    gen = torch.Generator().manual_seed(3)
    warped, moved = augment_copies(images, points.expand(5, 5, 2).clone(), gen, rotate_deg=15, scale=0.1,
                                   shift=0.08, color=0.0)
    assert not torch.allclose(moved, points.expand(5, 5, 2))  # it did move
    for k in range(5):
        grey = warped[k, 0]
        ys, xs = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
        w = grey / grey.sum()
        found = torch.stack([(w * xs).sum(), (w * ys).sum()]) / r
        assert torch.allclose(found, moved[k, k], atol=1.0 / r), (k, found, moved[k, k])


def test_lite_config_fits_the_size_budget():
    config = load_train_config(REPO / "configs/lite.toml")
    from streamrestore.model.restorer import InstantRestoreNet

    net = InstantRestoreNet(config.model)
    params = sum(p.numel() for p in net.parameters())
    assert params <= 10_000_000
    assert params * 2 <= 20 * 2**20  # fp16 weights
    assert config.model.latent == "pixel" and config.model.unet_lora is None
    assert config.require_train_ok
    # attention is shared at every up-block resolution, 32x32 tokens included
    assert any(n.startswith("up_blocks.2.") for n in net.shared_layers)
    # the third attempt's recipe: position prior, no AdaIN, residual output
    assert config.model.reference_position_sigma > 0 and config.model.adain is False
    assert config.model.prediction_type == "residual" and config.landmark_kind == "kl"
    # the shipped file was built from this config (same network, same settings)
    from streamrestore.model.checkpoint import read_model_file
    from streamrestore.model.registry import LITE_WEIGHTS

    # ... plus the detail head of configs/lite_v9_head.toml, trained on that network's frozen outputs, on
    # video-like and (a quarter) severe damage and on faces of whole degraded clips, with more of the loss on
    # the 1.5-4 px band: three heads, their changes averaged
    from streamrestore.train.detail_head import load_detail_head_config

    head = load_detail_head_config(REPO / "configs/lite_v9_head.toml")
    assert {p["name"] for p in head.presets} >= {"video_upload", "severe_at_128", "clean"}
    assert head.video_frames > 0 and head.members == 3 and head.band_weight > 0
    from streamrestore.model.checkpoint import read_model_recipe
    from streamrestore.train.detail_head import head_recipe

    assert read_model_recipe(LITE_WEIGHTS) == head_recipe(head)  # the shipped head was trained by this recipe
    shipped = read_model_file(LITE_WEIGHTS)
    assert shipped.config == config.model.replace(detail_head=head.head)
    assert sum(p.numel() for p in shipped.parameters()) * 2 <= 20 * 2**20
    # phases 1-3 are data: identity loss off until step 1600, the first curriculum until 1100
    assert [p["until"] for p in config.phases] == [1100, 1600, 2100] and config.final_step == 2100 < config.steps
    settings = {start: config.phase(start)[0] for start in (0, 1100, 1600)}
    assert [(c.identity_weight, c.self_ref_until) for c in settings.values()] == [(0.0, 0.5), (0.0, 1.0), (0.2, 1.0)]
    assert [config.phase(start)[1] for start in settings] == [1100, 1600, 2100]
    # ... through phase 4, which holds the benchmark people out and mixes in clean faces
    phase4 = load_train_config(REPO / "configs/lite_v2.toml")
    assert phase4.model == config.model and phase4.init_weights
    assert {"Barack Obama", "Andrew Ng", "unknown-styletalk_happyenglish"} <= set(phase4.holdout_identities)
    assert "clean" in [t["name"] for t in phase4.extra_presets]
    # ... and phases 5-6 (lite v3, v4: the shipped file), each starting from the one before and
    # mostly trained on video uploads, with the same people held out
    previous = "lite_v2"
    for name in ("lite_v3", "lite_v4"):
        phase = load_train_config(REPO / f"configs/{name}.toml")
        assert phase.model == config.model and phase.init_weights == f"runs/{previous}.safetensors"
        assert set(phase4.holdout_identities) <= set(phase.holdout_identities)
        mix = {t["name"]: t["weight"] for t in phase.extra_presets}
        assert mix["video_upload"] >= 0.45 and mix["clean"] > 0
        previous = name


def test_every_shipped_training_config_loads():
    from streamrestore.train.detail_head import load_detail_head_config

    paths = sorted((REPO / "configs").rglob("*.toml"))
    heads = [load_detail_head_config(p) for p in paths if p.name.endswith("_head.toml")]
    configs = [load_train_config(p) for p in paths if p.name != "shared_data.toml" and not p.name.endswith("_head.toml")]
    assert len(configs) >= 6 and heads
    for config in configs:  # the files the package does not know of are named by each config
        assert config.identity_weights.endswith("mobilefacenet_foamliu.pt")
        # the judges too, except where a run validates afterwards (a lent GPU does not carry them)
        assert config.judge_models or config.val_every == 0
    for head in heads:  # a head's samples come from its base model's training config
        assert load_train_config(REPO / head.unet_config).data


def test_init_from_the_shipped_lite_takes_its_unet():
    """The shipped file carries a detail head; a network without one starts from its UNet."""
    from streamrestore.model.checkpoint import read_model_file
    from streamrestore.model.restorer import InstantRestoreNet
    from streamrestore.train.loop import _init_from_file

    config = load_train_config(REPO / "configs/experiments/lite_v9_gpu.toml")
    net = InstantRestoreNet(config.model)
    shipped = read_model_file(REPO / config.init_weights).weights_state_dict()
    state = net.weights_state_dict()
    assert any(k.startswith("detail_head.") for k in shipped) and not any(k.startswith("detail_head.") for k in state)
    _init_from_file(net, REPO / config.init_weights)
    for k, v in net.weights_state_dict().items():
        assert torch.equal(v, shipped[k].to(v.dtype)), k


def test_missing_model_files_are_named(tiny_pack, shared, tmp_path):
    with pytest.raises(InputError, match="identity_weights.*none is set"):
        Trainer(tiny_train_config(tiny_pack, shared, tmp_path, identity_weight=0.5, identity_weights=None))
    with pytest.raises(InputError, match="nowhere.pt not found"):
        Trainer(tiny_train_config(tiny_pack, shared, tmp_path, identity_weight=0.5,
                                  identity_weights=str(tmp_path / "nowhere.pt")))
    with pytest.raises(InputError, match="judge_models"):
        Trainer(tiny_train_config(tiny_pack, shared, tmp_path, judge_models=str(tmp_path)))
    # neither is needed without the identity loss and the judges
    Trainer(tiny_train_config(tiny_pack, shared, tmp_path, identity_weights=None, judge_models=None))


def test_position_prior_config_loads_within_budget():
    # the second lite attempt (not shipped; see docs/lite_history.md): same network, position prior on
    config = load_train_config(REPO / "configs/experiments/lite_posprior.toml")
    from streamrestore.model.restorer import InstantRestoreNet

    assert config.model.reference_position_sigma > 0 and config.model.adain is False
    assert config.landmark_kind == "kl"
    net = InstantRestoreNet(config.model)
    assert sum(p.numel() for p in net.parameters()) <= 10_000_000


def test_config_files(tmp_path):
    table = {"steps": 5, "data": "x.npz", "preset": "moderate",
             "model": {"base": "tiny-pixel", "unet_lora": False, "adain": False, "unet": {"cross_attention_dim": 8}}}
    (tmp_path / "c.json").write_text(json.dumps(table))
    config = load_train_config(tmp_path / "c.json", steps=9)
    assert config.steps == 9 and config.model.adain is False and config.model.unet["cross_attention_dim"] == 8
    assert config.model.unet["block_out_channels"] == tiny_config("pixel").unet["block_out_channels"]
    (tmp_path / "bad.toml").write_text('steps = 5\nlearning_rate = 1.0\n')
    with pytest.raises(InputError, match="learning_rate"):
        load_train_config(tmp_path / "bad.toml")
    (tmp_path / "neg.toml").write_text('steps = 0\n')
    with pytest.raises(InputError, match="steps"):
        load_train_config(tmp_path / "neg.toml")
    with pytest.raises(InputError, match="not found"):
        load_train_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="base"):
        build_model_config({"base": "huge"})
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="foggy")
    with pytest.raises(ValueError, match="landmark_kind"):
        TrainConfig(landmark_kind="l2")
    with pytest.raises(ValueError, match="reference_jitter"):
        TrainConfig(reference_jitter=-0.5)
    assert TrainConfig(steps=100, self_ref_start=0.8, self_ref_until=0.5).self_ref_probability(25) == pytest.approx(0.4)


def test_set_overrides_reach_the_config(tmp_path):
    from streamrestore.train.config import parse_overrides

    sets = parse_overrides(["identity_weight=0.2", "max_refs = 4", "output_dir=runs/phase2", 'landmark_kind="kl"'])
    assert sets == {"identity_weight": 0.2, "max_refs": 4, "output_dir": "runs/phase2", "landmark_kind": "kl"}
    (tmp_path / "c.toml").write_text('steps = 5\nidentity_weight = 1.0\n')
    config = load_train_config(tmp_path / "c.toml", **sets)
    assert (config.identity_weight, config.max_refs, config.output_dir) == (0.2, 4, "runs/phase2")
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_overrides(["identity_weight"])
    with pytest.raises(InputError, match="identity_wieght"):
        load_train_config(tmp_path / "c.toml", **parse_overrides(["identity_wieght=0"]))


def test_train_command(tiny_pack, shared, tmp_path, capsys):
    from streamrestore.cli import main

    table = {"data": str(tiny_pack), "output_dir": str(tmp_path / "run"), "judge_models": str(shared / "models"), "steps": 4,
             "batch_size": 2, "val_fraction": 0.3, "val_every": 0, "identity_weight": 0.0,
             "model": {"base": "tiny-pixel"}}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(table))
    assert main(["train", str(config), "--stop-at", "2", "--no-progress", "--export", str(tmp_path / "at2.safetensors")]) == 0
    assert (tmp_path / "run/checkpoints/step_0000002/trainer_state.json").is_file()
    assert not (tmp_path / "run/model.safetensors").exists()
    from streamrestore.model.registry import load_model

    assert load_model(str(tmp_path / "at2.safetensors"), device="cpu").resolution == 32  # the weights at step 2
    assert main(["train", str(config), "--resume", "latest", "--no-progress"]) == 0
    assert (tmp_path / "run/model.safetensors").is_file()
    assert main(["train", str(tmp_path / "nope.toml")]) == 2  # a user error, one line, exit code 2
    capsys.readouterr()
    assert main(["train", str(config), "--set", "output_dir=a", "--output-dir", "b"]) == 2  # not a traceback
    assert "--output-dir 'b' and --set output_dir='a' disagree" in capsys.readouterr().err
    assert main(["train", str(config), "--torch-threads", "0"]) == 2  # the other commands' name for it
    assert "--torch-threads must be >= 1, got 0" in capsys.readouterr().err


def test_train_without_its_extra_names_the_extra(tmp_path, monkeypatch, capsys):
    """A plain install has no accelerate: the data and the model loaded, then a traceback at the first step."""
    import sys

    from streamrestore.cli import main

    monkeypatch.setitem(sys.modules, "accelerate", None)  # (as if it were not installed)
    (tmp_path / "c.toml").write_text("steps = 5\n")
    assert main(["train", str(tmp_path / "c.toml")]) == 2
    assert 'needs the accelerate package: pip install "streamrestore[train]"' in capsys.readouterr().err


def test_schedule_by_time_ends_at_the_lowest_rate(tiny_pack, shared, tmp_path, monkeypatch):
    config = TrainConfig(data=str(tiny_pack), steps=100, warmup_steps=2, min_lr_ratio=0.1)
    clock = [0.0]
    monkeypatch.setattr("streamrestore.train.loop.time.monotonic", lambda: clock[0])
    budget = TimeBudget(60)
    factor = _lr_lambda(config, budget)
    assert factor(50) == pytest.approx(_lr_lambda(config)(50))  # not started: the steps' schedule
    budget.start()
    assert factor(1) == pytest.approx(1.0)  # warm-up by steps
    assert factor(10) == pytest.approx(_lr_lambda(config)(10))  # the steps are further along than the clock
    clock[0] = 30.0  # half the time, a tenth of the steps: the clock leads
    assert factor(10) == pytest.approx(0.1 + 0.9 * 0.5)
    clock[0] = 90.0
    assert factor(10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="seconds"):
        TimeBudget(-1)
    monkeypatch.undo()

    from streamrestore.cli import main

    table = {"data": str(tiny_pack), "output_dir": str(tmp_path / "run"), "judge_models": str(shared / "models"),
             "steps": 1000, "warmup_steps": 1, "min_lr_ratio": 0.25, "lr": 1e-3, "batch_size": 2, "val_fraction": 0.3,
             "val_every": 0, "identity_weight": 0.0, "log_every": 1, "model": {"base": "tiny-pixel"}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(table))
    # The budget counts as spent once the run starts (deterministic), and 0.001 minutes ends the run
    # after its first step, far from the 1000 steps: the rate is already the lowest there.
    monkeypatch.setattr(TimeBudget, "used", lambda self: 0.0 if self.started is None else 1.0)
    assert main(["train", str(path), "--max-minutes", "0.001", "--schedule-by-time", "--no-progress",
                 "--export", str(tmp_path / "w.safetensors")]) == 0
    rows = list(csv.DictReader((tmp_path / "run/losses.csv").open()))
    assert int(rows[-1]["step"]) < 1000 and float(rows[-1]["lr"]) == pytest.approx(0.25e-3, rel=1e-3)
    assert (tmp_path / "w.safetensors").is_file()
    assert main(["train", str(path), "--schedule-by-time"]) == 2  # needs --max-minutes
    # the library: a trainer given only a budget stops when it is spent
    trainer = Trainer(load_train_config(path, output_dir=str(tmp_path / "lib")), time_budget=TimeBudget(0))
    assert trainer.train(progress=False).step == 1


def test_eval_only_packs_are_refused(shared, tmp_path):
    from streamrestore.data.pack import pack_dataset
    from streamrestore.data.sources import discover_sources
    from streamrestore.faces.detect import ScrfdDetector

    folder = shared / "data/instantrestore"
    sources = [s for s in discover_sources(folder) if s.identity == sorted({s.identity for s in discover_sources(folder)})[0]][:3]
    pack = tmp_path / "eval.npz"
    pack_dataset(sources, pack, 32, detector=ScrfdDetector(shared / "models/scrfd/det_500m.onnx"), allow_eval_only=True,
                 max_upscale=100.0)
    with pytest.raises(InputError, match="train-ok"):
        Trainer(TrainConfig(model=tiny_config("pixel"), data=str(pack), output_dir=str(tmp_path / "o"),
                            identity_weight=0.0, steps=2))


def test_shipped_lite_loads_and_restores_a_shared_face(shared):
    import cv2

    from streamrestore.model.registry import load_model

    restorer = load_model("lite", device="cpu")
    assert restorer.resolution == 128
    case = shared / "data/instantrestore"
    person = sorted(p for p in case.iterdir() if p.is_dir())[0]

    def load(path):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255

    degraded = load(person / "degraded.png")
    refs = torch.cat([load(p) for p in sorted((person / "conditioning").glob("*.png"))[:4]])
    with_refs = restorer.restore(degraded, [restorer.encode_references(refs)])
    without = restorer.restore(degraded, [None])
    assert with_refs.shape == degraded.shape and torch.isfinite(with_refs).all()
    assert 0 <= float(with_refs.min()) and float(with_refs.max()) <= 1
    assert float((with_refs - degraded).abs().mean()) > 1e-3  # it changed the face
    # the references are used: they move the output (the interim model's moved it by 4e-5), and the
    # person's own references bring it closer to the ground truth than another person's do
    assert float((with_refs - without).abs().mean()) > 2e-3
    other = sorted(p for p in case.iterdir() if p.is_dir())[1]
    other_refs = torch.cat([load(p) for p in sorted((other / "conditioning").glob("*.png"))[:4]])
    with_other = restorer.restore(degraded, [restorer.encode_references(other_refs)])
    gt = load(person / "gt.png")
    l1 = {name: float((out - gt).abs().mean()) for name, out in
          (("refs", with_refs), ("other", with_other), ("input", degraded))}
    assert l1["refs"] < l1["other"] and l1["refs"] < l1["input"], l1


def test_mix_holdout_and_init_weights(tiny_pack, shared, tmp_path):
    """A degradation mix, held-out people and a warm start from an exported model file."""
    from streamrestore.data.degrade import DegradationMix
    from streamrestore.data.pack import PackedFaces
    from streamrestore.model.checkpoint import save_restorer

    first = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "a", steps=2))
    first.train(progress=False)
    start = tmp_path / "start.safetensors"
    save_restorer(first.accelerator.unwrap_model(first.model).net, start)
    held = PackedFaces(tiny_pack).identities[0]
    config = tiny_train_config(tiny_pack, shared, tmp_path / "b", steps=2, init_weights=str(start),
                               holdout_identities=[held], val_fraction=0.0,
                               extra_presets=[{"name": "clean", "weight": 1.0}], preset_weight=1.0)
    assert isinstance(config.degradation, DegradationMix)
    trainer = Trainer(config)
    assert held in trainer.val_ids and held not in trainer.train_ids
    for k, v in weights(trainer).items():  # the warm start copied every weight
        torch.testing.assert_close(v, weights(first)[k], msg=k)
    # about half the samples are clean copies of their target
    clean = [bool(torch.equal(s["degraded"], s["target"])) for s in (trainer.dataset[i] for i in range(20))]
    assert 4 <= sum(clean) <= 16
    with pytest.raises(ValueError, match="weight"):
        TrainConfig(extra_presets=[{"name": "clean"}])
    with pytest.raises(InputError, match="holdout"):
        Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "c", holdout_identities=["Nobody"]))


# -- faces cut from whole degraded clips (video_weight) -----------------------------------------

def _video_faces(pack, count: int = 6) -> dict[str, np.ndarray]:
    """Stand-ins for make_video_faces: random crops of the pack's first person; face 1 claims the
    source of one of that person's photos, so that photo may not be its reference."""
    from streamrestore.data.pack import PackedFaces

    faces = PackedFaces(pack)
    person = faces.indices_of(faces.identities[0])
    rng = np.random.default_rng(0)
    r = faces.resolution
    source = np.full(count, -1, np.int64)
    source[1] = faces.source[person[0]]
    return {"degraded": rng.integers(0, 255, (count, r, r, 3), dtype=np.uint8),
            "clean": rng.integers(0, 255, (count, r, r, 3), dtype=np.uint8),
            "landmarks": np.tile(faces.landmarks[person[0]], (count, 1, 1)),
            "identity": np.zeros(count, np.int64), "source": source, "time_s": np.zeros(count, np.float32)}


def test_video_faces_join_the_samples(tiny_pack):
    from streamrestore.data.pack import PackedFaces
    from streamrestore.data.samples import RestorationDataset

    pack = PackedFaces(tiny_pack)
    video = _video_faces(tiny_pack)
    plain = RestorationDataset(pack, preset="moderate", seed=3)
    without = RestorationDataset(pack, preset="moderate", seed=3, video_faces=video, video_weight=0.0)
    for i in range(4):  # weight 0: the samples are what they were
        assert torch.equal(plain[i]["degraded"], without[i]["degraded"])
    data = RestorationDataset(pack, preset="moderate", seed=3, video_faces=video, video_weight=0.5, samples_per_epoch=40)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float() / 255  # noqa: E731
    drawn = 0
    for i in range(40):
        s = data[i]
        if int(s["index"]) >= 0:  # a pack crop, degraded by the preset
            continue
        drawn += 1
        j = next(j for j in range(len(video["clean"]))
                 if torch.equal(s["target"], as_tensor(video["clean"][j][:, ::-1] if s["flipped"] else video["clean"][j])))
        # its own degraded crop, mirrored with the face; references of the same person
        expected = video["degraded"][j][:, ::-1] if s["flipped"] else video["degraded"][j]
        assert torch.equal(s["degraded"], as_tensor(expected))
        assert int(s["identity"]) == 0
        refs = s["ref_indices"][: int(s["ref_count"])].numpy()
        assert len(refs) and (pack.identity[refs] == 0).all()
        if j == 1:  # a photo of the same source is no reference of it
            assert (pack.source[refs] != video["source"][1]).all()
    assert 8 <= drawn <= 32
    with pytest.raises(ValueError, match="video_weight"):
        RestorationDataset(pack, video_faces=video, video_weight=1.0)


def test_video_faces_are_made_once_per_setting(tiny_pack, shared, tmp_path, monkeypatch):
    import streamrestore.train.video_faces as video_faces

    made = []

    def fake(pack, people, settings, **options):
        made.append(settings)
        return _video_faces(tiny_pack)

    monkeypatch.setattr(video_faces, "make_video_faces", fake)
    config = tiny_train_config(tiny_pack, shared, tmp_path / "run", steps=2, video_weight=0.5,
                               video_faces={"frames": 2, "draws": 1})
    trainer = Trainer(config)
    assert made == [video_faces.VideoFaceSettings(frames=2, draws=1)]
    assert trainer.dataset.video_weight == 0.5
    trainer.train(progress=False)
    Trainer(config)  # the same settings: read back from output_dir
    assert len(made) == 1
    Trainer(config.replace(video_faces={"frames": 3, "draws": 1}))  # other settings: made again
    assert len(made) == 2
    with pytest.raises(ValueError, match="unknown settings"):
        config.replace(video_faces={"frame": 2})
    with pytest.raises(ValueError, match="video_weight"):
        config.replace(video_weight=1.0)


@pytest.mark.parametrize("where", ["losses", "update"])
def test_a_stop_signal_keeps_the_steps_done(tiny_pack, shared, tmp_path, monkeypatch, where):
    """SIGTERM (or Ctrl-C) checkpoints the steps done; a signal during the update waits for it,
    and the resumed run ends with the weights of an uninterrupted one."""
    import signal

    from streamrestore.stop_signals import Interrupted, stop_signals_interrupt

    straight = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "a"))
    straight.train(progress=False)

    run = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "b"))  # checkpoint_every 100: none on the way
    if where == "losses":  # during step 4's forward pass: steps 1-3 are kept
        losses = run._losses

        def stopped_losses(batch, generator):
            if run.step == 3:
                signal.raise_signal(signal.SIGTERM)
            return losses(batch, generator)

        monkeypatch.setattr(run, "_losses", stopped_losses)
        kept = 3
    else:  # inside step 4's optimiser update: it completes, and is kept
        step = run.optimizer.step

        def stopped_step(*args, **kwargs):
            if run.step == 3:
                signal.raise_signal(signal.SIGTERM)
            return step(*args, **kwargs)

        monkeypatch.setattr(run.optimizer, "step", stopped_step)
        kept = 4
    with pytest.raises(Interrupted) as stopped, stop_signals_interrupt():
        run.train(progress=False)
    assert run.step == kept
    # what the command line says instead of "the output was not written"
    assert stopped.value.kept == f"checkpoint {tmp_path / 'b/checkpoints' / f'step_{kept:07d}'}; go on with --resume latest"
    assert sorted(p.name for p in (tmp_path / "b/checkpoints").glob("step_*")) == [f"step_{kept:07d}"]
    resumed = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "b"), resume="latest")
    assert resumed.step == kept
    resumed.train(progress=False)
    a, b = weights(straight), weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_throughput_benchmark_measures_loader_update_and_both(tiny_pack, shared, tmp_path):
    # benchmarks/train_throughput.py: where a GPU run's time goes (the lent H200 ran ~160 samples/s
    # while its loader alone made ~1100: the update was the bound)
    from script_utils import load_script

    module = load_script("benchmarks/train_throughput.py")
    table = {"data": str(tiny_pack), "output_dir": str(tmp_path / "never"), "steps": 50, "batch_size": 2,
             "val_fraction": 0.3, "val_every": 0, "identity_weight": 0.0, "model": {"base": "tiny-pixel"}}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(table))
    out = tmp_path / "t.json"
    assert module.main([str(config), "--seconds", "0.2", "--warmup", "1", "--set", "batch_size=3",
                        "--json", str(out), "--profile", str(tmp_path / "p.txt")]) == 0
    rows = json.loads(out.read_text())
    assert [r["mode"] for r in rows] == ["loader", "update", "both"]
    for row in rows:
        assert row["steps"] >= 1 and row["samples_per_s"] == pytest.approx(3 * row["steps_per_s"], rel=0.01)
        assert row["batch_size"] == 3 and row["device"] == "cpu"
    profile = (tmp_path / "p.txt").read_text()
    assert profile.startswith("5 updates, batch 3") and "aten::" in profile
    assert not (tmp_path / "never").exists()  # the measurement's trainer wrote into a temporary folder
    with pytest.raises(SystemExit):
        module.main([str(config), "--modes", "loader,nope"])


def _training_config_files() -> list:
    """The repo's training configs (UNet runs and detail heads), not its other TOML files."""
    import tomllib

    return [p for p in sorted((REPO / "configs").glob("**/*.toml"))
            if {"model", "data", "base_weights"} & set(tomllib.loads(p.read_text()))]


@pytest.mark.parametrize("path", _training_config_files(), ids=lambda p: p.stem)
def test_every_training_config_file_reads(path):
    # a typo in a setting's name is an error naming it: every config in the repo must read cleanly
    import tomllib

    from streamrestore.train.detail_head import load_detail_head_config

    if "base_weights" in tomllib.loads(path.read_text()):
        assert load_detail_head_config(path).steps > 0
    else:
        assert load_train_config(path).steps > 0


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_are_the_datasets_float_samples(tiny_pack, shared, tmp_path, workers):
    """The loader moves uint8 images (a quarter of the bytes) and makes them float on the device:
    its batches are the dataset's float samples, in the sampler's order."""
    trainer = Trainer(tiny_train_config(tiny_pack, shared, tmp_path, num_workers=workers))
    order = StepBatchSampler(trainer.targets, trainer.config.batch_size, trainer.config.steps, seed=trainer.config.seed)
    for indices, batch in zip(order, trainer.dataloader()):
        expected = [trainer.dataset[i] for i in indices]
        for key, value in batch.items():
            assert torch.equal(value, torch.stack([e[key] for e in expected])), key
        assert batch["degraded"].dtype == torch.float32 and 0 <= float(batch["target"].min())
        break
    else:
        pytest.fail("the loader gave no batch")



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_loader_and_update_on_a_gpu(tiny_pack, shared, tmp_path):
    """What only a GPU runs: pinned batches copied without waiting, made float there, and the fused
    AdamW update (also after a resume from a checkpoint made without it)."""
    config = tiny_train_config(tiny_pack, shared, tmp_path, num_workers=1, checkpoint_every=1)
    trainer = Trainer(config)
    assert all(group["fused"] for group in trainer.optimizer.param_groups)
    order = StepBatchSampler(trainer.targets, trainer.config.batch_size, trainer.config.steps, seed=trainer.config.seed)
    for indices, batch in zip(order, trainer.dataloader()):
        assert batch["degraded"].device.type == "cuda" and batch["references"].dtype == torch.float32
        for key in ("degraded", "target", "references"):  # within a float32 rounding of the CPU's division
            expected = torch.stack([trainer.dataset[i][key] for i in indices])
            torch.testing.assert_close(batch[key].cpu(), expected, rtol=0, atol=1e-7)
        parts = trainer.train_step(batch)
        assert torch.isfinite(parts["loss"]).item()
        break
    for group in trainer.optimizer.param_groups:
        group["fused"] = None  # as a checkpoint made on the CPU or before fused AdamW says
    trainer.save_checkpoint()
    resumed = Trainer(config, resume="latest")
    assert all(group["fused"] for group in resumed.optimizer.param_groups)


def test_a_run_keeps_to_its_own_folder_and_settings(tiny_pack, shared, tmp_path):
    """A fresh run where another run's checkpoints are would interleave the two (its new checkpoint
    pruned at once, --resume latest picking the old run); a resume with other run settings would log
    settings it does not use (the saved optimiser keeps its own)."""
    from streamrestore.errors import InputError

    out = tmp_path / "run"
    Trainer(tiny_train_config(tiny_pack, shared, out, checkpoint_every=2)).train(stop_at=2, progress=False)
    with pytest.raises(InputError, match="holds the checkpoints of a run .*--resume latest"):
        Trainer(tiny_train_config(tiny_pack, shared, out, checkpoint_every=2)).train(stop_at=2, progress=False)
    with pytest.raises(InputError, match=r"trained with lr = 0.002, not 1e-06: lr cannot change within a run"):
        Trainer(tiny_train_config(tiny_pack, shared, out, checkpoint_every=2, lr=1e-6), resume="latest")
    with pytest.raises(InputError, match="batch_size cannot change"):
        Trainer(tiny_train_config(tiny_pack, shared, out, checkpoint_every=2, batch_size=2), resume="latest")
    assert Trainer(tiny_train_config(tiny_pack, shared, out, checkpoint_every=2), resume="latest").step == 2


def test_a_diverging_run_stops_before_the_update_that_would_spoil_it(tiny_pack, shared, tmp_path, monkeypatch):
    from streamrestore.errors import InputError

    trainer = Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "run"))
    real = trainer._losses
    monkeypatch.setattr(trainer, "_losses", lambda *a: {**real(*a), "loss": torch.tensor(float("nan"))})
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    with pytest.raises(InputError, match="the training loss is nan at step 1: the run diverged"):
        trainer.train(progress=False)
    assert all(torch.equal(v, before[k]) for k, v in trainer.net.state_dict().items())


@pytest.mark.parametrize("changes, words", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"grad_clip": float("inf")}, "grad_clip must be a finite number"),
    ({"batch_size": 2.5}, "batch_size must be a whole number"),
    ({"min_lr_ratio": -1.0}, "min_lr_ratio must be in"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"betas": (1.5, 0.9)}, "betas must be two numbers"),
])
def test_training_settings_of_the_wrong_kind_are_refused(tmp_path, changes, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**changes)


def test_without_a_terminal_training_says_its_progress_in_log_lines(tiny_pack, shared, tmp_path, monkeypatch, caplog):
    import streamrestore.train.loop as loop

    monkeypatch.setattr(loop, "PROGRESS_LINE_SECONDS", 0.0)  # (30 s apart in a real run)
    with caplog.at_level("INFO", logger="streamrestore.train.loop"):
        Trainer(tiny_train_config(tiny_pack, shared, tmp_path / "run", steps=3)).train(progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert all("loss" in line and "samples/s" in line for line in lines)
