import numpy as np
import pytest

from streamrestore.temporal import TemporalConfig, TemporalSmoother


def test_still_input_reduces_output_flicker():
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sm = TemporalSmoother(TemporalConfig(strength=0.6, denoise=0.0))
    outs = []
    for _ in range(20):
        flicker = (still.astype(int) + rng.integers(-6, 7, still.shape)).clip(0, 255).astype(np.uint8)
        outs.append(sm.smooth(1, still, flicker).astype(float))
    raw_step = 4.0  # E|a-b| for independent uniform(-6,6) integer noise is ~4.3
    smooth_step = np.mean([np.abs(a - b).mean() for a, b in zip(outs[5:], outs[6:])])
    assert smooth_step < 0.6 * raw_step


def test_changed_input_is_followed():
    sm = TemporalSmoother(TemporalConfig(strength=0.6, tolerance=6, denoise=0.0))
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 200, np.uint8)
    sm.smooth(7, a, a)
    out = sm.smooth(7, b, b)
    assert np.abs(out.astype(int) - 200).max() <= 1


def test_tracks_are_independent_and_forgotten():
    sm = TemporalSmoother()
    a = np.zeros((16, 16, 3), np.uint8)
    sm.smooth(1, a, a)
    sm.forget([2])
    b = np.full((16, 16, 3), 3, np.uint8)
    # track 1 was forgotten: no memory of the old output, the new one passes unchanged
    assert np.array_equal(sm.smooth(1, a, b), b)


def test_strength_zero_is_off_and_bad_values_raise():
    a = np.zeros((8, 8, 3), np.uint8)
    sm = TemporalSmoother(TemporalConfig.off())
    sm.smooth(1, a, a)
    b = np.full_like(a, 9)
    assert np.array_equal(sm.smooth(1, a, b), b)
    with pytest.raises(ValueError, match="strength"):
        TemporalConfig(strength=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        TemporalConfig(tolerance=0)
    with pytest.raises(ValueError, match="denoise"):
        TemporalConfig(denoise=1.0)
    with pytest.raises(ValueError, match="denoise_tolerance"):
        TemporalConfig(denoise_tolerance=0)
    assert not TemporalConfig.off().enabled and TemporalConfig(strength=0.0).enabled  # the input average stays on


# --- the input average ---------------------------------------------------------------------

def _noisy_still(frames: int, sigma: float, seed: int = 0):
    """A still face and its frames with compression-like noise of std ``sigma``: coarse blotches
    (a small video's blocks, scaled up), different in every frame."""
    import cv2

    rng = np.random.default_rng(seed)
    scene = _texture(96, seed)
    out = []
    for _ in range(frames):
        noise = cv2.GaussianBlur(rng.normal(0, 1, scene.shape).astype(np.float32), (0, 0), 3.0)
        out.append(np.clip(scene + sigma * noise / noise.std() + 0.5, 0, 255).astype(np.uint8))
    return scene, out


def test_input_average_removes_compression_like_noise_of_a_degraded_face():
    scene, frames = _noisy_still(20, sigma=4.0)
    sm = TemporalSmoother(TemporalConfig(strength=0.0, denoise=0.9))
    outs = [sm.smooth(1, f, f).astype(np.float32) for f in frames]  # no restorer change at all
    noise_in = np.mean([np.abs(f - scene).mean() for f in frames[8:]])
    noise_out = np.mean([np.abs(o - scene).mean() for o in outs[8:]])
    assert noise_out < 0.6 * noise_in, (noise_out, noise_in)


def _sharp_jittering_face(frames: int, amplitude: float = 1.0, seed: int = 0):
    """A clean, sharp face (coarse shading and fine texture) moving by up to ``amplitude`` px back
    and forth: the real motion of a head held still, which the flow follows only roughly on the
    fine texture."""
    import cv2

    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (256, 256, 3)).astype(np.float32), (0, 0), 0.8)
    scene = _texture(256, seed) + 25 * fine / fine.std()
    out = []
    for t in range(frames):
        m = np.float32([[1, 0, -64 + amplitude * np.sin(1.3 * t)], [0, 1, -64 + amplitude * np.cos(0.7 * t)]])
        out.append(np.clip(cv2.warpAffine(scene, m, (128, 128), flags=cv2.INTER_CUBIC) + 0.5, 0, 255).astype(np.uint8))
    return out


