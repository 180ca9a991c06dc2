"""``streamrestore bench`` on a short clip (drawn face, and a shared one): identity model and a
tiny network."""
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from streamrestore.bench import BenchResult, BenchRow, run_bench
from streamrestore.cli import main
from streamrestore.temporal import TemporalConfig

CLIP = "pcavs/Input/00002.mp4"  # 224x224 talking head, one face


@dataclass
class BenchMedia:
    clip: Path
    refs: Path
    face_models: Path | None  # None: the drawn-face detector (synthetic_faces fixture)

    def face_args(self) -> list[str]:
        return [] if self.face_models is None else ["--face-models", str(self.face_models)]


@pytest.fixture(params=["synthetic", "real"])
def media(request, tmp_path):
    """A 224x224 clip of one face with reference photos of that person: drawn (drawn-face
    detector) or shared (SCRFD pack)."""
    if request.param == "synthetic":
        from media_utils import make_face_clip

        request.getfixturevalue("synthetic_faces")
        clip = tmp_path / "drawn.mp4"
        make_face_clip(clip, width=224, height=224, frames=16)
        return BenchMedia(clip, request.getfixturevalue("synthetic_refs"), None)
    shared_data = request.getfixturevalue("shared_data")
    return BenchMedia(shared_data / CLIP, request.getfixturevalue("refs"),
                      request.getfixturevalue("shared_models") / "insightface")


def test_bench_cli_identity_writes_table_and_json(tmp_path, media, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(media.clip), "--refs", str(media.refs), "--model", "identity", "--resolution", "128",
                 *media.face_args(), "--frames", "6", "--warmup-frames", "2", "--json", str(out)])
    assert code == 0
    said = capsys.readouterr()
    table = said.out
    assert "ms/frame" in table and "end to end" in table and "decode+encode alone" in table
    # each step is said as it starts (a backend's build and the flicker pass take tens of seconds)
    steps = [line.split("bench: ", 1)[1] for line in said.err.splitlines() if "bench: " in line]
    assert steps[:3] == ["decoding and encoding the clip as it is (the baseline)",
                         "eager: building and warming up on 2 frames", "eager: timing 6 frames"], steps
    assert re.fullmatch(r"eager [\d.]+ fps over 6 frames", steps[3]), steps
    assert steps[4:] == ["eager: measuring the output's flicker (optical flow over 6 frames)"], steps
    data = json.loads(out.read_text())
    assert data["fps"] > 0 and data["backend"] == "eager" and data["device"].startswith("cpu")
    stages = {r["stage"] for r in data["rows"]}
    assert {"decode", "detect", "align", "restore", "paste", "encode", "end to end"} <= stages
    assert all(r["backend"] == "eager" and r["ms_per_frame"] >= 0 for r in data["rows"])
    assert data["frames"] == 6 and data["faces_per_frame"] > 0.5  # the face was found and restored
    end_to_end = next(r["ms_per_frame"] for r in data["rows"] if r["stage"] == "end to end")
    assert data["fps"] == pytest.approx(1000.0 / end_to_end, rel=0.01)
    # flicker of the output (E_warp with the input's flow) next to the input's own
    assert "flicker" in table and data["input_flicker"] > 0 and data["flicker_by_backend"]["eager"] > 0
    # and of the clip only decoded and encoded again: what the encoder alone adds
    assert data["reencoded_flicker"] > 0 and f"without restoring {data['reencoded_flicker']:.3f}" in table
    assert "temporal" in stages and data["temporal"]["strength"] == TemporalConfig().strength  # the default


