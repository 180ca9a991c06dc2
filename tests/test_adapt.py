"""Per-identity adaptation: adapted once, cached on disk, reloaded, redone when the photos change."""
import pytest
import torch

from streamrestore.errors import ModelError
from streamrestore.model.adapt import AdaptConfig, AdaptedRestorer, default_cache_dir
from streamrestore.model.config import tiny_config
from streamrestore.model.restorer import InstantRestoreNet, InstantRestorer


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    """Fine-tuning a tiny network runs fastest on one thread."""


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config("pixel", add_noise=False, prediction_type="residual"))
    with torch.no_grad():  # a residual net starts as the identity: give it something to change
        for p in net.unet.conv_out.parameters():
            p.normal_(0, 0.02)
    return InstantRestorer(net, device="cpu")


def _photos(seed: int, count: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, 32, 32, generator=g)


def _restore(restorer, faces, caches):
    with torch.inference_mode():
        return restorer.restore(faces, caches, [7] * len(caches))


def test_adapted_once_then_loaded_from_the_cache(base, tmp_path):
    config = AdaptConfig(part="unet", steps=3, cache_dir=str(tmp_path))
    photos, faces = _photos(1), _photos(9, 2)
    first = AdaptedRestorer(base, config)
    cache = first.encode_references(photos)
    key = first.key(photos)
    assert first.adapt_seconds[key] > 0 and (tmp_path / f"{key}.safetensors").is_file()
    adapted = _restore(first, faces, [cache, cache])
    plain = _restore(base, faces, [base.encode_references(photos)] * 2)
    assert (adapted - plain).abs().mean() > 1e-4  # the weights changed
    # the base restorer is left as it was
    assert torch.equal(_restore(base, faces, [None, None]), _restore(first, faces, [None, None]))

    again = AdaptedRestorer(base, config)
    cache2 = again.encode_references(photos)
    assert again.adapt_seconds[key] == 0.0  # reloaded, not trained again
    torch.testing.assert_close(_restore(again, faces, [cache2, cache2]), adapted)


