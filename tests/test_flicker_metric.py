"""E_warp (flicker with the input's flow) and per-track identity spread."""
import math

import cv2
import numpy as np
import pytest

from streamrestore.eval.flicker_metric import IdentitySpread, WarpError, e_warp, identity_spread


def _moving(frames=6, size=96, speed=1.0, seed=0):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (2 * size, 2 * size, 3)).astype(np.float32), (0, 0), 2.0)
    scene = np.clip(128 + 50 * noise / noise.std(), 0, 255)
    out = []
    for t in range(frames):
        m = np.float32([[1, 0, -size // 2 - speed * t], [0, 1, -size // 2]])
        out.append(np.clip(cv2.warpAffine(scene, m, (size, size)) + 0.5, 0, 255).astype(np.uint8))
    return out


def test_still_video_has_no_flicker_and_noise_adds_some():
    still = [_moving(1)[0]] * 5
    value, pairs = e_warp(still)
    assert pairs == 4 and value == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(1)
    noisy = [np.clip(f + rng.normal(0, 5, f.shape), 0, 255).astype(np.uint8) for f in still]
    flicker, _ = e_warp(still, noisy)
    # two independent noises of sigma 5 levels, three channels: 2 * 3 * (5/255)^2 * 1e3 ~ 2.3
    assert 1.8 < flicker < 2.8


def test_motion_is_compensated_by_the_reference_flow():
    frames = _moving(6)
    meter = WarpError(candidates=2)
    for f in frames:
        meter.add(f, [f, np.roll(f, 0, axis=0)])
    assert meter.pairs == 5
    assert meter.value(0) < 0.5  # a sliding texture: the flow explains it
    # without motion compensation the same clip would score far higher
    raw = np.mean([((a / 255.0 - b / 255.0) ** 2).sum(axis=2).mean() for a, b in zip(frames[1:], frames[:-1])])
    assert meter.value(0) < 0.1 * 1e3 * raw


def test_identity_spread_per_track():
    spread = IdentitySpread(reference=np.array([[1.0, 0.0], [1.0, 0.0]]))
    for angle in (0.0, 0.2, 0.4):
        spread.add_embedding(1, np.array([math.cos(angle), math.sin(angle)]))
    spread.add(2, 0.5)
    rows = spread.per_track()
    assert set(rows) == {1}  # one frame is not a spread
    cosines = [math.cos(a) for a in (0.0, 0.2, 0.4)]
    assert rows[1]["std"] == pytest.approx(np.std(cosines)) and rows[1]["frames"] == 3
    assert spread.spread() == pytest.approx(np.std(cosines))
    assert identity_spread({7: [0.6, 0.6, 0.6]})[7]["std"] == 0.0
    with pytest.raises(ValueError):
        IdentitySpread().add_embedding(1, np.ones(2))
