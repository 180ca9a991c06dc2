"""The reference detail stage: the references' fine detail, registered onto the face by optical
flow, is added where the registration explains the face, and nowhere else."""
import cv2
import numpy as np
import pytest

from streamrestore.reference_detail import ReferenceDetail, ReferenceDetailConfig


def _person(seed: int, size: int = 128) -> np.ndarray:
    """A picture with coarse structure (what the flow follows) and fine detail (what a degraded
    face has lost), float32 in 0-255."""
    rng = np.random.default_rng(seed)
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), size / 24)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), 0.8)
    return np.clip(128 + 45 * coarse / coarse.std() + 14 * fine / fine.std(), 0, 255).astype(np.float32)


def _shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    inner = slice(16, 112)
    mse = ((a.astype(np.float64) - b.astype(np.float64))[inner, inner] ** 2).mean()
    return 10 * np.log10(255.0**2 / mse)


def _degraded_pair(seed: int = 0, dx: float = 1.5, dy: float = -1.0):
    """(clean face, its blurred copy): the clean face is the reference photo moved by (dx, dy)
    px, as a frame's 5-point alignment leaves a photo of the same person a little off."""
    photo = _person(seed)
    clean = _shift(photo, dx, dy)
    return photo, clean, _u8(cv2.GaussianBlur(clean, (0, 0), 1.3))


def test_a_matching_reference_brings_its_detail_back_where_the_face_is():
    photo, clean, degraded = _degraded_pair()
    stage = ReferenceDetail(ReferenceDetailConfig(strength=1.0))
    refs = stage.prepare(_u8(photo)[None])
    detail, weight = stage.detail(degraded, refs)
    assert weight > 0.6  # the registration explains the face
    out = stage.apply(degraded, degraded, refs)
    gain = _psnr(out, clean) - _psnr(degraded, clean)
    # measured: +15 dB on this drawn case; unregistered (the photo's detail added where the photo is) far less
    unregistered = _u8(degraded.astype(np.float32) + photo - cv2.GaussianBlur(photo, (0, 0), 1.5))
    assert gain > 2.0, gain
    assert _psnr(unregistered, clean) < _psnr(out, clean) - 1.0


def test_light_and_contrast_of_the_reference_do_not_matter():
    photo, clean, degraded = _degraded_pair(seed=1)
    stage = ReferenceDetail(ReferenceDetailConfig(strength=1.0))
    darker = stage.prepare(_u8(0.6 * photo + 20)[None])
    _, weight = stage.detail(degraded, darker)
    assert weight > 0.6
    assert _psnr(stage.apply(degraded, degraded, darker), clean) > _psnr(degraded, clean) + 1.0


def test_an_unrelated_reference_is_mostly_left_out():
    photo, clean, degraded = _degraded_pair(seed=2)
    stage = ReferenceDetail()  # the default strength
    _, matched = stage.detail(degraded, stage.prepare(_u8(photo)[None]))
    refs = stage.prepare(_u8(_person(seed=3))[None])
    _, weight = stage.detail(degraded, refs)
    # the flow bends any texture a little towards the face (measured weight 0.25 against 0.99):
    # the fall-off keeps most of it out, the references' identity is the matcher's business
    assert weight < 0.35 * matched
    out = stage.apply(degraded, degraded, refs)
    assert np.abs(out.astype(int) - degraded).mean() < 2.0
    # measured: -0.13 dB here (-0.49 at strength 1), where the matching photo gains +5.4 dB
    assert _psnr(out, clean) > _psnr(degraded, clean) - 0.3
    assert _psnr(stage.apply(degraded, degraded, stage.prepare(_u8(photo)[None])), clean) > _psnr(degraded, clean) + 1.0


def test_the_detail_is_averaged_over_references_each_weighted_by_its_own_match():
    photo, clean, degraded = _degraded_pair(seed=4)
    stage = ReferenceDetail(ReferenceDetailConfig(strength=1.0))
    one = stage.detail(degraded, stage.prepare(_u8(photo)[None]))
    other = stage.detail(degraded, stage.prepare(_u8(_person(seed=5))[None]))
    mixed = stage.detail(degraded, stage.prepare(np.stack([_u8(photo), _u8(_person(seed=5))])))
    assert one[1] > 2 * other[1]
    assert mixed[1] == pytest.approx((one[1] + other[1]) / 2, abs=1e-4)
    assert np.abs(mixed[0] - (one[0] + other[0]) / 2).max() < 1e-3