def test_a_fine_tune_that_cannot_be_kept_still_serves_the_run(base, tmp_path, caplog, monkeypatch):
    """A read-only or full cache folder ended the run with a traceback after the fine-tune (a minute
    or more at the default steps), and every rerun fine-tuned again to die again. The fine-tune serves
    the run; the warning says it will be made again. One that is kept is its owner's only, whatever the
    umask (0600 in a folder made 0700): made from a person's photos, it says on a shared machine whose face
    was worked on (it followed the umask: 0644 under the usual 022). A batch's worker that cannot keep
    another worker's fine-tune makes its own."""
    import logging
    import os
    import stat

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go (as a read-only disk refuses it)")
    photos, faces = _photos(1), _photos(9, 2)
    restorer = AdaptedRestorer(base, AdaptConfig(part="unet", steps=2, cache_dir=str(blocker / "adapted")))
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        cache = restorer.encode_references(photos)
    assert "but cannot keep it in" in caplog.text and "made again in every run" in caplog.text
    adapted = _restore(restorer, faces, [cache, cache])
    kept = AdaptedRestorer(base, AdaptConfig(part="unet", steps=2, cache_dir=str(tmp_path / "ok")))
    umask = os.umask(0o022)  # (the usual one, whatever the test runner's)
    try:
        cache = kept.encode_references(photos)
    finally:
        os.umask(umask)
    torch.testing.assert_close(_restore(kept, faces, [cache, cache]), adapted)  # the same fine-tune
    (file,) = (tmp_path / "ok").glob("*.safetensors")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    # the cache's own adapted/, made 0755 by an older version, is made 0700 (a folder the caller names is theirs)
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "adapted").mkdir(parents=True)
    os.chmod(tmp_path / "cache" / "adapted", 0o755)
    AdaptedRestorer(base, AdaptConfig(part="unet", steps=2)).encode_references(photos)
    assert stat.S_IMODE((tmp_path / "cache" / "adapted").stat().st_mode) == 0o700
    # on a fresh account ~/.cache is made too, 0700 as XDG asks (mkdir -p made it and the cache 0755)
    from streamrestore.cache_dir import ROOT_VARIABLES

    for name in (*ROOT_VARIABLES, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    umask = os.umask(0o022)
    try:
        AdaptedRestorer(base, AdaptConfig(part="unet", steps=2)).encode_references(photos)
    finally:
        os.umask(umask)
    for made in (".cache", ".cache/streamrestore", ".cache/streamrestore/adapted"):
        assert stat.S_IMODE((tmp_path / "home" / made).stat().st_mode) == 0o700, made
    from streamrestore.model.adapt import store_adapted_weights

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        assert store_adapted_weights(kept.adapted_weights(), AdaptConfig(part="unet", steps=2,
                                                                         cache_dir=str(blocker / "adapted"))) == 0
    assert "this worker makes its own" in caplog.text


def test_new_photos_or_settings_adapt_again(base, tmp_path):
    config = AdaptConfig(part="unet", steps=2, cache_dir=str(tmp_path))
    restorer = AdaptedRestorer(base, config)
    photos = _photos(2)
    restorer.encode_references(photos)
    changed = photos.clone()
    changed[0, :, :4, :4] = 0.0  # one photo edited
    assert restorer.key(changed) != restorer.key(photos)
    restorer.encode_references(changed)
    assert restorer.adapt_seconds[restorer.key(changed)] > 0
    longer = AdaptedRestorer(base, AdaptConfig(part="unet", steps=3, cache_dir=str(tmp_path)))
    assert longer.key(photos) != restorer.key(photos)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    # another thread count sums the fine-tune otherwise: its own (one key gave two commands' bytes by which run
    # had filled the cache)
    from streamrestore.threads import torch_threads

    with torch_threads(2):
        assert restorer.key(photos) != restorer.key(changed) and restorer.key(photos) not in restorer.adapt_seconds


def test_blend_reuses_the_cached_fine_tune_and_interpolates_the_weights(base, tmp_path):
    photos = _photos(10)
    full = AdaptedRestorer(base, AdaptConfig(part="unet", steps=3, blend=1.0, cache_dir=str(tmp_path)))
    full.encode_references(photos)
    half = AdaptedRestorer(base, AdaptConfig(part="unet", steps=3, blend=0.5, cache_dir=str(tmp_path)))
    none = AdaptedRestorer(base, AdaptConfig(part="unet", steps=3, blend=0.0, cache_dir=str(tmp_path)))
    key = full.key(photos)
    assert half.key(photos) == key and none.key(photos) == key  # one fine-tune serves every blend
    half.encode_references(photos)
    none.encode_references(photos)
    assert half.adapt_seconds[key] == 0.0 and none.adapt_seconds[key] == 0.0
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    base_w = base.net.unet.state_dict()
    full_w, half_w, none_w = (r._adapted[key].net.unet.state_dict() for r in (full, half, none))
    moved = [k for k in base_w if base_w[k].is_floating_point() and not torch.equal(full_w[k], base_w[k])]
    assert moved  # the fine-tune changed weights, and the blends sit where they should
    for k in moved:
        torch.testing.assert_close(half_w[k], (base_w[k] + full_w[k]) / 2)
        torch.testing.assert_close(none_w[k], base_w[k])
    faces = _photos(11, 2)
    cache = none.encode_references(photos)
    torch.testing.assert_close(_restore(none, faces, [cache, cache]),
                               _restore(base, faces, [base.encode_references(photos)] * 2))


@pytest.mark.parametrize("blend", [-0.1, 1.5, float("nan")])
def test_blend_out_of_range_is_refused(blend):
    with pytest.raises(ValueError, match="blend"):
        AdaptConfig(blend=blend)


def test_a_damaged_cache_file_is_rebuilt(base, tmp_path):
    config = AdaptConfig(part="unet", steps=1, cache_dir=str(tmp_path))
    photos = _photos(3)
    key = AdaptedRestorer(base, config).key(photos)
    (tmp_path / f"{key}.safetensors").write_bytes(b"not a safetensors file")
    restorer = AdaptedRestorer(base, config)
    restorer.encode_references(photos)
    assert restorer.adapt_seconds[key] > 0


@pytest.mark.parametrize("count", [1, 2])
def test_one_or_two_photos_are_not_adapted(base, tmp_path, caplog, count):
    restorer = AdaptedRestorer(base, AdaptConfig(part="unet", steps=1, cache_dir=str(tmp_path)))
    photos = _photos(4, count)
    with caplog.at_level("WARNING", logger="streamrestore.model.adapt"):
        cache = restorer.encode_references(photos)
        restorer.encode_references(photos)  # a second person with too few photos: no second warning
    assert not restorer.adapt_seconds and not list(tmp_path.iterdir())
    assert f"{count} reference photo(s)" in caplog.text and "at least 3" in caplog.text
    assert caplog.text.count("reference photo(s)") == 1
    faces = _photos(5, 1)
    assert torch.equal(_restore(restorer, faces, [cache]), _restore(base, faces, [base.encode_references(photos)]))


def test_a_batch_of_two_people_restores_like_each_alone(base, tmp_path):
    restorer = AdaptedRestorer(base, AdaptConfig(part="unet", steps=2, cache_dir=str(tmp_path)))
    a, b = restorer.encode_references(_photos(6)), restorer.encode_references(_photos(7))
    faces = _photos(8, 3)
    together = _restore(restorer, faces, [a, b, None])
    torch.testing.assert_close(together[0:1], _restore(restorer, faces[0:1], [a]))
    torch.testing.assert_close(together[1:2], _restore(restorer, faces[1:2], [b]))
    torch.testing.assert_close(together[2:3], _restore(base, faces[2:3], [None]))


def test_models_that_cannot_be_adapted(tmp_path):
    lora = InstantRestorer(InstantRestoreNet(tiny_config("vae")), device="cpu")
    with pytest.raises(ModelError, match="lite"):
        AdaptedRestorer(lora, AdaptConfig(part="unet", steps=1, cache_dir=str(tmp_path))).encode_references(_photos(1))
    with pytest.raises(ModelError, match="no network to fine-tune"):
        AdaptedRestorer(object())
    with pytest.raises(ValueError, match="steps"):
        AdaptConfig(part="unet", steps=0)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "adapted"
    monkeypatch.delenv("STREAMRESTORE_CACHE")
    monkeypatch.delenv("STREAMRESTORE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "streamrestore" / "adapted"


def test_cli_rejects_bad_adapt_steps(capsys):
    from streamrestore.cli import main

    assert main(["in.mp4", "--adapt", "--adapt-steps", "0"]) == 2
    assert "--adapt-steps" in capsys.readouterr().err


def test_cli_rejects_a_bad_adapt_blend_and_passes_a_good_one(capsys):
    import argparse

    from streamrestore.cli import main
    from streamrestore.cli.options import adapt_from_args

    assert main(["in.mp4", "--adapt", "--adapt-blend", "1.5"]) == 2
    assert "--adapt-blend" in capsys.readouterr().err
    args = argparse.Namespace(adapt=True, adapt_part=None, adapt_steps=None, adapt_blend=0.25)
    assert adapt_from_args(args) == AdaptConfig(blend=0.25)
    assert adapt_from_args(argparse.Namespace(adapt=False, adapt_part=None, adapt_steps=None, adapt_blend=0.5)) is None


def test_cli_warns_about_adapt_settings_that_do_nothing(caplog):
    import argparse

    from streamrestore.cli.options import adapt_from_args

    def warnings(has_refs=True, **given):
        caplog.clear()
        fields = {"adapt": False, "adapt_part": None, "adapt_steps": None, "adapt_blend": None, **given}
        with caplog.at_level("WARNING", logger="streamrestore"):
            adapt_from_args(argparse.Namespace(**fields), has_refs=has_refs)
        return [r.getMessage() for r in caplog.records]

    assert warnings() == [] and warnings(adapt=True, adapt_steps=50) == []
    assert warnings(adapt_steps=50) == ["--adapt-steps ignored: it applies only with --adapt"]
    assert warnings(adapt_steps=50, adapt_blend=0.5) == [
        "--adapt-steps, --adapt-blend ignored: they apply only with --adapt"]
    assert warnings(has_refs=False, adapt=True) == [
        "--adapt ignored: it fine-tunes the model on reference photos, and no --refs were given"]
    assert warnings(has_refs=False) == []


# --- the detail head alone (part="head") ---------------------------------------------------------

@pytest.fixture(scope="module")
def with_head(base):
    """The ``base`` network with a fresh detail head (zero output layer: it starts as the identity)."""
    from streamrestore.model.config import DetailHeadSettings

    torch.manual_seed(1)
    net = InstantRestoreNet(base.net.config.replace(detail_head=DetailHeadSettings(channels=8, blocks=1)))
    with torch.no_grad():
        for name, value in base.net.weights_state_dict().items():
            net.weights_state_dict()[name].copy_(value)
    return InstantRestorer(net, device="cpu")


def _uint8(faces: torch.Tensor):
    return (faces.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype("uint8")


def test_a_head_adapted_learns_the_photos_and_leaves_the_unet_alone(with_head):
    import numpy as np

    from streamrestore.model.adapt import _MIXES, _pairs, adapt_weights

    net = with_head.net
    unet_before = {k: v.clone() for k, v in net.unet.state_dict().items()}
    head_before = {k: v.clone() for k, v in net.detail_head.state_dict().items()}
    photos = _uint8(_photos(12, 4))
    config = AdaptConfig(part="head", steps=40, pairs=8, lr=3e-3)
    state = adapt_weights(net, photos, config)
    assert set(state) == set(head_before)  # the head's weights, nothing else
    assert all(torch.equal(v, unet_before[k]) for k, v in net.unet.state_dict().items())
    assert all(torch.equal(v, head_before[k]) for k, v in net.detail_head.state_dict().items())  # a copy was trained
    torch.testing.assert_close(adapt_weights(net, photos, config), state)  # the same photos, the same weights

    # on the very pairs it learnt from (the same seed draws them), the adapted head is closer to the photos
    degraded, targets, references = _pairs(photos, np.random.default_rng(config.seed), config.pairs, 2, _MIXES["head"])
    unet_only = InstantRestoreNet(net.config.replace(detail_head=None))
    with torch.no_grad():
        for name, value in unet_only.weights_state_dict().items():
            value.copy_(net.weights_state_dict()[name])
    plain = InstantRestorer(unet_only, device="cpu")
    with torch.inference_mode():
        restored = torch.cat([plain.restore(degraded[i:i + 1], [plain.encode_references(references[i])])
                              for i in range(len(degraded))])
    adapted_head = InstantRestoreNet(net.config).detail_head
    adapted_head.load_state_dict(state)
    with torch.no_grad():
        before = (net.detail_head(degraded, restored) - targets).abs().mean()
        after = (adapted_head(degraded, restored) - targets).abs().mean()
    assert after < before - 1e-3


def test_a_head_adaptation_is_cached_and_blended_apart_from_the_unets(with_head, tmp_path):
    photos, faces = _photos(13, 3), _photos(14, 2)
    head = AdaptedRestorer(with_head, AdaptConfig(part="head", steps=5, pairs=4, lr=3e-3, cache_dir=str(tmp_path)))
    unet = AdaptedRestorer(with_head, AdaptConfig(part="unet", steps=1, cache_dir=str(tmp_path)))
    assert head.key(photos) != unet.key(photos)  # the two fine-tunes never share a cache file
    cache = head.encode_references(photos)
    key = head.key(photos)
    assert head.adapt_seconds[key] > 0 and (tmp_path / f"{key}.safetensors").is_file()
    adapted = head._adapted[key].net
    for name, value in with_head.net.unet.state_dict().items():  # only the head differs from the base
        assert torch.equal(adapted.unet.state_dict()[name], value)
    assert any(not torch.equal(v, with_head.net.detail_head.state_dict()[k])
               for k, v in adapted.detail_head.state_dict().items())
    base_cache = with_head.encode_references(photos)
    plain = _restore(with_head, faces, [base_cache] * 2)
    assert (_restore(head, faces, [cache, cache]) - plain).abs().mean() > 1e-5
    # what the pipeline passes for a face whose photos do not match: the same photos, unadapted
    torch.testing.assert_close(_restore(head, faces, [head.unadapted(cache)] * 2), plain)
    assert head.unadapted(base_cache) is base_cache
    again = AdaptedRestorer(with_head, AdaptConfig(part="head", steps=5, pairs=4, lr=3e-3, blend=0.0,
                                                   cache_dir=str(tmp_path)))
    cache = again.encode_references(photos)
    assert again.adapt_seconds[key] == 0.0  # the cached fine-tune, blended to nothing of it
    torch.testing.assert_close(_restore(again, faces, [cache, cache]), plain)


def test_a_model_without_a_head_has_no_head_to_adapt(base, tmp_path):
    from streamrestore.model.adapt import adapt_weights

    with pytest.raises(ModelError, match="no detail head"):
        AdaptedRestorer(base, AdaptConfig(part="head", cache_dir=str(tmp_path)))
    with pytest.raises(ModelError, match="no detail head"):
        adapt_weights(base.net, _uint8(_photos(15)), AdaptConfig(part="head"))
    with pytest.raises(ValueError, match="part"):
        AdaptConfig(part="vae")


def test_each_part_has_its_own_defaults_and_the_unets_cache_key_is_kept():
    unet = AdaptConfig(part="unet")
    assert (unet.steps, unet.lr, unet.blend) == (100, 5e-5, 0.5)
    head = AdaptConfig()
    assert (head.part, head.steps, head.lr, head.blend) == ("head", 300, 2e-4, 1.0)
    assert AdaptConfig(part="head", steps=7, blend=0.3).steps == 7
    # a UNet fine-tune cached before heads could be adapted keeps its key
    assert unet.key_fields() == {"steps": 100, "batch_size": 4, "lr": 5e-5, "references_per_sample": 2,
                                          "seed": 0}
    assert head.key_fields()["part"] == "head"


def test_a_heads_key_follows_its_pairs_damage_and_the_unets_does_not(with_head, tmp_path, monkeypatch):
    """A preset of the head's mix re-tuned in place adapts again: the key holds the presets' settings, not only
    their names. The UNet's fine-tune keeps the key it always had."""
    from dataclasses import replace

    import streamrestore.data.degrade as degrade

    photos = _photos(15, 3)
    head = AdaptedRestorer(with_head, AdaptConfig(part="head", cache_dir=str(tmp_path)))
    unet = AdaptedRestorer(with_head, AdaptConfig(part="unet", cache_dir=str(tmp_path)))
    head_key, unet_key = head.key(photos), unet.key(photos)
    preset = degrade.PRESETS["video_upload_any_size"]
    monkeypatch.setitem(degrade.PRESETS, "video_upload_any_size", replace(preset, face_scale=(0.2, 1.0)))
    assert head.key(photos) != head_key and unet.key(photos) == unet_key
    monkeypatch.setitem(degrade.PRESETS, "video_upload_any_size", preset)
    assert head.key(photos) == head_key


def test_cli_adapt_part(capsys):
    import argparse

    from streamrestore.cli import main
    from streamrestore.cli.options import adapt_from_args

    args = argparse.Namespace(adapt=True, adapt_part="head", adapt_steps=None, adapt_blend=None)
    assert adapt_from_args(args) == AdaptConfig(part="head")
    with pytest.raises(SystemExit):
        main(["in.mp4", "--adapt", "--adapt-part", "vae"])
    assert "--adapt-part" in capsys.readouterr().err


@pytest.mark.parametrize("part", ["head", "unet"])
def test_served_by_onnxruntime_restores_as_the_eager_networks(with_head, tmp_path, monkeypatch, part):
    """Served by ONNX Runtime: each adapted copy (and the base, for faces of unadapted people) is
    exported and run by it, with the eager copies' outputs; the fine-tune is the same."""
    from streamrestore.backends import BackendRestorer, per_person_backend

    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))  # the exported programs land here
    config = AdaptConfig(part=part, steps=3, cache_dir=str(tmp_path / "adapted"))
    eager = AdaptedRestorer(with_head, config)
    served = AdaptedRestorer(with_head, config, serve=per_person_backend(with_head, "onnxruntime"))
    photos, faces = _photos(21, 3), _photos(22, 2)
    eager_cache, served_cache = eager.encode_references(photos), served.encode_references(photos)
    assert served.adapt_seconds[served.key(photos)] == 0.0  # the eager one's fine-tune, loaded
    assert isinstance(served._adapted[served.key(photos)], BackendRestorer)
    for caches in ([eager_cache, None], [eager.unadapted(eager_cache)] * 2):
        served_caches = [served_cache if c is eager_cache else None if c is None else served.unadapted(served_cache)
                         for c in caches]
        torch.testing.assert_close(_restore(served, faces, served_caches), _restore(eager, faces, caches),
                                   rtol=1e-4, atol=2e-5)
    adapted = _restore(served, faces, [served_cache] * 2)
    assert (adapted - _restore(served, faces, [served.unadapted(served_cache)] * 2)).abs().mean() > 1e-5
    # a program of the person's fine-tune is its owner's only (it holds the fine-tune), the base's as the umask says
    import os
    import stat

    umask = os.umask(0)  # (read by setting it)
    os.umask(umask)
    programs = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "cache").rglob("*.onnx")}
    personal = {name: mode for name, mode in programs.items() if "+adapt-" in name}
    assert personal and set(personal.values()) == {0o600}
    assert len(programs) > len(personal) and {mode for name, mode in programs.items() if name not in personal} == \
        {0o666 & ~umask}


