"""A detail head that sees references: each identity's mean aligned reference face is kept in its
cache, fed to the head on the eager and training paths (the compiled core and ONNX Runtime: the
detail head's tests run with such a head too), a face without references sees itself there, and
the recipe trains it to use them."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from model_utils import headed_restorer, random_faces, randomise

from streamrestore.errors import InputError
from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config
from streamrestore.model.cache import ReferenceCache
from streamrestore.model.config import DetailHeadSettings, RestorerConfig
from streamrestore.model.detail_head import DetailHead
from streamrestore.model.packing import pack_face_means
from streamrestore.model.training import TrainingModel
from streamrestore.train.detail_head import DetailHeadTrainConfig, _mean_reference, train_detail_head

R = 32
HEAD = DetailHeadSettings(channels=8, blocks=1, factor=2, references=True)


def _faces(b, seed=2):
    return random_faces(b, R, seed)


_randomise = randomise


@pytest.fixture(scope="module")
def headed():
    return headed_restorer(HEAD, "refhead")


def _plain(restorer, faces, caches):
    """The UNet's decoded output, before the head."""
    from streamrestore.model.packing import pack_caches

    net = restorer.net
    with torch.no_grad():
        refs = pack_caches(net, caches, restorer.device, restorer.dtype)
        noise = restorer.fixed_noise(net.config.noise_seed, faces.shape[0])
        return net.decode(net.denoise(net.encode(faces), noise, refs))


def test_settings_round_trip_and_a_fresh_head_changes_nothing():
    config = tiny_config("pixel", detail_head=HEAD)
    assert RestorerConfig.from_json(config.to_json()).detail_head.references is True
    # a model file written before the setting existed reads as a head without references
    old = config.to_json().replace(', "references": true', "")
    assert '"references"' not in old and RestorerConfig.from_json(old).detail_head.references is False
    head = DetailHead(HEAD)
    faces, restored, refs = _faces(2, 1), _faces(2, 3), _faces(2, 4)
    assert torch.equal(head(faces, restored, refs), restored)


