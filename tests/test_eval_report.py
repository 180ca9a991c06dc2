import json
import math

import numpy as np
import pytest

from streamrestore.cli import main as cli_main
from streamrestore.eval.metrics import psnr
from streamrestore.eval.report import format_table, json_rows, make_grid
from streamrestore.eval.run import METHODS, EvalConfig, bicubic_baseline, load_cases

KEYS = ("psnr", "ssim", "id_mobilefacenet", "id_paddle", "id_dlib", "lmd")


@pytest.fixture(scope="module")
def eval_run(shared_data, shared_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--data", str(shared_data / "instantrestore"), "--limit", "2", "--model", "identity",
            "--out", str(out / "report"), "--json", str(out / "table.json"), "--models", str(shared_models),
            "--reference-detail", "0",  # the model alone
            "--preset", "mild",  # (which this layout, with its own degraded photos, does not take: said, not named)
            "--progress", "lines"]
    import contextlib
    import io

    import streamrestore.run as run_module

    said = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(said):
        patch.setattr(run_module, "PROGRESS_INTERVAL", 0.0)
        assert cli_main(argv) == 0
    (out / "stderr.txt").write_text(said.getvalue())
    return out


def test_eval_says_its_progress_and_a_preset_it_does_not_use(eval_run):
    said = (eval_run / "stderr.txt").read_text()
    assert "progress: 1/2 people" in said and "progress: 2/2 people (100%)" in said, said
    assert "--preset mild does not apply to " in said


