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
    config = AdaptConfig(steps=3, cache_dir=str(tmp_path))
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


def test_new_photos_or_settings_adapt_again(base, tmp_path):
    config = AdaptConfig(steps=2, cache_dir=str(tmp_path))
    restorer = AdaptedRestorer(base, config)
    photos = _photos(2)
    restorer.encode_references(photos)
    changed = photos.clone()
    changed[0, :, :4, :4] = 0.0  # one photo edited
    assert restorer.key(changed) != restorer.key(photos)
    restorer.encode_references(changed)
    assert restorer.adapt_seconds[restorer.key(changed)] > 0
    longer = AdaptedRestorer(base, AdaptConfig(steps=3, cache_dir=str(tmp_path)))
    assert longer.key(photos) != restorer.key(photos)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_blend_reuses_the_cached_fine_tune_and_interpolates_the_weights(base, tmp_path):
    photos = _photos(10)
    full = AdaptedRestorer(base, AdaptConfig(steps=3, blend=1.0, cache_dir=str(tmp_path)))
    full.encode_references(photos)
    half = AdaptedRestorer(base, AdaptConfig(steps=3, blend=0.5, cache_dir=str(tmp_path)))
    none = AdaptedRestorer(base, AdaptConfig(steps=3, blend=0.0, cache_dir=str(tmp_path)))
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
    config = AdaptConfig(steps=1, cache_dir=str(tmp_path))
    photos = _photos(3)
    key = AdaptedRestorer(base, config).key(photos)
    (tmp_path / f"{key}.safetensors").write_bytes(b"not a safetensors file")
    restorer = AdaptedRestorer(base, config)
    restorer.encode_references(photos)
    assert restorer.adapt_seconds[key] > 0


@pytest.mark.parametrize("count", [1, 2])
def test_one_or_two_photos_are_not_adapted(base, tmp_path, caplog, count):
    restorer = AdaptedRestorer(base, AdaptConfig(steps=1, cache_dir=str(tmp_path)))
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
    restorer = AdaptedRestorer(base, AdaptConfig(steps=2, cache_dir=str(tmp_path)))
    a, b = restorer.encode_references(_photos(6)), restorer.encode_references(_photos(7))
    faces = _photos(8, 3)
    together = _restore(restorer, faces, [a, b, None])
    torch.testing.assert_close(together[0:1], _restore(restorer, faces[0:1], [a]))
    torch.testing.assert_close(together[1:2], _restore(restorer, faces[1:2], [b]))
    torch.testing.assert_close(together[2:3], _restore(base, faces[2:3], [None]))


def test_models_that_cannot_be_adapted(tmp_path):
    lora = InstantRestorer(InstantRestoreNet(tiny_config("vae")), device="cpu")
    with pytest.raises(ModelError, match="lite"):
        AdaptedRestorer(lora, AdaptConfig(steps=1, cache_dir=str(tmp_path))).encode_references(_photos(1))
    with pytest.raises(ModelError, match="eager"):
        AdaptedRestorer(object())
    with pytest.raises(ValueError, match="steps"):
        AdaptConfig(steps=0)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "adapted"
    monkeypatch.delenv("STREAMRESTORE_CACHE")
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
    args = argparse.Namespace(adapt=True, adapt_steps=None, adapt_blend=0.25)
    assert adapt_from_args(args) == AdaptConfig(blend=0.25)
    assert adapt_from_args(argparse.Namespace(adapt=False, adapt_steps=None, adapt_blend=0.5)) is None