def test_no_references_means_the_face_itself():
    head = DetailHead(HEAD)
    _randomise(head, seed=1)
    faces, restored = _faces(2, 1), _faces(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(head(faces, restored, None), head(faces, restored, faces), rtol=0, atol=0)
        assert (head(faces, restored, _faces(2, 4)) - head(faces, restored, None)).abs().max() > 1e-3


def test_caches_keep_the_mean_reference_face(headed, tmp_path):
    refs = _faces(3, 5)
    cache = headed.encode_references(refs)
    torch.testing.assert_close(cache.face_mean, refs.mean(0))
    again = ReferenceCache.load(cache.save(tmp_path / "c.safetensors"))
    torch.testing.assert_close(again.face_mean, cache.face_mean, rtol=0, atol=0)
    assert again.nbytes == cache.nbytes
    # a model whose head takes no references keeps no face in its caches
    plain = InstantRestorer(InstantRestoreNet(tiny_config("pixel")), device="cpu", dtype=torch.float32)
    assert plain.encode_references(refs).face_mean is None


def test_pack_face_means_gives_each_face_its_identity_or_itself(headed):
    a, b = headed.encode_references(_faces(2, 6)), headed.encode_references(_faces(4, 7))
    faces = _faces(3)
    packed = pack_face_means([a, None, b], faces)
    torch.testing.assert_close(packed, torch.stack([a.face_mean, faces[1], b.face_mean]), rtol=0, atol=0)
    torch.testing.assert_close(pack_face_means([a, a, a], faces), a.face_mean.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match="caches"):
        pack_face_means([a], faces)


def test_restore_feeds_each_face_its_references_mean(headed):
    a, b = headed.encode_references(_faces(2, 6)), headed.encode_references(_faces(4, 7))
    faces = _faces(3)
    caches = [a, None, b]
    out = headed.restore(faces, caches)
    plain = _plain(headed, faces, caches)
    with torch.no_grad():
        want = headed.net.detail_head(faces, plain, torch.stack([a.face_mean, faces[1], b.face_mean]))
        without = headed.net.detail_head(faces, plain, faces)
    torch.testing.assert_close(out, want)
    assert (out[0] - without[0]).abs().max() > 1e-3  # the references' faces are on the path
    # a face's output does not depend on the others in the batch
    torch.testing.assert_close(out[2:], headed.restore(faces[2:], [b]), rtol=1e-5, atol=2e-6)


def test_training_passes_the_mean_of_the_real_references(headed):
    net = headed.net
    model = TrainingModel(net, reference_grad=False)
    degraded = _faces(2, 9)
    references = torch.stack([_faces(3, 10), _faces(3, 11)])
    ref_mask = torch.tensor([[True, True, False], [False, False, False]])
    noise = headed.fixed_noise(0, 2)
    ref_noise = headed.fixed_noise(1, 1)
    with torch.no_grad():
        got, _ = model(degraded, references, ref_mask, noise, ref_noise)
        # the same pass without the head, then the head with face 0's two references and face 1 itself
        head, net.detail_head = net.detail_head, None
        try:
            plain, _ = model(degraded, references, ref_mask, noise, ref_noise)
        finally:
            net.detail_head = head
        want = head(degraded, plain, torch.stack([references[0, :2].mean(0), degraded[1]]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


# -- the recipe -------------------------------------------------------------------------------

def _triples(n=24, side=32, seed=0):
    """Clean faces with fine stripes; the face is blurred away in the degraded copy and only the
    references (the clean face, a little darker) show them."""
    rng = np.random.default_rng(seed)
    x = np.arange(side)
    clean = []
    for _ in range(n):
        freq, phase = rng.uniform(0.9, 1.3), rng.uniform(0, 6.3)
        stripes = 0.5 + 0.35 * np.sin(freq * x[None, :] + phase) * np.ones((side, 1))
        clean.append(np.repeat(stripes[..., None], 3, 2) * rng.uniform(0.7, 1.0, 3))
    clean = (np.stack(clean) * 255).astype(np.uint8)
    blurred = clean.astype(np.float32)
    for _ in range(3):
        blurred = (blurred + np.roll(blurred, 1, 2) + np.roll(blurred, -1, 2)) / 3
    degraded = blurred.round().astype(np.uint8)
    reference = (clean * 0.9).astype(np.uint8)
    return {"degraded": degraded, "base": degraded.copy(), "clean": clean, "reference": reference}


def _config(tmp_path, **changes):
    base = dict(base_weights="unused", unet_config="unused.toml", output_dir=str(tmp_path / "run"), steps=150,
                batch_size=8, patch=16, lr=3e-3, channels=8, blocks=1, seed=3, checkpoint_every=50,
                log_every=50, references=True, reference_dropout=0.2)
    base.update(changes)
    return DetailHeadTrainConfig(**base)


def _l1(head, triples, with_refs=True):
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    with torch.no_grad():
        refs = t(triples["reference"]) if with_refs else None
        return float((head(t(triples["degraded"]), t(triples["base"]), refs) - t(triples["clean"])).abs().mean())


def test_the_recipe_teaches_the_head_to_use_references(tmp_path):
    triples = _triples()
    with_refs = train_detail_head(_config(tmp_path), triples, log=lambda _: None)
    without = train_detail_head(_config(tmp_path, output_dir=str(tmp_path / "plain"), references=False),
                                triples, log=lambda _: None)
    assert _l1(with_refs, triples) < 0.7 * _l1(without, triples, with_refs=False)
    # a stopped and resumed run is the same run (the dropout's draws included)
    cut = _config(tmp_path, output_dir=str(tmp_path / "cut"))
    train_detail_head(cut, triples, log=lambda _: None, stop_after=50)
    resumed = train_detail_head(cut, triples, resume=True, log=lambda _: None)
    for (k, a), b in zip(with_refs.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # samples made without references cannot train a head that needs them
    with pytest.raises(InputError, match="references"):
        train_detail_head(_config(tmp_path, output_dir=str(tmp_path / "x")),
                          {k: v for k, v in triples.items() if k != "reference"}, log=lambda _: None)
    with pytest.raises(ValueError, match="reference_dropout"):
        _config(tmp_path, reference_dropout=1.0)


def test_mean_reference_prefers_other_sources_and_follows_the_mirror(tmp_path):
    side = 16
    images = [np.full((side, side, 3), 10 * (i + 1), np.uint8) for i in range(6)]
    images[3][:, : side // 2] = 200  # a reference with a bright left half
    pack = SimpleNamespace(source=np.array([0, 0, 0, 1, 0, 2]), image=lambda i: images[i])
    data = SimpleNamespace(faces=pack, references_of=lambda t: np.array([1, 2, 3, 4, 5]))
    config = _config(tmp_path, reference_count=2, reference_jitter=0.0)
    mean = _mean_reference(config, data, {"index": 0, "flipped": False}, np.random.default_rng(0))
    # the two references from other sources (3 and 5), not frames of the face's own clip
    want = (np.mean([images[3].astype(np.float32), images[5]], 0) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(mean, want)
    mirrored = _mean_reference(config, data, {"index": 0, "flipped": True}, np.random.default_rng(0))
    np.testing.assert_array_equal(mirrored, want[:, ::-1])
    # jitter moves and relights them, but the bright half stays where it was
    jittered = _mean_reference(_config(tmp_path, reference_count=2), data, {"index": 0, "flipped": False},
                               np.random.default_rng(1))
    assert not np.array_equal(jittered, want)
    assert jittered[:, : side // 2 - 2].mean() > jittered[:, side // 2 + 2:].mean() + 40
    # a face whose references all come from its own clip still gets them
    only_own = SimpleNamespace(faces=pack, references_of=lambda t: np.array([1, 2]))
    own = _mean_reference(config, only_own, {"index": 0, "flipped": False}, np.random.default_rng(0))
    np.testing.assert_array_equal(own, np.full((side, side, 3), 25, np.uint8))


def test_reference_detail_ignores_the_references_light():
    """With ``reference_detail_sigma`` the head sees only the references' detail: a brighter
    copy of the same references gives the same output; without it, it does not."""
    faces, restored, refs = _faces(2, 1), _faces(2, 3), _faces(2, 4)
    for sigma, same in ((2.0, True), (0.0, False)):
        head = DetailHead(DetailHeadSettings(channels=8, blocks=1, references=True, reference_detail_sigma=sigma))
        _randomise(head, seed=2)
        with torch.no_grad():
            a, b = head(faces, restored, refs * 0.5), head(faces, restored, refs * 0.5 + 0.3)
        assert torch.allclose(a, b, atol=1e-5) is same
    with pytest.raises(ValueError, match="reference_detail_sigma"):
        DetailHeadSettings(references=True, reference_detail_sigma=-1.0)


def test_jitter_scales_every_change_with_its_amount():
    """0 leaves a reference as it is (light included); more moves and relights it more."""
    from streamrestore.data.samples import jitter_reference

    image = np.random.default_rng(0).uniform(30, 220, (32, 32, 3)).astype(np.float32)
    still = jitter_reference(image, np.random.default_rng(5), 0.0)[0]
    np.testing.assert_allclose(still, image, atol=1e-3)
    small, large = (np.abs(jitter_reference(image, np.random.default_rng(5), a)[0] - image).mean() for a in (0.25, 1.0))
    assert 0 < small < large