def test_a_compiling_backend_serves_adapted_copies_eagerly(with_head, tmp_path, monkeypatch):
    import streamrestore.backends.core as core

    monkeypatch.setattr(core, "select_backend", lambda requested, device, model_bytes=None: "tensorrt")
    serve = core.per_person_backend(with_head, "auto")
    assert serve is None
    restorer = AdaptedRestorer(with_head, AdaptConfig(steps=2, cache_dir=str(tmp_path)), serve=serve)
    photos = _photos(23, 3)
    restorer.encode_references(photos)
    # the eager networks themselves, for the base and the adapted copy alike
    assert restorer._served_base is with_head
    assert isinstance(restorer._adapted[restorer.key(photos)], InstantRestorer)


def test_auto_falls_back_to_eager_when_the_export_fails(with_head, tmp_path, monkeypatch):
    """As for the plain model: with ``auto`` a network ONNX cannot take still restores, eagerly."""
    from streamrestore.backends import BackendRestorer, per_person_backend

    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))

    def fail(self, *args, **kwargs):
        raise ModelError("cannot export this network")

    monkeypatch.setattr(BackendRestorer, "_restore_padded", fail)
    config = AdaptConfig(steps=2, cache_dir=str(tmp_path / "adapted"))
    served = AdaptedRestorer(with_head, config, serve=per_person_backend(with_head, "auto"))
    photos, faces = _photos(24, 3), _photos(25, 2)
    cache = served.encode_references(photos)
    eager = AdaptedRestorer(with_head, config)
    torch.testing.assert_close(_restore(served, faces, [cache] * 2),
                               _restore(eager, faces, [eager.encode_references(photos)] * 2))
    with pytest.raises(ModelError):  # named explicitly, it is not replaced behind the user's back
        _restore(AdaptedRestorer(with_head, config, serve=per_person_backend(with_head, "onnxruntime")), faces,
                 [None, None])


