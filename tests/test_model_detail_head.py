"""The detail head: identity when fresh, stored with the model, run by every backend path, and its
training recipe (learns, resumes exactly, exports the base model unchanged plus the head)."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_utils import headed_restorer, random_faces, randomise

from streamrestore.backends import BackendConfig, BackendRestorer, FrameCore, build_backend
from streamrestore.errors import InputError
from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config
from streamrestore.model.checkpoint import read_model_file, save_restorer
from streamrestore.model.config import DetailHeadSettings, RestorerConfig
from streamrestore.model.detail_head import DetailHead
from streamrestore.train.detail_head import (
    DetailHeadTrainConfig,
    export_with_head,
    load_detail_head_config,
    train_detail_head,
)

R = 32
HEAD = DetailHeadSettings(channels=8, blocks=1, factor=2)


def _faces(b, seed=2):
    return random_faces(b, R, seed)


_randomise = randomise


@pytest.fixture(scope="module", params=[HEAD, replace(HEAD, references=True, reference_detail_sigma=1.0),
                                        replace(HEAD, context=4), replace(HEAD, members=2)],
                ids=["plain", "references", "context", "members"])
def headed(request):
    """Every test below runs with a head without and with references (their faces come from the
    caches: tests/test_model_reference_head.py), with a whole-face context, and as two members."""
    return headed_restorer(request.param, "headed")


def test_a_fresh_head_changes_nothing():
    head = DetailHead(HEAD)
    faces, restored = _faces(2, 1), _faces(2, 3)
    assert torch.equal(head(faces, restored), restored)


def test_a_fresh_context_head_changes_nothing():
    head = DetailHead(replace(HEAD, context=4))
    faces, restored = _faces(2, 1), _faces(2, 3)
    assert torch.equal(head(faces, restored), restored)


def test_a_patch_with_its_faces_context_is_refined_as_inside_the_face():
    """Training cuts patches and gives them their whole face's context: inside the patch, away from
    its border (the convolutions' reach), the head then gives what it gives on the whole face."""
    head = DetailHead(replace(HEAD, context=4))
    _randomise(head, seed=5)
    faces, restored = random_faces(2, 64, 1), random_faces(2, 64, 3)
    with torch.no_grad():
        whole = head(faces, restored)
        context = head.context_of(faces, restored)
        patch = head(faces[..., 16:48, 16:48], restored[..., 16:48, 16:48], None, context)
        alone = head(faces[..., 16:48, 16:48], restored[..., 16:48, 16:48])
    torch.testing.assert_close(patch[..., 8:24, 8:24], whole[..., 24:40, 24:40])
    assert not torch.allclose(alone[..., 8:24, 8:24], whole[..., 24:40, 24:40], atol=1e-4)


def test_settings_round_trip_and_are_checked():
    config = tiny_config("pixel", detail_head=HEAD)
    again = RestorerConfig.from_json(config.to_json())
    assert again.detail_head == HEAD and again == config
    assert RestorerConfig.from_json(tiny_config("pixel").to_json()).detail_head is None
    with pytest.raises(ValueError, match="channels"):
        DetailHeadSettings(channels=0)
    with pytest.raises(ValueError, match="context"):
        DetailHeadSettings(context=-1)
    with pytest.raises(ValueError, match="factor 3"):
        tiny_config("pixel", detail_head=DetailHeadSettings(factor=3))


def test_the_head_refines_the_restorers_output(headed):
    faces = _faces(3)
    out = headed.restore(faces, [None] * 3)
    net = headed.net
    with torch.no_grad():
        plain = net.decode(net.denoise(net.encode(faces), headed.fixed_noise(net.config.noise_seed, 3), None))
        refined = net.detail_head(faces, plain)
    assert (out - plain).abs().max() > 1e-3  # the head is on the path
    torch.testing.assert_close(out, refined)


def test_model_file_keeps_the_head(headed, tmp_path):
    path = save_restorer(headed.net, tmp_path / "m.safetensors")
    net = read_model_file(path)
    assert net.config.detail_head == headed.config.detail_head
    again = InstantRestorer(net, device="cpu", dtype=torch.float32)
    faces = _faces(2)
    torch.testing.assert_close(again.restore(faces, [None] * 2), headed.restore(faces, [None] * 2))


@pytest.mark.parametrize("counts", [(2, 0), (0,)])
def test_frame_core_runs_the_head(headed, counts):
    """The compiled backends' core gives the eager restorer's output, head included."""
    g = torch.Generator().manual_seed(5)
    caches = [headed.encode_references(torch.rand(n, 3, R, R, generator=g)) if n else None for n in counts]
    faces = _faces(len(counts))
    want = headed.restore(faces, caches, [3] * len(counts))
    backend = BackendRestorer(headed, "compile")  # nothing compiles: the core runs eagerly here
    key, args = backend.padded_inputs(faces, caches, [3] * len(counts))
    assert (args[-1] is not None) == headed.net.head_sees_references
    with torch.inference_mode():
        got = FrameCore(backend.net, key[2], key[3])(*args)[: len(counts)]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


def test_onnxruntime_runs_the_head(headed, tmp_path):
    g = torch.Generator().manual_seed(6)
    caches = [headed.encode_references(torch.rand(2, 3, R, R, generator=g)), None]
    faces = _faces(2, seed=8)
    backend = build_backend(headed, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path))
    torch.testing.assert_close(backend.restore(faces, caches, [1, 2]), headed.restore(faces, caches, [1, 2]),
                               rtol=1e-4, atol=2e-5)