def test_input_average_keeps_a_sharp_moving_face_sharp():
    """The average carries only the coarse part of each frame's difference (``denoise_sigma``):
    where the flow is a fraction of a pixel off on fine texture, the whole difference smeared it
    into every frame (the soft clean d14 clip, read as damaged by the gate, flickered 1.26x)."""
    frames = _sharp_jittering_face(20)

    def change(**settings):  # how far the average moves the face from its input, once settled
        sm = TemporalSmoother(TemporalConfig(strength=0.0, denoise=0.7, **settings))
        return np.mean([np.abs(sm.smooth(1, f, f).astype(np.float32) - f)[16:112, 16:112].mean()
                        for f in frames][5:])

    default, whole, coarse = change(), change(denoise_sigma=0.0), change(denoise_fine=0.0)
    assert whole == change(denoise_fine=1.0)  # either setting carries the whole difference
    assert coarse < default < 0.6 * whole, (coarse, default, whole)


def test_input_average_leaves_clean_faces_alone():
    """The gate's weight 0 (a clean face): not one level of the input is averaged."""
    _, frames = _noisy_still(6, sigma=4.0)
    sm = TemporalSmoother(TemporalConfig(denoise=0.9))
    for f in frames:
        assert np.array_equal(sm.smooth(1, f, f, denoise_weight=0.0), f)


def test_input_average_follows_motion_without_ghosts():
    inputs, _ = _moving_clip(16, speed=2.0)
    sm = TemporalSmoother(TemporalConfig(strength=0.0, denoise=0.9))
    inner = (slice(16, 112), slice(16, 112))
    for x in inputs:
        out = sm.smooth(1, x, x)
        assert np.abs(out.astype(np.float32) - x)[inner].mean() < 1.0  # the moving texture, not a smear
    x = inputs[-1].copy()
    x[40:90, 40:90] = (30, 200, 60)  # an occluder: taken as it is
    out = sm.smooth(1, x, x)
    assert np.abs(out[44:86, 44:86].astype(int) - x[44:86, 44:86]).max() <= 2


# --- motion-compensated fusion -------------------------------------------------------------

def _texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth, well-textured picture (what optical flow follows: skin, hair, features)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), size / 48)
    return np.clip(128 + 40 * noise / noise.std(), 0, 255)