def test_off_no_references_or_none_returns_the_restored_face_as_is():
    photo, _, degraded = _degraded_pair()
    restored = _u8(degraded.astype(np.float32) + 3)
    on = ReferenceDetail()
    refs = on.prepare(_u8(photo)[None])
    assert on.apply(degraded, restored, None) is restored
    assert on.apply(degraded, restored, on.prepare(np.zeros((0, 128, 128, 3), np.uint8))) is restored
    off = ReferenceDetail(ReferenceDetailConfig.off())
    assert not off.config.enabled and off.apply(degraded, restored, refs) is restored
    assert on.config.enabled and on.apply(degraded, restored, refs) is not restored
    # the quality gate's weight scales it: a clean face (weight 0) gets none
    detail = on.detail(degraded, refs)[0]
    assert on.add(restored, detail, 0.0) is restored
    half = on.add(restored, detail, 0.5).astype(np.float32)
    expected = np.clip(restored + 0.5 * on.config.strength * detail, 0, 255)
    assert np.abs(half - expected).max() <= 0.5 + 1e-3


def test_settings_scale_with_the_crop():
    # a 256-px crop of the same scene gives the same gain as the 128-px one
    photo, clean, degraded = _degraded_pair()
    stage = ReferenceDetail(ReferenceDetailConfig(strength=1.0))
    big = lambda im: cv2.resize(im, (256, 256), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    gain_128 = _psnr(stage.apply(degraded, degraded, stage.prepare(_u8(photo)[None])), clean) - _psnr(degraded, clean)
    deg_256 = _u8(big(degraded.astype(np.float32)))
    out_256 = stage.apply(deg_256, deg_256, stage.prepare(_u8(big(photo))[None]))
    small = cv2.resize(out_256.astype(np.float32), (128, 128), interpolation=cv2.INTER_AREA)
    assert _psnr(small, clean) - _psnr(degraded, clean) > 0.5 * gain_128
    # a 512-px crop is matched at flow_side (128) and warped at 512: the same weight as at 128
    huge = lambda im: cv2.resize(im, (512, 512), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    deg_512 = _u8(huge(degraded.astype(np.float32)))
    refs_512 = stage.prepare(_u8(huge(photo))[None])
    assert refs_512.grey[0].shape == (128, 128) and refs_512.detail[0].shape == (512, 512, 3)
    detail_512, weight_512 = stage.detail(deg_512, refs_512)
    _, weight_128 = stage.detail(degraded, stage.prepare(_u8(photo)[None]))
    assert detail_512.shape == (512, 512, 3) and abs(weight_512 - weight_128) < 0.1
    small = cv2.resize(stage.apply(deg_512, deg_512, refs_512).astype(np.float32), (128, 128), interpolation=cv2.INTER_AREA)
    assert _psnr(small, clean) - _psnr(degraded, clean) > 0.5 * gain_128


def test_bad_inputs_and_settings_raise():
    stage = ReferenceDetail()
    with pytest.raises(ValueError, match="reference crops"):
        stage.prepare(np.zeros((128, 128, 3), np.uint8))
    refs = stage.prepare(np.zeros((1, 128, 128, 3), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        stage.detail(np.zeros((64, 64, 3), np.uint8), refs)
    for bad in (dict(strength=-0.1), dict(strength=3.0), dict(tolerance=0), dict(sigma=0), dict(match_blur=-1),
                dict(window=0), dict(flow_preset="slow"), dict(flow_side=16)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ReferenceDetailConfig(**bad)


def test_the_pipeline_adds_it_to_faces_with_references_only_and_both_frame_paths_agree():
    import torch

    from streamrestore.faces.identity import ReferenceSet
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.quality import QualityGateConfig
    from streamrestore.temporal import TemporalConfig
    from streamrestore.types import Face

    photo, clean, degraded = _degraded_pair(seed=6)
    # the frame is the degraded face itself: the crop's alignment maps it onto itself
    from streamrestore.faces.align import template

    kps = template(128).astype(np.float32)

    class Here:
        def detect(self, image):
            return [Face(box=np.array([0, 0, 128, 128], np.float32), kps=kps, score=0.9)]

    sets = [ReferenceSet(name="ann", crops=_u8(photo)[None], embeddings=np.ones((1, 4), np.float32) / 2, files=["a"])]
    base = dict(lookahead=0, detect_every=1, temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    outs = {}
    for name, sets_, detail, path in (("off", sets, ReferenceDetailConfig.off(), "host"),
                                      ("norefs", [], ReferenceDetailConfig(), "host"),
                                      ("host", sets, ReferenceDetailConfig(), "host"),
                                      ("device", sets, ReferenceDetailConfig(), "device")):
        fr = FaceRestorer(IdentityRestorer(128), Here(), sets_,
                          config=PipelineConfig(reference_detail=detail, frame_path=path, **base))
        with torch.inference_mode():
            outs[name] = fr.process(degraded.copy())
        # the stage is timed (a row of `streamrestore bench`) only where it runs
        assert ("reference_detail" in fr.stats.stage_seconds) == (name in ("host", "device"))
    inner = slice(24, 104)
    assert np.abs(outs["off"][inner, inner].astype(int) - degraded[inner, inner]).mean() < 1.0  # identity restorer
    assert np.array_equal(outs["norefs"], outs["off"])
    assert _psnr(outs["host"], clean) > _psnr(outs["off"], clean) + 1.0
    assert np.abs(outs["device"][inner, inner].astype(int) - outs["host"][inner, inner]).mean() < 1.0


def test_each_track_reports_how_well_its_references_match_and_a_poor_match_is_warned_of(monkeypatch):
    """The stage's mean weight per face is averaged per track (``TrackStats.reference_match``, a
    column of the summary); a track below ``POOR_REFERENCE_MATCH`` after enough faces gets a
    warning that names it. Both frame paths report it."""
    import torch

    import streamrestore.run as run_module
    from streamrestore.faces.align import template
    from streamrestore.faces.identity import ReferenceSet
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.temporal import TemporalConfig
    from streamrestore.types import Face

    photo, _, degraded = _degraded_pair(seed=9)
    kps = template(128).astype(np.float32)

    class Here:
        def detect(self, image):
            return [Face(box=np.array([0, 0, 128, 128], np.float32), kps=kps, score=0.9)]

    def run(ref: np.ndarray, path: str, frames: int):
        sets = [ReferenceSet(name="ann", crops=_u8(ref)[None], embeddings=np.ones((1, 4), np.float32) / 2, files=["a"])]
        fr = FaceRestorer(IdentityRestorer(128), Here(), sets,
                          config=PipelineConfig(lookahead=0, detect_every=1, temporal=TemporalConfig.off(), frame_path=path))
        with torch.inference_mode():
            for _ in range(frames):
                fr.process(degraded.copy())
        (track,) = fr.stats.per_track.values()
        return fr.stats, track

    stats, track = run(photo, "host", 3)
    assert track.match_faces == 3 and track.reference_match > 0.9  # measured 0.99
    assert f"reference detail fit {track.reference_match:.2f}" in stats.summary()
    assert "fits the face poorly" not in stats.summary()
    _, on_device = run(photo, "device", 3)
    assert on_device.reference_match == pytest.approx(track.reference_match, abs=0.02)
    # another picture: the flow bends any texture a little towards the face (measured 0.30 here;
    # real photos in another light score 0.06, docs/video_eval.md), so the test moves the bar
    monkeypatch.setattr(run_module, "POOR_REFERENCE_MATCH", 0.5)
    stats, other = run(_person(seed=3), "host", run_module.POOR_MATCH_MIN_FACES - 1)
    assert other.reference_match < 0.5 * track.reference_match
    assert "poorly" not in stats.summary()  # too few faces to judge yet
    stats, other = run(_person(seed=3), "host", run_module.POOR_MATCH_MIN_FACES)
    (tid,) = stats.per_track
    assert stats.poorly_matched() == [tid]
    assert (f"warning: track {tid} (ann): its reference photos' detail fits the face poorly "
            f"({other.reference_match:.2f} of 1" in stats.summary())
    # a track whose identity changes starts its average again (another person's photos)
    stats.per_track[tid].identity = "bob"
    assert stats.per_track[tid].reference_match is None and stats.poorly_matched() == []
    stats.add_reference_match(tid, 0.9)
    assert stats.per_track[tid].reference_match == pytest.approx(0.9) and stats.per_track[tid].match_faces == 1
    # without references the stage does not run: nothing to report
    plain = FaceRestorer(IdentityRestorer(128), Here(), [], config=PipelineConfig(lookahead=0, detect_every=1))
    with torch.inference_mode():
        plain.process(degraded.copy())
    assert next(iter(plain.stats.per_track.values())).reference_match is None
    assert "reference detail fit" not in plain.stats.summary()
    # nor with the stage turned off
    sets = [ReferenceSet(name="ann", crops=_u8(photo)[None], embeddings=np.ones((1, 4), np.float32) / 2, files=["a"])]
    off = FaceRestorer(IdentityRestorer(128), Here(), sets,
                       config=PipelineConfig(lookahead=0, detect_every=1, reference_detail=ReferenceDetailConfig.off()))
    with torch.inference_mode():
        off.process(degraded.copy())
    assert next(iter(off.stats.per_track.values())).reference_match is None


def test_the_host_path_registers_the_references_while_the_restorer_runs(monkeypatch):
    """The detail needs only the input face: a worker thread computes it during the restore (the
    restorer here waits until it has started; run one after the other, it would time out), and
    the result is the restored face plus exactly that detail. A restorer that fails still raises,
    and the worker's thread ends with the FaceRestorer."""
    import threading

    import torch

    from streamrestore.faces.align import template
    from streamrestore.faces.identity import ReferenceSet
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.quality import QualityGateConfig
    from streamrestore.temporal import TemporalConfig
    from streamrestore.types import Face

    photo, clean, degraded = _degraded_pair(seed=8)
    kps = template(128).astype(np.float32)

    class Here:
        def detect(self, image):
            return [Face(box=np.array([0, 0, 128, 128], np.float32), kps=kps, score=0.9)]

    started, threads, seen = threading.Event(), [], {}
    original = ReferenceDetail.detail

    def detail(self, face, references):
        threads.append(threading.current_thread())
        started.set()
        out = original(self, face, references)
        seen["face"], seen["detail"] = face.copy(), out[0]
        return out

    monkeypatch.setattr(ReferenceDetail, "detail", detail)

    class Waiting(IdentityRestorer):
        fail = False

        def restore(self, faces, caches, noise_seeds=None):
            assert started.wait(timeout=20), "the reference detail did not start during the restore"
            if self.fail:
                raise RuntimeError("restorer broke")
            return super().restore(faces, caches, noise_seeds)

    sets = [ReferenceSet(name="ann", crops=_u8(photo)[None], embeddings=np.ones((1, 4), np.float32) / 2, files=["a"])]
    config = PipelineConfig(lookahead=0, detect_every=1, temporal=TemporalConfig.off(),
                            gate=QualityGateConfig(enabled=False), frame_path="host")
    restorer = Waiting(128)
    fr = FaceRestorer(restorer, Here(), sets, config=config)
    with torch.inference_mode():
        out = fr.process(degraded.copy())
    assert threads and threads[0] is not threading.main_thread()
    face_out = fr.last_faces[0]
    expected = ReferenceDetail(config.reference_detail).add(seen["face"], seen["detail"])  # identity restorer
    # pasted back into the frame: compare the face's inner part through the crop's own alignment
    pasted = cv2.warpAffine(out, face_out.matrix, (128, 128), flags=cv2.INTER_LINEAR)
    inner = slice(32, 96)
    assert np.abs(pasted[inner, inner].astype(int) - expected[inner, inner]).mean() < 1.0
    assert np.abs(expected[inner, inner].astype(int) - seen["face"][inner, inner]).mean() > 0.5  # it added something
    started.clear()
    restorer.fail = True
    with pytest.raises(RuntimeError, match="restorer broke"), torch.inference_mode():
        fr.process(degraded.copy())
    # the worker's thread ends with its FaceRestorer (batch chunks and evals make many)
    import gc

    worker = threads[0]
    del fr
    gc.collect()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_fresh_restorers_share_the_prepared_references(monkeypatch):
    """A worker's next chunk (``fresh()``) does not prepare its identities' references again."""
    from streamrestore.faces.identity import ReferenceSet
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer

    photo, _, _ = _degraded_pair(seed=7)
    sets = [ReferenceSet(name="ann", crops=_u8(photo)[None], embeddings=np.ones((1, 4), np.float32) / 2, files=["a"])]
    calls = []
    original = ReferenceDetail.prepare
    monkeypatch.setattr(ReferenceDetail, "prepare", lambda self, crops: calls.append(1) or original(self, crops))
    fr = FaceRestorer(IdentityRestorer(128), object(), sets)
    assert len(calls) == len(fr.crop_sides) == 3  # once per crop side "auto" may cut
    again = fr.fresh()
    assert len(calls) == 3
    assert all(again._prepared["ann", side] is fr._prepared["ann", side] for side in fr.crop_sides)


def test_cli_option_builds_the_config():
    from streamrestore.cli import build_parser
    from streamrestore.cli.options import pipeline_config
    from streamrestore.errors import UserError

    parse = lambda *extra: pipeline_config(build_parser().parse_args(["in.mp4", *extra])).reference_detail  # noqa: E731
    assert parse() == ReferenceDetailConfig()
    assert parse("--reference-detail", "0") == ReferenceDetailConfig.off()
    assert parse("--reference-detail", "0.3").strength == 0.3
    with pytest.raises(UserError, match="--reference-detail"):
        parse("--reference-detail", "-1")


def test_an_adapted_restorer_serves_a_track_only_once_its_photos_match_its_face(monkeypatch):
    """``FaceRestorer`` passes an adapted restorer's adapted references only for tracks whose photos
    match their face (the reference detail stage's match, a track's first face measured before its
    restore); others get the unadapted ones (``restorer.unadapted``); with the stage off every face
    gets the adapted ones. An identity the restorer did not adapt (too few photos: ``unadapted`` gives
    the cache back) is never reported as adapted."""
    import torch

    import streamrestore.run as run_module
    from streamrestore.faces.align import template
    from streamrestore.faces.identity import ReferenceSet
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.temporal import TemporalConfig
    from streamrestore.types import Face

    photo, _, degraded = _degraded_pair(seed=9)
    kps = template(128).astype(np.float32)
    plain = object()

    class Here:
        def detect(self, image):
            return [Face(box=np.array([0, 0, 128, 128], np.float32), kps=kps, score=0.9)]

    class Adapted(IdentityRestorer):
        def __init__(self, adapts: bool):
            super().__init__(128)
            self.adapts = adapts
            self.given: list[str] = []

        def unadapted(self, cache):
            return plain if self.adapts else cache

        def restore(self, faces, caches, noise_seeds=None):
            self.given += ["unadapted" if c is plain else "adapted" for c in caches]
            return super().restore(faces, [None] * len(caches), noise_seeds)

    def run(ref: np.ndarray, frames: int, detail: ReferenceDetailConfig = ReferenceDetailConfig(), before=None,
            adapts: bool = True):
        restorer = Adapted(adapts)
        sets = [ReferenceSet(name="ann", crops=_u8(ref)[None], embeddings=np.ones((1, 4), np.float32) / 2, files=["a"])]
        fr = FaceRestorer(restorer, Here(), sets, config=PipelineConfig(
            lookahead=0, detect_every=1, temporal=TemporalConfig.off(), reference_detail=detail))
        with torch.inference_mode():
            for i in range(frames):
                if before is not None:
                    before(i)
                fr.process(degraded.copy())
        (track,) = fr.stats.per_track.values()
        summary = fr.stats.summary()  # each track's line says whether the adaptation served it
        if not adapts:
            assert track.adapted is None and "adapted" not in summary
            return restorer.given
        adapted = restorer.given[-1] == "adapted"
        assert track.adapted == adapted
        assert ("; adapted" in summary) == adapted
        assert ("; not adapted (its photos fit poorly)" in summary) == (not adapted)
        return restorer.given

    assert run(photo, 3) == ["adapted"] * 3  # the first face too
    assert run(photo, 3, adapts=False) == ["adapted"] * 3  # its own cache: no adaptation to report
    monkeypatch.setattr(run_module, "POOR_REFERENCE_MATCH", 0.5)  # as in the test above: another picture scores 0.30
    assert run(_person(seed=3), 3) == ["unadapted"] * 3
    assert run(_person(seed=3), 3, ReferenceDetailConfig.off()) == ["adapted"] * 3  # nothing measured

    # decided on the first face, then once more on the track's average at POOR_MATCH_MIN_FACES faces, and kept:
    # a bar raised after the first face (every match now poor) is seen only then
    n = run_module.POOR_MATCH_MIN_FACES

    def raise_the_bar(i):
        if i == 1:
            monkeypatch.setattr(run_module, "POOR_REFERENCE_MATCH", 1.01)

    assert run(photo, n + 2, before=raise_the_bar) == ["adapted"] * n + ["unadapted"] * 2
