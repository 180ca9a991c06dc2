"""HDR video's faces seen in SDR (``streamrestore.hdr``): the mapping BT.2408 places SDR in HDR
with, and back; which frames it applies to. The pipeline's use is in test_pipeline.py
(``test_an_hdr_frames_faces_are_restored_as_sdr_faces_and_their_change_coded_back``)."""
import av
import numpy as np
import pytest

from streamrestore.hdr import TRC_HLG, TRC_PQ, HdrTransfer, SdrView, hdr_transfer, sdr_view, to_sdr_picture
from streamrestore.pixels import pixels_of


def _grey(level: int) -> np.ndarray:
    return np.full((1, 1, 3), level, np.uint8)


def test_sdr_white_lands_on_the_hdr_reference_white():
    """BT.2408: SDR white at PQ's 203 cd/m² (signal 0.5806) and at HLG's 75 % signal."""
    assert HdrTransfer("pq").to_coded(_grey(255)).ravel() == pytest.approx([0.5806 * 255] * 3, abs=0.1)
    assert HdrTransfer("hlg").to_coded(_grey(255)).ravel() == pytest.approx([0.75 * 255] * 3, abs=0.1)
    assert HdrTransfer("pq").to_coded(_grey(0)).ravel() == pytest.approx([0.0] * 3, abs=0.1)
    with pytest.raises(ValueError, match="curve must be 'pq' or 'hlg', got 'sdr'"):
        HdrTransfer("sdr")


@pytest.mark.parametrize("curve", ["pq", "hlg"])
def test_a_face_coded_as_hdr_maps_back_to_itself(curve):
    """Skin-like SDR colours coded as HDR (at 10-bit precision) map back within a level; highlights
    above SDR white are clipped to white, not wrapped."""
    transfer = HdrTransfer(curve)
    rng = np.random.default_rng(0)
    skin = np.clip(rng.normal((190, 140, 120), 30, (64, 64, 3)), 0, 255).astype(np.uint8)
    coded = transfer.to_coded(skin)
    assert np.abs(transfer.to_sdr(np.round(coded * 4) / 4).astype(int) - skin).max() <= 1
    assert np.abs(transfer.to_sdr(np.rint(coded).astype(np.uint8)).astype(int) - skin).mean() < 1.5  # 8-bit codes
    assert transfer.to_sdr(np.full((1, 1, 3), 250.0, np.float32)).ravel().tolist() == [255] * 3


@pytest.mark.parametrize("curve", ["pq", "hlg"])
def test_a_change_made_in_sdr_is_coded_back_and_nothing_else_moves(curve):
    transfer = HdrTransfer(curve)
    rng = np.random.default_rng(1)
    skin = np.clip(rng.normal((170, 120, 100), 30, (32, 32, 3)), 0, 230).astype(np.uint8)
    coded = np.rint(transfer.to_coded(skin)).astype(np.uint8)
    before = transfer.to_sdr(coded)
    assert np.array_equal(transfer.coded_change(coded, before, before), coded)  # (a round trip would move them)
    after = before.copy()
    after[:16] = np.clip(after[:16].astype(int) + 12, 0, 255)
    out = transfer.coded_change(coded, before, after)
    assert np.array_equal(out[16:], coded[16:])
    shown = transfer.to_sdr(out[:16]).astype(int) - before[:16]
    assert 10 <= shown.mean() <= 14
    dark = np.full((1, 1, 3), 3, np.uint8)  # a change below black is clipped, not mirrored (|x| gave 1)
    assert transfer.coded_change(dark, transfer.to_sdr(dark), np.zeros_like(dark)).ravel().tolist() == [0, 0, 0]


def _frame(trc: int, primaries: int = 9, fmt: str = "yuv420p10le"):
    frame = av.VideoFrame(64, 48, fmt)
    for plane in frame.planes:
        np.frombuffer(plane, np.uint16 if "10" in fmt else np.uint8)[:] = 300 if "10" in fmt else 120
    frame.color_trc, frame.color_primaries, frame.colorspace, frame.color_range = trc, primaries, 9, 1
    return frame


def test_which_frames_are_seen_through_sdr():
    assert hdr_transfer(_frame(TRC_PQ)) == HdrTransfer("pq")
    assert hdr_transfer(_frame(TRC_HLG)) == HdrTransfer("hlg")
    assert hdr_transfer(_frame(TRC_HLG, primaries=1)) == HdrTransfer("hlg", bt2020=False)
    assert hdr_transfer(_frame(1)) is None and hdr_transfer(np.zeros((4, 4, 3), np.uint8)) is None
    sdr = pixels_of(_frame(1))
    assert sdr_view(sdr) is sdr
    hdr = sdr_view(pixels_of(_frame(TRC_HLG)))
    assert isinstance(hdr, SdrView) and hdr.shape == (48, 64, 3)
    eight = sdr_view(pixels_of(_frame(TRC_PQ, fmt="yuv420p")))  # (8-bit HDR: read from its own planes)
    assert isinstance(eight, SdrView) and eight.region(0, 0, 8, 8).shape == (8, 8, 3)


def test_an_hdr_frame_is_read_in_sdr_at_its_own_depth():
    """Read from the 10-bit planes, an HDR frame's SDR picture has no 8-bit steps: a smooth ramp
    of 10-bit luma stays a ramp of as many SDR levels as it spans (through the 8-bit copy a PQ
    face's SDR range spans 148 codes, and steps of ~2 levels showed)."""
    frame = _frame(TRC_PQ)
    luma = np.frombuffer(frame.planes[0], np.uint16).reshape(-1, frame.planes[0].line_size // 2)[:48, :64]
    luma[...] = np.arange(400, 464, dtype=np.uint16)[None, :]  # one 10-bit step a pixel (~50 to ~75 cd/m²)
    view = sdr_view(pixels_of(frame))
    deep_steps = np.unique(view.region(0, 0, 64, 48)[24, :, 1]).size
    coarse_steps = np.unique(view.transfer.to_sdr(view.pixels.region(0, 0, 64, 48))[24, :, 1]).size
    assert deep_steps > 1.3 * coarse_steps
    assert np.all(np.diff(view.region(0, 0, 64, 48)[24, :, 1].astype(int)) >= 0)
    assert view.full().shape == (48, 64, 3) and view.resized(32, 24).shape == (24, 32, 3)
    assert view.gray(32, 24).shape == (24, 32)


def test_a_reference_videos_hdr_frames_are_seen_in_sdr():
    frame = _frame(TRC_HLG)
    coded = np.full((48, 64, 3), 150, np.uint8)
    assert np.array_equal(to_sdr_picture(frame, coded), HdrTransfer("hlg").to_sdr(coded))
    assert to_sdr_picture(_frame(1), coded) is coded


def test_live_mode_shows_restores_and_sends_an_hdr_source_in_sdr(tmp_path):
    """Live outputs and the window are SDR: an HLG file played live came out with its pale coded values
    shown as SDR, and its faces were restored in them."""
    import threading

    from media_utils import make_clip

    from streamrestore.live.sources import FileSource
    from streamrestore.video.reader import upright_rgb

    make_clip(tmp_path / "hlg.mp4", frames=3, color={"color_trc": TRC_HLG, "color_primaries": 9, "colorspace": 9})
    source = FileSource(str(tmp_path / "hlg.mp4"), realtime=False)
    try:
        live = next(iter(source.frames(threading.Event())))
        coded = upright_rgb(live.payload)
        assert np.array_equal(live.rgb(), HdrTransfer("hlg").to_sdr(coded))
        assert np.abs(live.rgb().astype(int) - coded).mean() > 10
    finally:
        source.close()