def _moving_clip(frames: int, size: int = 128, speed: float = 1.5, seed: int = 0):
    """(inputs, true changes): a texture sliding right by ``speed`` px per frame, and a detail
    pattern (the restorer's "true" change) that moves with it."""
    import cv2

    big = 2 * size
    scene = _texture(big, seed)
    detail = (_texture(big, seed + 1) - 128) * 0.25
    inputs, changes = [], []
    for t in range(frames):
        m = np.float32([[1, 0, -(big // 4) - speed * t], [0, 1, -(big // 4)]])
        inputs.append(np.clip(cv2.warpAffine(scene, m, (size, size), flags=cv2.INTER_LINEAR) + 0.5, 0, 255).astype(np.uint8))
        changes.append(cv2.warpAffine(detail, m, (size, size), flags=cv2.INTER_LINEAR))
    return inputs, changes


def _run(sm, inputs, changes, jitter, seed=3):
    """Feeds input + true change + a still per-frame jitter of the restorer; returns outputs
    and the ideal outputs (input + true change)."""
    rng = np.random.default_rng(seed)
    outs, ideal = [], []
    for x, d in zip(inputs, changes):
        noise = rng.normal(0, jitter, x.shape).astype(np.float32)
        restored = np.clip(x + d + noise + 0.5, 0, 255).astype(np.uint8)
        outs.append(sm.smooth(1, x, restored).astype(np.float32))
        ideal.append(np.clip(x + d + 0.5, 0, 255).astype(np.float32))
    return outs, ideal


def test_moving_face_jitter_removed_and_motion_followed():
    inputs, changes = _moving_clip(24)
    inner = (slice(16, 112), slice(16, 112))  # away from the border the motion brings in
    off, ideal = _run(TemporalSmoother(TemporalConfig.off()), inputs, changes, jitter=4.0)
    on, _ = _run(TemporalSmoother(TemporalConfig(strength=0.7, denoise=0.0)), inputs, changes, jitter=4.0)

    def jitter(outs):  # error against the ideal output, after the fusion has settled
        return np.mean([np.abs(o - i)[inner].mean() for o, i in zip(outs[8:], ideal[8:])])

    assert jitter(on) < 0.6 * jitter(off), (jitter(on), jitter(off))
    # no ghost: with no jitter, the fused output follows the moving detail (the true change is
    # carried along the motion, not left behind where it was)
    clean, ideal = _run(TemporalSmoother(TemporalConfig(strength=0.7, denoise=0.0)), inputs, changes, jitter=0.0)
    assert max(np.abs(o - i)[inner].mean() for o, i in zip(clean, ideal)) < 1.0
    # the old still-only smoother would have dragged the detail: keeping the previous output
    # unwarped is far off on this motion
    stale = np.mean([np.abs(p - i)[inner].mean() for p, i in zip(ideal[:-1], ideal[1:])])
    assert stale > 5.0


def test_occlusion_falls_back_to_the_new_frame():
    inputs, changes = _moving_clip(10, speed=1.0)
    sm = TemporalSmoother(TemporalConfig(strength=0.9, denoise=0.0))
    rng = np.random.default_rng(1)
    for x, d in zip(inputs[:-1], changes[:-1]):
        sm.smooth(1, x, np.clip(x + d + rng.normal(0, 3, x.shape) + 0.5, 0, 255).astype(np.uint8))
    x = inputs[-1].copy()
    x[40:90, 40:90] = (30, 200, 60)  # a hand comes in front of the face
    restored = x.copy()
    restored[40:90, 40:90] = (40, 190, 70)  # what the restorer makes of it this frame
    out = sm.smooth(1, x, restored)
    inside = (slice(44, 86), slice(44, 86))
    diff = np.abs(out[inside].astype(int) - restored[inside])
    assert diff.mean() < 0.3 and diff.max() <= 3, (diff.mean(), diff.max())  # nothing of the old face


def test_new_track_and_reset_start_without_state():
    inputs, _ = _moving_clip(3)
    sm = TemporalSmoother(TemporalConfig(strength=0.9, denoise=0.0))
    bright = np.clip(inputs[0].astype(int) + 40, 0, 255).astype(np.uint8)
    sm.smooth(1, inputs[0], bright)
    # same picture, new track (the tracker's answer to a cut): the new change is used as is
    assert np.array_equal(sm.smooth(2, inputs[0], inputs[0]), inputs[0])
    sm.reset(1)
    assert np.array_equal(sm.smooth(1, inputs[0], inputs[0]), inputs[0])


def test_cut_in_the_pipeline_gives_a_fresh_track_and_no_carry_over():
    import torch

    from streamrestore.pipeline import FaceRestorer, PipelineConfig
    from streamrestore.quality import QualityGateConfig
    from streamrestore.types import Face

    class OneFace:
        def detect(self, image):
            kps = np.array([[100, 110], [156, 110], [128, 140], [106, 170], [150, 170]], np.float32)
            return [Face(box=np.array([70, 60, 186, 200], np.float32), kps=kps, score=0.9)]

    class Jittery:
        resolution = 128

        def __init__(self):
            self.rng = torch.Generator().manual_seed(0)

        def encode_references(self, faces):
            return None

        def restore(self, faces, caches, noise_seeds=None):
            return (faces + 0.03 * torch.randn(faces.shape, generator=self.rng)).clamp(0, 1)

    scene_a = np.clip(_texture(256, 5) * [1.2, 0.8, 0.5], 0, 255).astype(np.uint8)
    scene_b = np.clip(_texture(256, 6) * [0.4, 0.9, 1.3], 0, 255).astype(np.uint8)
    frames = [scene_a] * 4 + [scene_b] * 2
    results = {}
    for strength in (0.0, 0.8):
        temporal = TemporalConfig(strength=strength) if strength else TemporalConfig.off()
        config = PipelineConfig(lookahead=0, detect_every=1, temporal=temporal,
                                gate=QualityGateConfig(enabled=False))
        fr = FaceRestorer(Jittery(), OneFace(), config=config)
        outs, ids = [], []
        for f in frames:
            outs.append(fr.process(f.copy()))
            ids.append(fr.last_faces[0].track_id)
        results[strength] = (outs, ids, fr)
    outs_off, ids, _ = results[0.0]
    outs_on, ids_on, fr = results[0.8]
    assert ids == ids_on and ids[3] != ids[4]  # the cut gave the face a new track
    assert set(fr._smoother._last) == {ids[4]}  # the old track's state is gone
    assert set(fr._smoother._memory) <= {ids[4]}  # and its remembered frames
    assert np.array_equal(outs_on[4], outs_off[4])  # first frame after the cut: nothing carried over
    assert not np.array_equal(outs_on[5], outs_off[5])  # and the fusion runs again from there
    assert not np.array_equal(outs_on[3], outs_off[3])


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("strength,denoise,memory", [(0.8, 0.9, 0), (0.8, 0.0, 0), (0.0, 0.9, 0), (0.8, 0.7, 4)],
                         ids=["both", "change", "average", "memory"])
def test_host_and_device_paths_agree(size, strength, denoise, memory):
    import cv2
    import torch

    inputs, changes = _moving_clip(6, size=size, speed=2.0)
    # the memory: a frame remembered every frame, so that all four are compared
    cfg = TemporalConfig(strength=strength, denoise=denoise, flow_side=128, memory=memory, memory_every=1)
    host, dev = TemporalSmoother(cfg), TemporalSmoother(cfg)
    rng = np.random.default_rng(2)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255  # noqa: E731
    for x, d in zip(inputs, changes):
        # compression-like noise on the input (what the input average acts on) and a jittery change
        noise = cv2.GaussianBlur(rng.normal(0, 1, x.shape).astype(np.float32), (0, 0), 3.0 * size / 128)
        x = np.clip(x + 3 * noise / noise.std() + 0.5, 0, 255).astype(np.uint8)
        restored = np.clip(x + d + rng.normal(0, 4, x.shape) + 0.5, 0, 255).astype(np.uint8)
        a = host.smooth(1, x, restored, denoise_weight=0.9)
        t = dev.smooth_tensor(1, to_t(x), to_t(restored), denoise_weight=0.9)
        b = (t.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.mean() < 0.3 and diff.max() <= 3, (diff.mean(), diff.max())
    assert np.abs(a.astype(int) - restored).mean() > 1  # the fusion did something


def test_flow_side_must_be_sane():
    with pytest.raises(ValueError, match="flow_side"):
        TemporalConfig(flow_side=8)


def test_cli_options_build_the_config():
    from streamrestore.cli import build_parser
    from streamrestore.cli.options import temporal_from_args
    from streamrestore.errors import UserError

    parse = lambda *extra: temporal_from_args(build_parser().parse_args(["in.mp4", *extra]))  # noqa: E731
    assert parse() == TemporalConfig()
    assert parse("--temporal-denoise", "0.5", "--temporal-strength", "0.8") == TemporalConfig(strength=0.8, denoise=0.5)
    assert parse("--no-temporal") == TemporalConfig.off()
    with pytest.raises(UserError, match="--temporal-denoise"):
        parse("--temporal-denoise", "1.2")
    assert parse("--temporal-denoise-sigma", "0") == TemporalConfig(denoise_sigma=0.0)
    with pytest.raises(UserError, match="--temporal-denoise-sigma"):
        parse("--temporal-denoise-sigma", "-1")
    assert parse("--temporal-denoise-fine", "1") == TemporalConfig(denoise_fine=1.0)
    with pytest.raises(UserError, match="--temporal-denoise-fine"):
        parse("--temporal-denoise-fine", "1.5")
    assert parse("--temporal-memory", "4") == TemporalConfig(memory=4)
    with pytest.raises(UserError, match="--temporal-memory"):
        parse("--temporal-memory", "-1")


# --- track memory --------------------------------------------------------------------------

def test_memory_settings_are_checked_and_off_turns_it_off():
    for bad in (dict(memory=-1), dict(memory_every=0), dict(memory_tolerance=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TemporalConfig(**bad)
    assert TemporalConfig().memory == 0  # off by default: it softens large faces (docs/temporal.md)
    assert TemporalConfig(strength=0.0, denoise=0.0, memory=4).enabled
    assert not TemporalConfig.off().enabled and TemporalConfig.off().memory == 0


def _still_with_jitter(sm, frames=40, jitter=4.0, seed=5):
    """A still face whose restorer adds a true change plus a per-frame jitter; the mean error of
    the last 10 outputs against input + true change."""
    rng = np.random.default_rng(seed)
    x = np.clip(_texture(96, seed) + 0.5, 0, 255).astype(np.uint8)
    d = (_texture(96, seed + 1) - 128) * 0.2
    ideal = np.clip(x + d, 0, 255)
    errors = []
    for t in range(frames):
        restored = np.clip(x + d + rng.normal(0, jitter, x.shape) + 0.5, 0, 255).astype(np.uint8)
        out = sm.smooth(1, x, restored).astype(np.float32)
        if t >= frames - 10:
            errors.append(np.abs(out - ideal).mean())
    return float(np.mean(errors))


def test_memory_steadies_a_still_face_beyond_the_one_frame_fusion():
    """The one-frame fusion leaves part of a per-frame jitter; averaging remembered frames
    removes more of it."""
    raw = _still_with_jitter(TemporalSmoother(TemporalConfig.off()))
    one_frame = _still_with_jitter(TemporalSmoother(TemporalConfig(strength=0.8, denoise=0.0, memory=0)))
    with_memory = _still_with_jitter(TemporalSmoother(TemporalConfig(strength=0.8, denoise=0.0, memory=8,
                                                                     memory_tolerance=8.0)))
    assert one_frame < raw
    assert with_memory < 0.8 * one_frame, (raw, one_frame, with_memory)


def test_memory_follows_motion_without_smearing():
    """Remembered frames are carried along the motion: a sliding face stays sharp."""
    inputs, changes = _moving_clip(24, speed=2.0)
    inner = (slice(24, 104), slice(24, 104))
    cfg = TemporalConfig(strength=0.0, denoise=0.0, memory=8, memory_every=2)
    off, ideal = _run(TemporalSmoother(TemporalConfig.off()), inputs, changes, jitter=3.0)
    sm = TemporalSmoother(cfg)
    on, _ = _run(sm, inputs, changes, jitter=3.0)
    assert len(sm._memory[1].items) == 8  # the memory was full while the face moved
    err_off = np.mean([np.abs(o - i)[inner].mean() for o, i in zip(off[12:], ideal[12:])])
    err_on = np.mean([np.abs(o - i)[inner].mean() for o, i in zip(on[12:], ideal[12:])])
    assert err_on < 0.8 * err_off, (err_on, err_off)  # less jitter, and no smear of the moving texture


def test_memory_keeps_nothing_of_a_changed_face():
    """A face that changed (here: another picture altogether) takes nothing from the memory."""
    inputs, changes = _moving_clip(12, speed=1.0)
    sm = TemporalSmoother(TemporalConfig(strength=0.0, denoise=0.0, memory=4, memory_every=1))
    for x, d in zip(inputs, changes):
        sm.smooth(1, x, np.clip(x + d + 0.5, 0, 255).astype(np.uint8))
    other = np.clip(_texture(128, 9) + 0.5, 0, 255).astype(np.uint8)
    out = sm.smooth(1, other, other)
    assert np.abs(out.astype(int) - other)[8:-8, 8:-8].mean() < 0.5


def test_memory_takes_nothing_from_outside_the_crop():
    """Where the motion brings in what a remembered frame never showed (here past its right and
    bottom edge), that frame gets (almost) no weight, and the rest of the face its full weight."""
    s = 32
    sm = TemporalSmoother(TemporalConfig(strength=0.0, denoise=0.0, memory=2, memory_every=1))
    flat = np.full((s, s, 3), 100.0, np.float32)  # a perfect match everywhere
    memory, weights = sm._recall(1, flat, None, 1.0)
    assert weights == []
    sm._remember(memory, flat, flat, 1.0)
    for step in range(3):  # each frame: the current pixel was 0.3 px further right and down
        memory, weights = sm._recall(1, flat, np.full((s, s, 2), 0.3, np.float32), 1.0)
    (w,) = weights
    assert np.all(w[:, -1] < 0.5) and np.all(w[-1, :] < 0.5)  # 0.9 px past the last pixel: mostly outside
    assert np.all(w[:-3, :-3] > 0.99)  # inside: the same picture, full weight


# --- frame-space fusion --------------------------------------------------------------------

def _fuse_clip(fusion, inputs, changes, jitter, box, seed=3, indices=None):
    """Pastes input + true change + a per-frame jitter of the restorer into each frame and lets
    ``fusion`` (None: none) fuse it; returns the outputs and the ideal ones (input + true change)."""
    from streamrestore.pixels import RgbPixels, frame_planes

    rng = np.random.default_rng(seed)
    outs, ideal = [], []
    for i, (x, d) in enumerate(zip(inputs, changes)):
        out = np.clip(x + d + rng.normal(0, jitter, x.shape) + 0.5, 0, 255).astype(np.uint8)
        if fusion is not None:
            fusion.fuse(i if indices is None else indices[i], RgbPixels(x), frame_planes(out), [(1, box)])
        outs.append(out.astype(np.float32))
        ideal.append(np.clip(x + d + 0.5, 0, 255).astype(np.float32))
    return outs, ideal


def test_frame_fusion_removes_jitter_and_follows_motion():
    from streamrestore.temporal import FrameFusion

    inputs, changes = _moving_clip(24, size=160, speed=1.5)
    box = (16, 16, 144, 144)
    inner = (slice(32, 128), slice(32, 128))  # away from the box's edge, where the motion brings in

    def error(outs, ideal):
        return np.mean([np.abs(o - i)[inner].mean() for o, i in zip(outs[8:], ideal[8:])])

    off, ideal = _fuse_clip(None, inputs, changes, 4.0, box)
    on, _ = _fuse_clip(FrameFusion(TemporalConfig()), inputs, changes, 4.0, box)
    assert error(on, ideal) < 0.6 * error(off, ideal), (error(on, ideal), error(off, ideal))
    # no ghost: without jitter the fused detail moves with the picture
    clean, ideal = _fuse_clip(FrameFusion(TemporalConfig()), inputs, changes, 0.0, box)
    assert max(np.abs(o - i)[inner].mean() for o, i in zip(clean, ideal)) < 1.0
    stale = np.mean([np.abs(p - i)[inner].mean() for p, i in zip(ideal[:-1], ideal[1:])])
    assert stale > 5.0  # what a detail left where it was would cost
    # outside the face's box nothing is touched
    raw, _ = _fuse_clip(None, inputs, changes, 4.0, box)
    for a, b in zip(on, raw):
        assert np.array_equal(a[:16], b[:16]) and np.array_equal(a[:, 144:], b[:, 144:])


def test_frame_fusion_still_works_on_a_noisy_input():
    from streamrestore.temporal import FrameFusion

    # a still face from a noisy camera (sensor noise of 3 levels, new every frame): the warp error
    # is mostly noise, which must not turn the fusion off
    scene = _texture(96, 11)
    rng = np.random.default_rng(12)
    inputs = [np.clip(scene + rng.normal(0, 3, scene.shape) + 0.5, 0, 255).astype(np.uint8) for _ in range(20)]
    changes = [np.zeros(scene.shape, np.float32)] * 20
    box = (0, 0, 96, 96)
    off, ideal = _fuse_clip(None, inputs, changes, 4.0, box)
    on, _ = _fuse_clip(FrameFusion(TemporalConfig()), inputs, changes, 4.0, box)
    error = lambda outs: np.mean([np.abs(o - i)[8:88, 8:88].mean() for o, i in zip(outs[5:], ideal[5:])])  # noqa: E731
    assert error(on) < 0.7 * error(off), (error(on), error(off))  # measured 0.58


def test_frame_fusion_takes_the_new_frame_after_a_cut_a_gap_or_an_occlusion():
    from streamrestore.pixels import RgbPixels, frame_planes
    from streamrestore.temporal import FrameFusion

    scene = _texture(128, 7)
    box = (0, 0, 128, 128)
    still = [np.clip(scene + 0.5, 0, 255).astype(np.uint8)] * 4
    zero = [np.zeros((128, 128, 3), np.float32)] * 4
    cut = np.clip(scene + 60.5, 0, 255).astype(np.uint8)  # another picture: off by tens of levels everywhere
    for frames, indices in (([*still[:3], cut], None), (still, [0, 1, 2, 4])):  # a cut; a frame without faces
        fusion = FrameFusion(TemporalConfig())
        _fuse_clip(fusion, frames[:3], zero, 4.0, box, indices=indices)
        x = frames[3]
        restored = np.clip(x + np.random.default_rng(9).normal(0, 4, x.shape) + 0.5, 0, 255).astype(np.uint8)
        out = restored.copy()
        fusion.fuse(3 if indices is None else indices[3], RgbPixels(x), frame_planes(out), [(1, box)])
        assert np.array_equal(out, restored)
    # an occlusion: where the input changed, the new frame's change; elsewhere the carried one
    fusion = FrameFusion(TemporalConfig())
    _fuse_clip(fusion, still[:3], zero, 4.0, box)
    x = still[0].copy()
    x[40:90, 40:90] = (30, 200, 60)
    restored = np.clip(x + np.random.default_rng(9).normal(0, 4, x.shape) + 0.5, 0, 255).astype(np.uint8)
    out = restored.copy()
    fusion.fuse(3, RgbPixels(x), frame_planes(out), [(1, box)])
    inside = (slice(48, 82), slice(48, 82))
    diff = np.abs(out[inside].astype(int) - restored[inside])
    # nothing of the old face (carried, it would differ by ~3 levels everywhere: the jitter; measured
    # 0.006 on average, a few pixels where the flow found a flat spot of the old face up to 4)
    assert diff.mean() < 0.05 and diff.max() <= 6, (diff.mean(), diff.max())
    assert np.abs(out[100:, 100:].astype(int) - restored[100:, 100:]).mean() > 1.5  # steadied there


def test_frame_fusion_on_4_2_0_planes_steadies_luma_and_chroma():
    import fractions

    av = pytest.importorskip("av")
    from streamrestore.pixels import Yuv420Pixels, frame_planes, yuv420_frame
    from streamrestore.temporal import FrameFusion

    rgb = np.clip(_texture(96, 3) + 0.5, 0, 255).astype(np.uint8)
    source = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    source.pts, source.time_base = 0, fractions.Fraction(1, 25)
    pixels = Yuv420Pixels(source)
    rng = np.random.default_rng(4)
    box = (9, 7, 85, 90)  # odd corners: the chroma box must still line up
    results = {}
    for name, fusion in (("off", None), ("on", FrameFusion(TemporalConfig()))):
        frames = []
        for i in range(12):
            out, views = yuv420_frame(source, pixels.planes)
            for view in views:
                view[...] = np.clip(view + rng.normal(0, 4, view.shape) + 0.5, 0, 255).astype(np.uint8)
            if fusion is not None:
                fusion.fuse(i, pixels, frame_planes(out), [(1, box)])
            frames.append([p.astype(np.float32).copy() for p, _ in frame_planes(out)])
        results[name] = frames
    for k, (y0, y1, x0, x1) in enumerate([(20, 80, 20, 80), (10, 40, 10, 40), (10, 40, 10, 40)]):
        spread = {n: np.std([f[k][y0:y1, x0:x1] for f in frames[4:]], axis=0).mean() for n, frames in results.items()}
        assert spread["on"] < 0.7 * spread["off"], (k, spread)
    # outside the box (the first rows) the frame is the jittered one as written
    on = results["on"][5][0]
    assert np.abs(on[:6] - pixels.planes[0][:6]).mean() > 2


def test_frame_fusion_settings_and_a_clean_face_costs_no_flow():
    from streamrestore.cli import build_parser
    from streamrestore.cli.options import temporal_from_args
    from streamrestore.errors import UserError
    from streamrestore.temporal import FrameFusion

    for bad in (dict(frame_strength=1.0), dict(frame_strength=-0.1), dict(frame_tolerance=0), dict(frame_flow_side=8)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TemporalConfig(**bad)
    assert TemporalConfig.off().frame_strength == 0 and not FrameFusion(TemporalConfig.off()).active
    only = TemporalConfig(strength=0.0, denoise=0.0)
    assert only.enabled and not only.crop_enabled
    parse = lambda *extra: temporal_from_args(build_parser().parse_args(["in.mp4", *extra]))  # noqa: E731
    assert parse("--temporal-frame-strength", "0") == TemporalConfig(frame_strength=0.0)
    assert parse("--temporal-frame-tolerance", "5") == TemporalConfig(frame_tolerance=5.0)
    with pytest.raises(UserError, match="--temporal-frame-strength"):
        parse("--temporal-frame-strength", "1")
    fusion = FrameFusion(TemporalConfig())
    inputs, _ = _moving_clip(4, size=64)
    _fuse_clip(fusion, inputs, [np.zeros((64, 64, 3), np.float32)] * 4, 0.0, (0, 0, 64, 64))
    assert fusion._dis is None  # nothing changed, nothing carried: no flow measured
