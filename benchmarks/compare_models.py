"""Several models against the acceptance bars of the restorer, side by side, from files already written.

    python benchmarks/compare_models.py NAME=VIDEO_DIR[,DEMO_JSON] ...

``VIDEO_DIR`` is a ``benchmarks/video_benchmark.py --out`` folder for one model (the one holding
``table.json``); ``DEMO_JSON`` the ``--json`` of ``streamrestore eval --data
../shared/data/instantrestore`` with the same model (optional). Prints, per model, each clip's gain
over the degraded input (face PSNR dB / identity to the ground truth), the output's identity
spread against the input's and the flicker ratio, then the demo set's rows, marking each bar
met (✓) or missed (✗):

- degraded video, per clip: PSNR ≥ input + 0.5 dB, identity ≥ input + 0.03, identity with
  references above without, spread not above the input's, E_warp ≤ 1.15× the input's, under the
  clean clip's flow (``ewarp``) and under the input's own flow (``ewarp_input``, the shared
  ``flicker.py``'s definition; "–" in tables written before eval had it);
- demo set, ``model_refs4``: PSNR ≥ input + 1.0 dB, judge ≥ input + 0.08 and ≥ ``model_norefs``
  + 0.05, the other-person control under ``model_norefs``.

Nothing is measured here: run the benchmarks first (``benchmarks/after_gpu.sh`` does both).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: (bar, threshold) of the degraded-video acceptance items
PSNR_GAIN, ID_GAIN, FLICKER = 0.5, 0.03, 1.15
DEMO_PSNR, DEMO_JUDGE, DEMO_REFS = 1.0, 0.08, 0.05


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def video_rows(folder: Path) -> dict[str, dict[str, dict]]:
    """``{clip: {method: row}}`` of a video benchmark folder's ``table.json``."""
    table = folder / "table.json"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found: is {folder} a video_benchmark.py --out folder of one model?")
    out: dict[str, dict[str, dict]] = {}
    for row in json.loads(table.read_text())["rows"]:
        out.setdefault(row["clip"], {})[row["method"]] = row
    return out


def _missing(*rows_and_keys) -> bool:
    """Whether any (row, key) has no value (eval writes NaN as null)."""
    return any(row is None or row.get(key) is None for row, key in rows_and_keys)


def video_lines(name: str, clips: dict[str, dict[str, dict]]) -> list[str]:
    lines = [f"### {name}: degraded video", "",
             "| clip | PSNR gain | ID gain | ID refs > norefs | spread (input's) | E_warp ratio | E_warp ratio, input flow |",
             "|---|---|---|---|---|---|---|"]
    for clip, rows in clips.items():
        i, m, n = rows.get("input"), rows.get("model_refs"), rows.get("model_norefs")
        if m is None or i is None:
            continue
        cells = [clip]
        if _missing((m, "psnr"), (i, "psnr")):
            cells.append("–")
        else:
            gain = m["psnr"] - i["psnr"]
            cells.append(f"{gain:+.2f} {_mark(gain >= PSNR_GAIN)}")
        if _missing((m, "id_gt"), (i, "id_gt")):
            cells += ["–", "–"]
        else:
            idg = m["id_gt"] - i["id_gt"]
            cells.append(f"{idg:+.4f} {_mark(idg >= ID_GAIN)}")
            cells.append("–" if _missing((n, "id_gt")) else
                         f"{_mark(m['id_gt'] > n['id_gt'])} ({m['id_gt'] - n['id_gt']:+.4f})")
        cells.append("–" if _missing((m, "id_std"), (i, "id_std")) else
                     f"{m['id_std']:.4f} ({i['id_std']:.4f}) {_mark(m['id_std'] <= i['id_std'])}")
        for key in ("ewarp", "ewarp_input"):
            if _missing((m, key), (i, key)) or not i[key]:
                cells.append("–")
            else:
                ratio = m[key] / i[key]
                cells.append(f"{ratio:.3f} {_mark(ratio <= FLICKER)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def demo_lines(name: str, path: Path) -> list[str]:
    rows = {r["method"]: r for r in json.loads(path.read_text())["rows"]}
    i, n, r, o = (rows.get(k) for k in ("input", "model_norefs", "model_refs4", "model_refs4_other"))
    if _missing(*((row, key) for row in (i, n, r) for key in ("psnr", "id_paddle"))):
        return [f"### {name}: demo set", "", f"{path}: no PSNR / judge in its input / model_norefs / model_refs4 rows"]
    psnr, judge, share = r["psnr"] - i["psnr"], r["id_paddle"] - i["id_paddle"], r["id_paddle"] - n["id_paddle"]
    other = "–" if _missing((o, "id_paddle")) else f"{o['id_paddle'] - n['id_paddle']:+.4f} {_mark(o['id_paddle'] < n['id_paddle'])}"
    return [f"### {name}: demo set (model_refs4)", "",
            "| PSNR | PSNR gain | judge | judge gain | over no references | other person − no references |",
            "|---|---|---|---|---|---|",
            f"| {r['psnr']:.2f} | {psnr:+.2f} {_mark(psnr >= DEMO_PSNR)} | {r['id_paddle']:.4f} | "
            f"{judge:+.4f} {_mark(judge >= DEMO_JUDGE)} | {share:+.4f} {_mark(share >= DEMO_REFS)} | {other} |"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", metavar="NAME=VIDEO_DIR[,DEMO_JSON]")
    args = p.parse_args(argv)
    lines: list[str] = []
    for item in args.models:
        name, sep, paths = item.partition("=")
        if not sep or not name or not paths:
            p.error(f"{item!r}: expected NAME=VIDEO_DIR[,DEMO_JSON]")
        video, _, demo = paths.partition(",")
        try:
            lines += video_lines(name, video_rows(Path(video))) + [""]
            if demo:
                lines += demo_lines(name, Path(demo)) + [""]
        except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
