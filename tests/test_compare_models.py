"""benchmarks/compare_models.py: each model's rows against the restorer's acceptance bars."""
import json

from script_utils import load_script


def _compare_module():
    return load_script("benchmarks/compare_models.py")


def _row(clip, method, psnr, id_gt, id_std, ewarp, ewarp_input=None):
    row = {"clip": clip, "degradation": "default", "method": method, "psnr": psnr, "id_gt": id_gt,
           "id_std": id_std, "ewarp": ewarp}
    if ewarp_input is not None:  # tables written before eval measured it lack the key
        row["ewarp_input"] = ewarp_input
    return row


def test_marks_each_bar_met_or_missed(tmp_path, capsys):
    video = tmp_path / "vb" / "m"
    video.mkdir(parents=True)
    rows = [_row("good", "input", 30.0, 0.50, 0.040, 1.0, 0.5), _row("good", "model_norefs", 30.3, 0.51, 0.03, 1.0),
            _row("good", "model_refs", 30.6, 0.54, 0.030, 1.1, 0.55),
            # 0.4 dB, +0.02 identity, refs below norefs, spread up, flicker 1.2x and 1.3x: every bar missed
            _row("bad", "input", 30.0, 0.50, 0.040, 1.0, 0.5), _row("bad", "model_norefs", 30.3, 0.53, 0.03, 1.0),
            _row("bad", "model_refs", 30.4, 0.52, 0.050, 1.2, 0.65),
            # no face measured: eval writes NaN as null, and the table says so instead of failing
            _row("empty", "input", 30.0, None, None, 1.0), _row("empty", "model_refs", 30.6, None, None, 1.0)]
    (video / "table.json").write_text(json.dumps({"model": "m", "rows": rows}))
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"rows": [
        {"method": "input", "psnr": 22.0, "id_paddle": 0.40}, {"method": "model_norefs", "psnr": 22.8, "id_paddle": 0.45},
        {"method": "model_refs4", "psnr": 23.1, "id_paddle": 0.51}, {"method": "model_refs4_other", "psnr": 23.0,
                                                                      "id_paddle": 0.44}]}))
    assert _compare_module().main([f"m={video},{demo}"]) == 0
    out = capsys.readouterr().out
    good = next(line for line in out.splitlines() if line.startswith("| good "))
    bad = next(line for line in out.splitlines() if line.startswith("| bad "))
    assert good.count("✓") == 6 and "✗" not in good
    assert bad.count("✗") == 6 and "✓" not in bad
    empty = next(line for line in out.splitlines() if line.startswith("| empty "))
    # PSNR and flicker measured; identity not, nor the flicker under the input's flow (an older table)
    assert empty.count("–") == 4 and empty.count("✓") == 2
    demo_line = next(line for line in out.splitlines() if line.startswith("| 23.10 "))
    # +1.1 dB ✓, judge +0.11 ✓, over no references +0.06 ✓, other person under no references ✓
    assert demo_line.count("✓") == 4


def test_a_folder_without_a_table_is_one_line(tmp_path, capsys):
    assert _compare_module().main([f"m={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: m:") and "table.json" in err and len(err.strip().splitlines()) == 1