def test_bench_temporal_strength_option(tmp_path, media, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(media.clip), "--refs", str(media.refs), "--model", "identity", "--resolution", "128",
                 *media.face_args(), "--frames", "3", "--warmup-frames", "0",
                 "--temporal-strength", "0", "--no-flicker", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["temporal"]["strength"] == 0 and data["input_flicker"] is None and not data["flicker_by_backend"]
    assert data["reencoded_flicker"] is None
    code = main(["bench", str(media.clip), "--model", "identity", "--temporal-strength", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "--temporal-strength" in err and "Traceback" not in err


def test_bench_tiny_network_eager(media):
    from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config

    torch.manual_seed(0)
    restorer = InstantRestorer(InstantRestoreNet(tiny_config()), device="cpu", dtype=torch.float32, name="tiny")
    result = run_bench(media.clip, [str(media.refs)], model=restorer, backends=["eager"], frames=4,
                       warmup_frames=1, face_models=media.face_models)
    assert result.backend == "eager" and result.model == "tiny" and result.frames == 4
    restore = [r for r in result.rows if r.stage == "restore"]
    assert len(restore) == 1 and restore[0].ms_per_frame > 0
    assert result.startup_s["eager"]["references_s"] > 0  # references were encoded through the backend
    assert result.faces_per_frame > 0.5


def test_bench_compares_two_backends_in_one_run(tmp_path, media, monkeypatch):
    """``--backend`` repeated: both run on the same clip, side by side (the tiny network keeps the
    ONNX export quick)."""
    from streamrestore import bench
    from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config

    torch.manual_seed(0)
    tiny = InstantRestorer(InstantRestoreNet(tiny_config()), device="cpu", dtype=torch.float32, name="tiny")
    monkeypatch.setattr(bench, "_load", lambda *args: tiny)
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))  # the ONNX program's cache
    out = tmp_path / "bench.json"
    code = main(["bench", str(media.clip), "--refs", str(media.refs), *media.face_args(), "--frames", "3",
                 "--warmup-frames", "1", "--no-flicker", "--backend", "eager", "--backend", "onnxruntime",
                 "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    restore = {r["backend"]: r["ms_per_frame"] for r in rows if r["stage"] == "restore"}
    assert set(restore) == {"eager", "onnxruntime"} and min(restore.values()) > 0
    assert list((tmp_path / "cache" / "engines").glob("tiny-*.onnx"))


def test_bench_rejects_unknown_backend_and_missing_clip(tmp_path, capsys):
    code = main(["bench", str(tmp_path / "missing.mp4"), "--model", "identity"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.mp4" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["bench", str(tmp_path / "missing.mp4"), "--backend", "onnx"])
    code = main(["bench", str(tmp_path / "missing.mp4"), "--frames", "0"])
    assert code == 2
    capsys.readouterr()
    # said before the clip is read (it is missing here): the run would end without its results
    for argv, words in ((["--resolution", "7"], "--resolution must be at least 8, got 7"),
                        (["--json", str(tmp_path)], "is a folder; give a file name"),
                        # (it wrote a file named "-", where the main command's --json - is standard output)
                        (["--json", "-"], "--json -: this command prints its table on standard output")):
        assert main(["bench", str(tmp_path / "missing.mp4"), "--model", "identity", *argv]) == 2
        assert words in capsys.readouterr().err


def test_a_json_file_that_is_an_input_or_a_video_is_refused_before_any_work(tmp_path, capsys):
    """``eval --video ev.mp4 --json ev.mp4`` replaced the video with its figures (the main command refused)."""
    clip, other = tmp_path / "clip.mp4", tmp_path / "other.mov"
    for video in (clip, other):
        video.write_bytes(b"not read: the --json path is checked first")
    table = tmp_path / "table.json"
    table.write_text("{}")
    for command in (["bench", str(clip)], ["eval", "--video", str(clip)]):
        assert main([*command, "--json", str(clip)]) == 2
        assert f"--json {clip} is this command's input {clip}; give the figures a file of their own" in \
            capsys.readouterr().err
        assert main([*command, "--json", str(other)]) == 2
        assert "is a video, which the figures would replace" in capsys.readouterr().err
        assert clip.read_bytes() == other.read_bytes() == b"not read: the --json path is checked first"
    link = tmp_path / "link.json"
    link.symlink_to(clip)
    assert main(["eval", "--video", str(other), "--json", str(link)]) == 2  # (through a link too)
    assert "is a video, which the figures would replace" in capsys.readouterr().err
    # a figures file of an earlier run is replaced, complete or not at all
    from streamrestore.eval.report import write_json

    write_json(table, [{"method": "input", "psnr": 30.0}])
    assert '"psnr": 30.0' in table.read_text() and sorted(p.name for p in tmp_path.iterdir()) == \
        ["clip.mp4", "link.json", "other.mov", "table.json"]


def test_table_lists_backends_side_by_side():
    rows = [BenchRow("restore", "eager", 40.0), BenchRow("restore", "compile", 10.0),
            BenchRow("end to end", "eager", 50.0), BenchRow("end to end", "compile", 20.0),
            BenchRow("decode", "eager", 2.0)]
    result = BenchResult(fps=50.0, device="cpu", backend="compile", rows=rows,
                         fps_by_backend={"eager": 20.0, "compile": 50.0}, decode_encode_fps=100.0)
    lines = result.table().splitlines()
    header = next(line for line in lines if line.startswith("ms/frame"))
    assert header.index("eager") < header.index("compile")
    decode = next(line for line in lines if line.startswith("decode "))
    assert decode.split()[1:] == ["2.00", "-"]
    assert lines.index(decode) < lines.index(next(line for line in lines if line.startswith("restore")))
    assert "2.00x" in lines[-1]
    assert json.loads(json.dumps(result.to_json()))["rows"][0] == {"stage": "restore", "backend": "eager",
                                                                   "ms_per_frame": 40.0}


def test_random_paper_model_is_the_paper_network_with_random_weights(monkeypatch, caplog):
    """`--model random-paper` (timing without the official files) builds whatever paper_config
    describes; a tiny stand-in keeps the test small."""
    from streamrestore.model import registry, tiny_config

    monkeypatch.setattr(registry, "paper_config", lambda: tiny_config())
    with caplog.at_level("WARNING", logger="streamrestore"):
        restorer = registry.load_model(registry.RANDOM_PAPER, device="cpu")
    assert restorer.name == "random-paper" and "RANDOM weights" in caplog.text
    assert restorer.net.config.to_json() == tiny_config().to_json()
    faces = torch.rand(1, 3, restorer.resolution, restorer.resolution)
    assert torch.isfinite(restorer.restore(faces, [None])).all()


def test_bench_takes_the_main_commands_settings_that_change_the_cost(tmp_path, media, monkeypatch):
    """--detect-every, --max-faces and --reference-detail reach the pipeline timed (a run of the main
    command with them costs what bench then says), checked as the main command checks them."""
    from streamrestore import bench

    seen = {}
    real = bench._fresh

    def recording(template, restorer, fps):
        seen["config"] = template.config
        return real(template, restorer, fps)

    monkeypatch.setattr(bench, "_fresh", recording)
    code = main(["bench", str(media.clip), "--model", "identity", "--resolution", "64", *media.face_args(),
                 "--frames", "2", "--warmup-frames", "0", "--no-flicker", "--detect-every", "1", "--max-faces", "2",
                 "--reference-detail", "0"])
    assert code == 0
    config = seen["config"]
    assert (config.detect_every, config.max_faces, config.reference_detail.strength) == (1, 2, 0.0)
    assert main(["bench", str(media.clip), "--detect-every", "0"]) == 2