def test_engine_files_are_keyed_by_the_heads_weights(tmp_path):
    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config("pixel", detail_head=HEAD))
    restorer = InstantRestorer(net, device="cpu", dtype=torch.float32, name="headed")
    backend = BackendRestorer(restorer, "eager", BackendConfig(engine_dir=tmp_path))
    before = backend.engine_path((1, 4, True, False))
    fingerprint = restorer.fingerprint
    _randomise(net.detail_head, seed=7)
    # reference caches do not depend on the head; compiled programs do
    assert restorer.fingerprint == fingerprint
    assert backend.engine_path((1, 4, True, False)) != before


# -- training ---------------------------------------------------------------------------------

def _triples(n=24, side=32, seed=0):
    """Clean faces with fine stripes; degraded = a blurred copy; base = the degraded face itself."""
    rng = np.random.default_rng(seed)
    x = np.arange(side)
    clean = []
    for _ in range(n):
        freq, phase = rng.uniform(0.6, 1.2), rng.uniform(0, 6.3)
        stripes = 0.5 + 0.35 * np.sin(freq * x[None, :] + phase) * np.ones((side, 1))
        clean.append(np.repeat(stripes[..., None], 3, 2) * rng.uniform(0.7, 1.0, 3))
    clean = (np.stack(clean) * 255).astype(np.uint8)
    blurred = clean.astype(np.float32)
    blurred = (blurred + np.roll(blurred, 1, 2) + np.roll(blurred, -1, 2)) / 3
    degraded = blurred.round().astype(np.uint8)
    return {"degraded": degraded, "base": degraded.copy(), "clean": clean}


def _config(tmp_path, **changes):
    base = dict(base_weights=str(tmp_path / "base.safetensors"), unet_config="unused.toml",
                output_dir=str(tmp_path / "run"), steps=60, batch_size=8, patch=16, lr=3e-3,
                channels=8, blocks=1, seed=3, checkpoint_every=20, log_every=20)
    base.update(changes)
    return DetailHeadTrainConfig(**base)


def _l1(head, triples):
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    with torch.no_grad():
        return float((head(t(triples["degraded"]), t(triples["base"])) - t(triples["clean"])).abs().mean())


