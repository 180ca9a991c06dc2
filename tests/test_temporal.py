import numpy as np
import pytest

from streamrestore.temporal import TemporalConfig, TemporalSmoother


def test_still_input_reduces_output_flicker():
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sm = TemporalSmoother(TemporalConfig(strength=0.6))
    outs = []
    for _ in range(20):
        flicker = (still.astype(int) + rng.integers(-6, 7, still.shape)).clip(0, 255).astype(np.uint8)
        outs.append(sm.smooth(1, still, flicker).astype(float))
    raw_step = 4.0  # E|a-b| for independent uniform(-6,6) integer noise is ~4.3
    smooth_step = np.mean([np.abs(a - b).mean() for a, b in zip(outs[5:], outs[6:])])
    assert smooth_step < 0.6 * raw_step


def test_changed_input_is_followed():
    sm = TemporalSmoother(TemporalConfig(strength=0.6, tolerance=6))
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
    sm = TemporalSmoother(TemporalConfig(strength=0.0))
    sm.smooth(1, a, a)
    b = np.full_like(a, 9)
    assert np.array_equal(sm.smooth(1, a, b), b)
    with pytest.raises(ValueError, match="strength"):
        TemporalConfig(strength=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        TemporalConfig(tolerance=0)
