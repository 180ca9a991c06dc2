"""benchmarks/video_benchmark.py: the degraded copies it keeps (--degraded-dir) are made once and reused."""
import json
from pathlib import Path

from media_utils import make_clip
from script_utils import load_script

import streamrestore.cli
import streamrestore.eval.video as video_eval


def _benchmark_module():
    return load_script("benchmarks/video_benchmark.py")


def test_degraded_copies_are_made_once_and_reused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "data" / "refs").mkdir(parents=True)
    (shared / "models").mkdir()
    make_clip(shared / "data" / "clip.mp4", width=96, height=64, frames=8, fps=25)
    config = tmp_path / "bench.toml"
    config.write_text('[benchmark]\ndegrade = ["default"]\nmax_frames = 6\n\n'
                      '[[clip]]\nname = "one"\nvideo = "data/clip.mp4"\nrefs = "data/refs"\n')
    calls = []

    def fake_eval(argv):  # records what the benchmark asked for, answers with a one-row table
        calls.append(list(argv))
        table = Path(argv[argv.index("--json") + 1])
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(json.dumps({"rows": [{"method": "input", "psnr": 30.0}]}))
        return 0

    degrades = []
    real_degrade = video_eval.degrade_video

    def counted_degrade(*args, **kwargs):
        degrades.append(args)
        return real_degrade(*args, **kwargs)

    monkeypatch.setattr(streamrestore.cli, "main", fake_eval)
    monkeypatch.setattr(video_eval, "degrade_video", counted_degrade)
    bench = _benchmark_module()
    kept = tmp_path / "kept"
    common = ["--config", str(config), "--shared", str(shared), "--degraded-dir", str(kept)]

    assert bench.main(common + ["--out", str(tmp_path / "a")]) == 0
    copy = kept / "one_default_6.mp4"
    assert copy.is_file() and len(degrades) == 1
    first = calls[-1]
    assert first[first.index("--degraded") + 1] == str(copy) and "--degrade" not in first
    assert first[first.index("--max-frames") + 1] == "6"
    made = copy.stat().st_mtime_ns

    assert bench.main(common + ["--out", str(tmp_path / "b"), "--model", "other"]) == 0
    assert len(degrades) == 1  # not degraded again
    assert copy.stat().st_mtime_ns == made
    assert calls[-1][calls[-1].index("--degraded") + 1] == str(copy)
    assert list(kept.iterdir()) == [copy]  # no partial file left behind

    # without --degraded-dir every run degrades for itself, as before
    assert bench.main(["--config", str(config), "--shared", str(shared), "--out", str(tmp_path / "c")]) == 0
    assert "--degraded" not in calls[-1] and calls[-1][calls[-1].index("--degrade") + 1] == "default"


def test_references_from_a_span_of_a_clip(tmp_path):
    import cv2
    import numpy as np
    import pytest

    def picture(i):  # frame i is uniformly grey level 10 * i: the kept frames say which they were
        return np.full((64, 96, 3), 10 * i, np.uint8)

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=20, picture=picture, options={"crf": "0"})
    bench = _benchmark_module()
    second_half = bench.frames_of_other_clip(clip, 4, tmp_path / "half", (0.5, 1.0))
    names = sorted(p.name for p in second_half.glob("*.png"))
    assert names == ["frame_00011.png", "frame_00013.png", "frame_00016.png", "frame_00018.png"]
    assert abs(float(cv2.imread(str(second_half / names[0])).mean()) - 110) < 3
    whole = bench.frames_of_other_clip(clip, 4, tmp_path / "whole")
    assert sorted(p.name for p in whole.glob("*.png"))[0] == "frame_00002.png"
    # the same folder asked for another span is made again, not reused
    again = bench.frames_of_other_clip(clip, 4, tmp_path / "half", (0.0, 0.5))
    assert sorted(p.name for p in again.glob("*.png"))[-1] == "frame_00008.png"
    with pytest.raises(ValueError, match="refs_span"):
        bench.frames_of_other_clip(clip, 4, tmp_path / "bad", (0.6, 0.4))