def test_eval_writes_table_grid_and_json(eval_run):
    table = json.loads((eval_run / "table.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == list(METHODS)
    for method, row in rows.items():
        assert row["n"] == 2
        for key in KEYS:
            assert row[key] is not None and math.isfinite(row[key]), (method, key)
        assert 5 < row["psnr"] < 60 and 0 < row["ssim"] < 1
        assert -1 <= row["id_paddle"] <= 1
    # the identity model changes nothing, whatever references it gets
    for method in ("model_norefs", "model_refs1", "model_refs4", "model_refs4_other"):
        assert rows[method]["psnr"] == pytest.approx(rows["input"]["psnr"])
        assert rows[method]["id_paddle"] == pytest.approx(rows["input"]["id_paddle"])
    assert rows["bicubic"]["psnr"] != pytest.approx(rows["input"]["psnr"], abs=1e-6)
    # how the table was made, as eval --video's record says it (a class could not tell which settings gave one)
    from streamrestore import __version__

    assert table["version"] == __version__ and table["model_sha256"] is None  # (identity: no file)
    assert table["degradation"] is None and table["limit"] == 2 and table["reference_detail"]["strength"] == 0
    report = (eval_run / "report" / "eval.md").read_text()
    assert "none: the set's own degraded.png" in report and "preset mild" not in report
    for method in METHODS:
        assert f"| {method} |" in report
    assert "00001 / model_refs4" in report  # per-image table
    import cv2

    grid = cv2.imread(str(eval_run / "report" / "grid.png"))
    assert grid is not None and grid.shape[0] > 2 * 100 and grid.shape[1] >= 4 * 100  # 2 people x 4 columns


def test_eval_adds_the_reference_detail_to_the_rows_with_references(shared_data, shared_models, tmp_path):
    table = tmp_path / "table.json"
    argv = ["eval", "--data", str(shared_data / "instantrestore"), "--limit", "2", "--model", "identity",
            "--out", str(tmp_path / "report"), "--json", str(table), "--models", str(shared_models), "--no-dlib"]
    assert cli_main(argv) == 0
    rows = {r["method"]: r for r in json.loads(table.read_text())["rows"]}
    assert rows["model_norefs"]["psnr"] == pytest.approx(rows["input"]["psnr"])  # nothing to register
    for method in ("model_refs1", "model_refs4", "model_refs4_other"):
        assert rows[method]["psnr"] != pytest.approx(rows["input"]["psnr"], abs=1e-3), method


def _drawn_test_layout(folder):
    """Three cases in the InstantRestore test layout (``<id>/gt.png``, ``degraded.png``,
    ``conditioning/*.png``) of drawn people: FFHQ-aligned 512 px faces."""
    import cv2
    from synthetic_faces import aligned_face

    from streamrestore.data.degrade import degrade

    for index, person in enumerate(("ann", "ben", "cal")):
        case = folder / f"{index + 1:05d}"
        (case / "conditioning").mkdir(parents=True)
        gt = aligned_face(person, 512)
        cv2.imwrite(str(case / "gt.png"), gt[:, :, ::-1])
        cv2.imwrite(str(case / "degraded.png"), degrade(gt, "moderate", seed=index)[:, :, ::-1])
        for variant in range(1, 5):
            cv2.imwrite(str(case / "conditioning" / f"{variant}.png"), aligned_face(person, 512, variant)[:, :, ::-1])
    return folder


@pytest.fixture(params=["synthetic", "real"])
def layout_folder(request, tmp_path):
    """A folder in the test layout: drawn cases (always) or the shared demo set."""
    if request.param == "synthetic":
        return _drawn_test_layout(tmp_path / "drawn")
    return request.getfixturevalue("shared_data") / "instantrestore"


def test_eval_without_models_is_a_user_error(layout_folder, tmp_path, capsys, monkeypatch):
    code = cli_main(["eval", "--data", str(layout_folder), "--models", str(tmp_path / "none"),
                     "--model", "identity", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--models" in capsys.readouterr().err
    # no --models and no STREAMRESTORE_MODELS: the shared folder is not guessed
    monkeypatch.delenv("STREAMRESTORE_MODELS", raising=False)
    code = cli_main(["eval", "--data", str(layout_folder), "--model", "identity", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--models DIR" in err and "STREAMRESTORE_MODELS" in err and "Traceback" not in err
    monkeypatch.setenv("STREAMRESTORE_MODELS", str(tmp_path / "none"))
    code = cli_main(["eval", "--data", str(layout_folder), "--model", "identity", "--out", str(tmp_path / "o")])
    assert code == 2 and str(tmp_path / "none") in capsys.readouterr().err
    assert cli_main(["eval", "--data", str(tmp_path / "missing"), "--model", "identity"]) == 2


def test_cases_from_the_test_layout(layout_folder):
    cases = load_cases(layout_folder, EvalConfig(limit=3))
    assert [c.name for c in cases] == sorted(c.name for c in cases) and len(cases) == 3
    for case in cases:
        assert case.degraded.shape == case.ground_truth.shape == (512, 512, 3)
        assert len(case.references) >= 4
        # the references are other photos, not the ground truth
        assert all(psnr(ref, case.ground_truth) < 40 for ref in case.references)


def test_bicubic_baseline_smooths_noise():
    rng = np.random.default_rng(0)
    clean = np.full((64, 64, 3), 120, np.uint8)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    out = bicubic_baseline(noisy, 4)
    assert out.shape == noisy.shape and out.dtype == np.uint8
    assert psnr(out, clean) > psnr(noisy, clean) + 6


def test_report_helpers():
    rows = [{"method": "input", "psnr": 20.0, "ssim": 0.5, "id_mobilefacenet": 0.3, "id_paddle": float("nan"),
             "id_dlib": 0.9, "lmd": float("nan"), "n": 1}]
    assert json_rows(rows)[0]["id_paddle"] is None and json_rows(rows)[0]["psnr"] == 20.0
    json.dumps(json_rows(rows), allow_nan=False)  # valid JSON
    table = format_table(rows)
    assert "| input | 20.00 | 0.5000 |" in table and "–" in table
    tiles = {"a": {"x": np.zeros((32, 32, 3), np.uint8), "y": np.full((64, 64, 3), 255, np.uint8)},
             "b": {"x": np.zeros((16, 16, 3), np.uint8), "y": np.zeros((16, 16, 3), np.uint8)}}
    grid = make_grid(tiles, tile=40, label_height=10)
    assert grid.shape == (10 + 2 * 50, 80, 3)
    assert grid[20:60, 40:80].min() == 255 and grid[20:60, 0:40].max() == 0


def test_eval_runs_the_model_at_the_crop_resolution(shared_data, shared_models, tmp_path):
    """``--crop-resolution`` on the photo set, as on video: lite sees the crops shrunk to its 128 px
    and its change is enlarged onto the 256-px crop (so the output differs from lite at 128)."""
    rows = {}
    for crop in (None, 256):
        table = tmp_path / f"table_{crop}.json"
        argv = ["eval", "--data", str(shared_data / "instantrestore"), "--limit", "1", "--model", "lite",
                "--out", str(tmp_path / f"report_{crop}"), "--json", str(table), "--models", str(shared_models),
                "--no-dlib", "--reference-detail", "0", "--backend", "eager"]
        if crop is not None:
            argv += ["--crop-resolution", str(crop)]
        assert cli_main(argv) == 0
        facts = json.loads(table.read_text())
        assert facts["resolution"] == (crop or 128)
        assert (facts["backend"], facts["device"]) == ("eager", "cpu")  # (what ran; "auto" asked said nothing)
        assert facts["asked"] == {"device": "auto", "backend": "eager"} and facts["model_sha256"]
        rows[crop] = {r["method"]: r for r in facts["rows"]}
    assert rows[256]["input"]["psnr"] == pytest.approx(rows[None]["input"]["psnr"])
    assert rows[256]["model_norefs"]["psnr"] != pytest.approx(rows[None]["model_norefs"]["psnr"], abs=1e-3)
    assert rows[256]["model_norefs"]["psnr"] > rows[256]["input"]["psnr"]  # lite still restores