def test_training_learns_and_a_resumed_run_is_the_same_run(tmp_path):
    triples = _triples()
    config = _config(tmp_path)
    head = train_detail_head(config, triples, log=lambda _: None)
    assert _l1(head, triples) < 0.8 * _l1(DetailHead(config.head), triples)
    # a run stopped after 20 steps and resumed ends with the uninterrupted run's weights
    cut = _config(tmp_path, output_dir=str(tmp_path / "cut"))
    train_detail_head(cut, triples, log=lambda _: None, stop_after=20)
    resumed = train_detail_head(cut, triples, resume=True, log=lambda _: None)
    for (k, a), b in zip(head.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def _brightened_when_marked(n=32, side=32, seed=0):
    """Half the faces carry a bright band along the top, and only those need a brighter face: a
    patch away from the band cannot tell which half it is in, its whole face can."""
    rng = np.random.default_rng(seed)
    degraded = rng.uniform(60, 160, (n, side, side, 3)).astype(np.float32)
    marked = np.arange(n) % 2 == 0
    degraded[marked, :8] = 250
    clean = degraded + 40 * marked[:, None, None, None]
    clean[:, :8] = degraded[:, :8]
    degraded, clean = degraded.round().astype(np.uint8), clean.clip(0, 255).round().astype(np.uint8)
    return {"degraded": degraded, "base": degraded.copy(), "clean": clean}


def test_the_context_learns_what_a_patch_cannot_see(tmp_path):
    triples = _brightened_when_marked()
    plain = train_detail_head(_config(tmp_path, steps=150, lr=1e-2, output_dir=str(tmp_path / "plain")), triples,
                              log=lambda _: None)
    context = train_detail_head(_config(tmp_path, steps=150, lr=1e-2, output_dir=str(tmp_path / "context"), context=4),
                                triples, log=lambda _: None)
    # the plain head can only brighten every face by half (its error stays ~15 levels); the context tells them apart
    assert _l1(context, triples) < 0.5 * _l1(plain, triples)


def test_members_are_heads_of_the_next_seeds_their_changes_averaged(tmp_path):
    triples = _triples()
    lines: list[str] = []
    two = train_detail_head(_config(tmp_path, members=2, output_dir=str(tmp_path / "two")), triples, log=lines.append)
    assert any("member 2/2 (seed 4" in line for line in lines)
    first = train_detail_head(_config(tmp_path, output_dir=str(tmp_path / "first")), triples, log=lambda _: None)
    second = train_detail_head(_config(tmp_path, seed=4, output_dir=str(tmp_path / "second")), triples,
                               log=lambda _: None)
    t = lambda a: torch.from_numpy(a[:4]).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    faces, base = t(triples["degraded"]), t(triples["base"])
    with torch.no_grad():
        mean_change = (first.change(faces, base) + second.change(faces, base)) / 2
        assert not torch.allclose(first.change(faces, base), second.change(faces, base), atol=1e-3)
        torch.testing.assert_close(two(faces, base), (base + mean_change).clamp(0, 1))
    # resumed, the finished members are read back, not trained again
    lines.clear()
    again = train_detail_head(_config(tmp_path, members=2, output_dir=str(tmp_path / "two")), triples, resume=True,
                              log=lines.append)
    assert not any(line.startswith("step") for line in lines)
    for (k, a), b in zip(two.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # stopped inside the second member (80 steps in all: 60 + 20) and resumed: the uninterrupted run's weights
    cut = _config(tmp_path, members=2, output_dir=str(tmp_path / "cut"))
    train_detail_head(cut, triples, log=lambda _: None, stop_after=80)
    assert torch.load(tmp_path / "cut" / "member1" / "head.pt", weights_only=True)["step"] == 20
    resumed = train_detail_head(cut, triples, resume=True, log=lambda _: None)
    for (k, a), b in zip(two.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # one context cannot stand for every member's
    with pytest.raises(ValueError, match="2 members"):
        DetailHead(replace(HEAD, context=4, members=2))(faces, base, None, torch.zeros(4, 28))


def test_a_resumed_head_must_be_of_the_same_seed_and_settings(tmp_path):
    triples = _triples()
    train_detail_head(_config(tmp_path, steps=20), triples, log=lambda _: None)
    with pytest.raises(InputError, match="another run"):
        train_detail_head(_config(tmp_path, steps=20, seed=9), triples, resume=True, log=lambda _: None)
    with pytest.raises(InputError, match="another run"):
        train_detail_head(_config(tmp_path, steps=20, channels=4), triples, resume=True, log=lambda _: None)


def test_export_is_the_base_model_plus_the_head(tmp_path):
    torch.manual_seed(0)
    base = InstantRestoreNet(tiny_config("pixel"))
    with torch.no_grad():
        base.unet.conv_out.weight.normal_(0, 0.02)
    save_restorer(base, tmp_path / "base.safetensors")
    config = _config(tmp_path)
    head = DetailHead(config.head)
    _randomise(head, seed=4)
    net = read_model_file(export_with_head(config, head, tmp_path / "out.safetensors"))
    assert net.config.detail_head == config.head
    assert net.config.replace(detail_head=None) == base.config
    for k, v in base.weights_state_dict().items():
        torch.testing.assert_close(net.weights_state_dict()[k], v.to(torch.float16).float(), msg=k)
    for k, v in head.state_dict().items():
        torch.testing.assert_close(net.detail_head.state_dict()[k], v.to(torch.float16).float(), msg=k)
    # the file records the recipe that made the head (not where its files lay), and a plain save none
    from streamrestore.model.checkpoint import read_model_recipe
    from streamrestore.train.detail_head import head_recipe

    recipe = read_model_recipe(tmp_path / "out.safetensors")
    assert recipe == head_recipe(config) and recipe["detail_head"]["seed"] == 3
    assert "output_dir" not in recipe["detail_head"]
    assert head_recipe(_config(tmp_path, band_weight=1.0, band_sigmas=[0, 2])) != recipe
    assert read_model_recipe(tmp_path / "base.safetensors") is None


@pytest.mark.parametrize("setting", [{"members": 0}, {"context": -1}, {"channels": 0}])
def test_the_heads_settings_are_checked_with_the_config(tmp_path, setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        _config(tmp_path, **setting)


@pytest.mark.parametrize("setting", [{"band_weight": -1.0}, {"band_weight": float("nan")}, {"band_weight": True},
                                     {"band_sigmas": [4.0, 1.5]}, {"band_sigmas": [1.5]}, {"band_sigmas": 2.0},
                                     {"band_sigmas": "15"}, {"band_sigmas": [1.5, float("inf")]}])
def test_the_band_loss_settings_are_checked(tmp_path, setting):
    with pytest.raises(ValueError, match=f"^{next(iter(setting))}"):
        _config(tmp_path, **setting)
    with pytest.raises(ValueError, match="^patch"):  # the coarse blur must fit in a patch
        _config(tmp_path, band_weight=1.0, band_sigmas=[1.0, 3.0], patch=16)


def test_the_band_term_is_in_the_loss_in_proportion_to_its_weight(tmp_path):
    from streamrestore.train.detail_head import _head_loss

    triples = _triples()
    head = DetailHead(_config(tmp_path).head)
    _randomise(head, seed=2)
    with torch.no_grad():
        loss = {w: float(_head_loss(_config(tmp_path, band_weight=w, band_sigmas=[0.5, 2.0]), head, None, triples, 7))
                for w in (0.0, 1.0, 2.5)}
    band = loss[1.0] - loss[0.0]
    assert band > 1e-4  # the head's error has a band, and the loss sees it
    assert loss[2.5] - loss[0.0] == pytest.approx(2.5 * band, rel=1e-4)


def test_the_band_loss_blur_is_a_normalised_gaussian_of_its_sigma():
    from streamrestore.model.losses import gaussian_blur

    impulse = torch.zeros(1, 3, 41, 41)
    impulse[:, :, 20, 20] = 1.0
    blurred = gaussian_blur(impulse, 2.0)[0, 0]
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    x = torch.arange(41, dtype=torch.float32) - 20
    assert float((blurred.sum(0) * x**2).sum()) == pytest.approx(4.0, rel=0.02)  # its variance is sigma squared
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 4.0), flat)  # edges reflected: a flat image stays flat
    assert gaussian_blur(flat, 0.0) is flat


def test_a_band_loss_head_learns_and_is_its_own_run(tmp_path):
    triples = _triples()
    config = _config(tmp_path, band_weight=2.0, band_sigmas=[0.0, 2.0])
    head = train_detail_head(config, triples, log=lambda _: None)
    assert _l1(head, triples) < 0.8 * _l1(DetailHead(config.head), triples)
    # the same seed and head without the band loss is another run: its checkpoint is not taken up
    with pytest.raises(InputError, match="another run"):
        train_detail_head(_config(tmp_path), triples, resume=True, log=lambda _: None)
    # the weight written as an integer (``--set band_weight=2``) is the same run
    again = train_detail_head(_config(tmp_path, band_weight=2, band_sigmas=[0, 2]), triples, resume=True,
                              log=lambda _: None)
    for (k, a), b in zip(head.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def _pair(head, triples):
    """(degraded, base) of ``triples`` as the head takes them, and the head's output on them."""
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    with torch.no_grad():
        return head(t(triples["degraded"]), t(triples["base"]))


def test_a_head_learns_its_teachers_output_and_the_teacher_is_part_of_the_run(tmp_path):
    from streamrestore.train.detail_head import _teacher_head

    torch.manual_seed(0)
    save_restorer(InstantRestoreNet(tiny_config("pixel")), tmp_path / "base.safetensors")
    triples = _triples()
    triples["base"] = np.roll(triples["degraded"], 3, axis=2)  # unlike the degraded face: inputs not interchangeable
    teachers = []
    for seed in (4, 5):  # two heads whose changes are nothing like the way to the clean faces
        head = DetailHead(_config(tmp_path).head)
        _randomise(head, seed=seed)
        teachers.append(export_with_head(_config(tmp_path), head, tmp_path / f"teacher{seed}.safetensors"))
    config = _config(tmp_path, teacher=str(teachers[0]), steps=120)
    student = train_detail_head(config, triples, log=lambda _: None)
    target = _pair(_teacher_head(teachers[0], config)[0], triples)
    clean = torch.from_numpy(triples["clean"]).permute(0, 3, 1, 2).float() / 255
    fresh = _pair(DetailHead(config.head), triples)
    learnt = _pair(student, triples)
    assert float((learnt - target).abs().mean()) < 0.5 * float((fresh - target).abs().mean())
    # it followed the teacher, not the clean faces
    assert float((learnt - target).abs().mean()) < 0.5 * float((learnt - clean).abs().mean())
    # the same teacher resumes the finished run; another teacher, or none, is another run
    again = train_detail_head(config, triples, resume=True, log=lambda _: None)
    for (k, a), b in zip(student.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for other in (str(teachers[1]), ""):
        with pytest.raises(InputError, match="another run"):
            train_detail_head(_config(tmp_path, teacher=other, steps=120), triples, resume=True, log=lambda _: None)
    # its file records what made the teacher, not where the teacher's file lay
    from streamrestore.model.checkpoint import read_model_recipe

    recipe = read_model_recipe(export_with_head(config, student, tmp_path / "student.safetensors"))
    assert recipe["teacher"]["recipe"] == read_model_recipe(teachers[0]) and "teacher" not in recipe["detail_head"]
    assert len(recipe["teacher"]["sha256"]) == 16
    with pytest.raises(InputError, match="teacher .*does not exist"):
        train_detail_head(_config(tmp_path, teacher=str(tmp_path / "missing.safetensors")), triples, log=lambda _: None)
    with pytest.raises(InputError, match="no detail head"):
        train_detail_head(_config(tmp_path, teacher=str(tmp_path / "base.safetensors"),
                                  output_dir=str(tmp_path / "none")), triples, log=lambda _: None)
    with pytest.raises(ValueError, match="teacher and identity_weight"):
        _config(tmp_path, teacher=str(teachers[0]), identity_weight=0.1, patch=32)


def test_config_file_errors_name_the_setting(tmp_path):
    path = tmp_path / "head.toml"
    path.write_text('base_weights = "a"\nunet_config = "b"\noutput_dir = "c"\nchanels = 8\n')
    with pytest.raises(InputError, match="chanels"):
        load_detail_head_config(path)
    path.write_text('base_weights = "a"\nunet_config = "b"\noutput_dir = "c"\npatch = 30\n')
    with pytest.raises(InputError, match="patch"):
        load_detail_head_config(path)
    with pytest.raises(InputError, match="not found"):
        load_detail_head_config(tmp_path / "missing.toml")


def test_set_replaces_settings_of_the_file(tmp_path, capsys):
    from streamrestore.train.detail_head import main

    path = tmp_path / "head.toml"
    path.write_text('base_weights = "a"\nunet_config = "b"\noutput_dir = "c"\nsteps = 10\n')
    config = load_detail_head_config(path, base_weights="runs/x_unet.safetensors", steps=20)
    assert (config.base_weights, config.unet_config, config.steps) == ("runs/x_unet.safetensors", "b", 20)
    assert main([str(path), "--set", "stpes=3"]) == 2  # a misspelt override is refused by name
    assert "stpes" in capsys.readouterr().err
    assert main([str(path), "--set", "steps"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main([str(path), "--torch-threads", "0"]) == 2  # the name the other commands use; refused in one line
    assert capsys.readouterr().err.strip() == "error: --torch-threads must be at least 1, got 0"


def test_the_command_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from streamrestore.train.detail_head import main

    assert main([str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not found" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="min_refs"):
        _config(tmp_path, min_refs=3, max_refs=2)
    # a teacher file that is not there is named before any sample is made, in one line
    config = tmp_path / "head.toml"
    config.write_text(f'base_weights = "{tmp_path / "base.safetensors"}"\nunet_config = "unused.toml"\n'
                      f'output_dir = "{tmp_path / "run"}"\nteacher = "{tmp_path / "gone.safetensors"}"\n')
    assert main([str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: teacher") and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "triples.npz").exists()


# -- video samples (whole-frame damage) --------------------------------------------------------

class _ClipPack:
    """What make_video_triples reads of a training pack: two clips (Ann's, Ben's) and a photo of
    Ann; crops of R px."""

    resolution = R

    def __init__(self):
        from synthetic_faces import aligned_face

        self.source_names = ["clips/ann.mp4", "clips/ben.mp4", "photos/ann.jpg"]
        self.source_kinds = ["video", "video", "image"]
        self.identities = ["Ann", "Ben"]
        self.source = np.array([0, 0, 1, 2])
        self.identity = np.array([0, 0, 1, 0])
        self._images = [aligned_face("ann", R, v) for v in (0, 1)] + [aligned_face("ben", R)] + [aligned_face("ann", R, 2)]

    def indices_of(self, identity):
        return np.flatnonzero(self.identity == self.identities.index(identity) if isinstance(identity, str)
                              else self.identity == identity)

    def image(self, index):
        return self._images[int(index)]


def test_video_samples_are_whole_frame_damage_cut_with_the_clean_alignment(tmp_path, monkeypatch, synthetic_faces):
    import cv2
    from media_utils import make_clip

    import streamrestore.train.config as train_config
    from streamrestore.faces.align import alignment_matrix
    from streamrestore.model.registry import load_model
    from streamrestore.train.detail_head import make_video_triples

    pictures, truth = synthetic_faces.face_frames(12, 192, 160)
    (tmp_path / "data" / "clips").mkdir(parents=True)
    make_clip(tmp_path / "data" / "clips" / "ann.mp4", width=192, height=160, frames=12,
              picture=lambda i: pictures[i], options={"crf": "10"})
    pack = _ClipPack()
    # Ben is a validation person: his clip must not be read (it does not exist on disk)
    monkeypatch.setattr(train_config, "load_train_config", lambda path: None)
    monkeypatch.setattr(train_config, "open_training_pack", lambda config: (pack, ["Ann"], ["Ben"]))
    torch.manual_seed(0)
    base = InstantRestoreNet(tiny_config("pixel"))
    with torch.no_grad():
        base.unet.conv_out.weight.normal_(0, 0.02)
    save_restorer(base, tmp_path / "base.safetensors")
    config = _config(tmp_path, video_frames=3, video_draws=2, video_max_frames=10, shared=str(tmp_path),
                     video_scale=[3.0, 3.0], video_blur=[1.0, 1.0], video_crf=[36, 36])
    triples = make_video_triples(config, log=lambda _: None)
    assert {k: v.shape for k, v in triples.items()} == {k: (6, R, R, 3) for k in ("degraded", "base", "clean")}
    # each clean crop is a frame of the clip cut through the face's true landmarks
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    crops = {}
    for i in range(10):
        crop = cv2.warpAffine(pictures[i], alignment_matrix(truth[i], R), (R, R), flags=cv2.INTER_LINEAR)
        crops[i] = crop.astype(np.float32)
    for clean, degraded, out in zip(triples["clean"], triples["degraded"], triples["base"]):
        distances = sorted(float(np.abs(c - clean).mean()) for c in crops.values())
        assert distances[0] < 8 and distances[0] < 0.75 * distances[1]  # H.264 and the detector's landmarks
        # the degraded crop is the same face, softened by the whole-frame damage
        assert 2.0 < np.abs(degraded.astype(np.float32) - clean).mean() < 20
        # the base is the restorer's output for the degraded crop (here with Ann's crops as references)
        restorer = load_model(tmp_path / "base.safetensors", device="cpu")
        with torch.no_grad():
            plain = restorer.restore(t(degraded), [None])[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(out - plain).mean() < 2 < np.abs(out.astype(np.float32) - degraded).mean()
    # kept in video_cache: a second head (here of the same base) gets the very same samples without
    # degrading a clip again; other settings are made anew
    import streamrestore.train.video_faces as video_faces
    from streamrestore.train.detail_head import main

    cached = DetailHeadTrainConfig(**{**config.__dict__, "video_cache": str(tmp_path / "cache")})
    first = make_video_triples(cached, log=lambda _: None)
    assert len(list((tmp_path / "cache").glob("video_faces_*.npz"))) == 1

    def no_degrading(*args, **kwargs):
        raise AssertionError("the clips were degraded again")

    monkeypatch.setattr(video_faces, "iter_video_faces", no_degrading)
    again = make_video_triples(cached, log=lambda _: None)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])
    np.testing.assert_array_equal(first["clean"], triples["clean"])  # what a run without the cache samples too
    with pytest.raises(AssertionError, match="degraded again"):
        make_video_triples(DetailHeadTrainConfig(**{**cached.__dict__, "seed": 4}), log=lambda _: None)
    head_toml = tmp_path / "head.toml"
    head_toml.write_text('base_weights = "a"\nunet_config = "b"\noutput_dir = "c"\nvideo_frames = 2\n')
    assert main([str(head_toml), "--only-video-faces"]) == 2  # no video_cache to make them into
    assert main([str(head_toml), "--only-video-faces", "--set", "video_frames=0",
                 "--set", f"video_cache='{tmp_path / 'none'}'"]) == 0
    assert not (tmp_path / "none").exists()  # nothing to make
    with pytest.raises(ValueError, match="scale must be"):
        _config(tmp_path, video_scale=[0.5, 2.0])
    with pytest.raises(ValueError, match="video_repeat"):
        _config(tmp_path, video_repeat=0)
    with pytest.raises(ValueError, match="video_frames"):
        _config(tmp_path, references=True, video_frames=4)


@pytest.mark.parametrize("where", ["draw", "update"])
def test_a_stop_signal_keeps_the_heads_steps_done(tmp_path, monkeypatch, where):
    """SIGTERM during a step keeps the steps done (a signal inside the update waits for it), and
    the resumed run ends with the uninterrupted run's weights."""
    import signal

    import streamrestore.train.detail_head as module
    from streamrestore.stop_signals import Interrupted, stop_signals_interrupt

    triples = _triples()
    straight = train_detail_head(_config(tmp_path), triples, log=lambda _: None)
    config = _config(tmp_path, output_dir=str(tmp_path / "cut"))  # checkpoints every 20 steps: none at 7 or 8
    if where == "draw":  # before step 8's update: steps 1-7 are kept
        real = module._head_loss

        def stopped(cfg, head, identity, trip, step, teacher=None):
            if step == 7:
                signal.raise_signal(signal.SIGTERM)
            return real(cfg, head, identity, trip, step, teacher)

        monkeypatch.setattr(module, "_head_loss", stopped)
        kept = 7
    else:  # inside step 8's optimiser update: it completes, and is kept
        real_step, calls = torch.optim.Adam.step, []

        def stopped_step(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 8:
                signal.raise_signal(signal.SIGTERM)
            return real_step(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", stopped_step)
        kept = 8
    lines = []
    with pytest.raises(Interrupted), stop_signals_interrupt():
        train_detail_head(config, triples, log=lines.append)
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut/head.pt", weights_only=True)["step"] == kept
    assert any(f"interrupted at step {kept}" in line for line in lines)
    resumed = train_detail_head(config, triples, resume=True, log=lambda _: None)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