@pytest.mark.parametrize("part", ["head", "unet"])
def test_a_fine_tune_says_how_far_it_is(with_head, tmp_path, monkeypatch, caplog, part):
    """A minute per person: progress lines (steps done, time left) while it runs, none after the
    last step."""
    import logging

    import streamrestore.model.adapt as adapt

    monkeypatch.setattr(adapt, "_PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="streamrestore.model.adapt"):
        AdaptedRestorer(with_head, AdaptConfig(part=part, steps=3, cache_dir=str(tmp_path))).encode_references(
            _photos(26, 3))
    what = "head" if part == "head" else "UNet"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"adapting the {what}:")]
    assert [line.split(" s left")[0].rsplit("about", 1)[0] for line in lines] == [
        f"adapting the {what}: 1 of 3 steps, ", f"adapting the {what}: 2 of 3 steps, "]


def test_fine_tunes_made_elsewhere_are_loaded_not_made_again(base, tmp_path):
    """A batch's first worker adapts; the others get its weights (``adapted_weights``) into their own
    cache folders (``store_adapted_weights``) and load them: same faces, no fine-tune of their own."""
    from streamrestore.model.adapt import store_adapted_weights

    photos, faces = _photos(11), _photos(12, 2)
    here = AdaptedRestorer(base, AdaptConfig(part="unet", steps=2, cache_dir=str(tmp_path / "here")))
    cache = here.encode_references(photos)
    key = here.key(photos)
    assert here.key_of(cache) == key and here.key_of(base.encode_references(photos)) is None
    weights = here.adapted_weights()
    assert list(weights) == [key]

    elsewhere = AdaptConfig(part="unet", steps=2, blend=0.5, cache_dir=str(tmp_path / "there"))
    assert store_adapted_weights(weights, elsewhere) == 1
    assert store_adapted_weights(weights, elsewhere) == 0  # already there: left as it is
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == [f"{key}.safetensors"]  # no temporary left
    there = AdaptedRestorer(base, elsewhere)
    cache_there = there.encode_references(photos)
    assert there.adapt_seconds[key] == 0.0  # loaded
    # the cached weights are the fine-tune before its blend: the other worker's blend applies there
    half = AdaptedRestorer(base, AdaptConfig(part="unet", steps=2, blend=0.5, cache_dir=str(tmp_path / "here")))
    torch.testing.assert_close(_restore(there, faces, [cache_there] * 2),
                               _restore(half, faces, [half.encode_references(photos)] * 2))
