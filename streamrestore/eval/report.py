"""Evaluation reports: the markdown table, the side-by-side grid, the JSON table.

Inputs are the plain rows of :mod:`streamrestore.eval.run` (dicts with ``method`` and the
metric keys), so a report can also be rebuilt from a saved JSON file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from streamrestore.errors import OutputError

__all__ = ["COLUMNS", "format_table", "markdown_report", "make_grid", "write_grid", "write_json", "json_rows"]

#: (key, header, format) of the averaged table's columns, in order.
COLUMNS = (
    ("psnr", "PSNR (dB) ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("id_mobilefacenet", "ID MobileFaceNet ↑", "{:.4f}"),
    ("id_paddle", "ID paddle (judge) ↑", "{:.4f}"),
    ("id_dlib", "ID dlib ↑", "{:.4f}"),
    ("lmd", "LMD (px@512) ↓", "{:.2f}"),
)
_JSON_KEYS = ("method",) + tuple(key for key, _, _ in COLUMNS)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def format_table(rows: Sequence[Mapping], first: str = "method", extra: Sequence[str] = ("n",)) -> str:
    """A GitHub markdown table of ``rows`` (one per method or per image); NaN shows as ``–``."""
    headers = [first] + [h for _, h, _ in COLUMNS] + list(extra)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for row in rows:
        cells = [str(row[first])] + [_cell(row.get(k), f) for k, _, f in COLUMNS] + [str(row.get(e, "")) for e in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(rows: Sequence[Mapping], per_image: Sequence[Mapping] = (), *, title: str = "Evaluation",
                    facts: Mapping[str, str] | None = None, notes: Sequence[str] = (), grid: str | None = None) -> str:
    """The whole markdown report: facts about the run, the averaged table, notes, the grid
    link and the per-image table."""
    parts = [f"# {title}", ""]
    for key, value in (facts or {}).items():
        parts.append(f"- **{key}**: {value}")
    parts += ["", "## Averages", "", format_table(rows, extra=("n", "lmd_missed")), ""]
    parts += [f"- {note}" for note in notes]
    if grid:
        parts += ["", f"![degraded | no refs | refs | ground truth]({grid})", ""]
    if per_image:
        labelled = [{**r, "image": f"{r['case']} / {r['method']}"} for r in per_image]
        parts += ["", "## Per image", "", format_table(labelled, first="image", extra=()), ""]
    return "\n".join(parts) + "\n"


def json_rows(rows: Sequence[Mapping]) -> list[dict]:
    """The averaged rows with the JSON keys; NaN becomes ``None`` (``null``) so the file is
    valid JSON."""
    out = []
    for row in rows:
        item = {}
        for key in _JSON_KEYS + ("n",):
            value = row.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            item[key] = value
        out.append(item)
    return out


def write_json(path: str | Path, rows: Sequence[Mapping], **extra) -> Path:
    """Write ``{"rows": [...], **extra}`` (NaN -> null) to ``path``."""
    from streamrestore.output_file import write_text_file

    return write_text_file(Path(path), json.dumps({"rows": json_rows(rows), **extra}, indent=2, allow_nan=False) + "\n")


def make_grid(images: Mapping[str, Mapping[str, np.ndarray]], tile: int = 192, label_height: int = 22) -> np.ndarray:
    """One row per case, one column per image kind (the order of the first case), labelled.

    ``images`` is ``{case: {column: (H, W, 3) uint8 RGB}}``; returns an RGB uint8 image.
    """
    if not images:
        raise ValueError("no images to put in a grid")
    if tile < 16:
        raise ValueError(f"tile must be >= 16, got {tile}")
    columns = list(next(iter(images.values())).keys())
    height = label_height + len(images) * (tile + label_height)
    grid = np.full((height, len(columns) * tile, 3), 255, np.uint8)

    def text(x: int, y: int, s: str) -> None:
        cv2.putText(grid, s, (x + 4, y + label_height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)

    for c, name in enumerate(columns):
        text(c * tile, 0, name)
    for r, (case, row) in enumerate(images.items()):
        y = label_height + r * (tile + label_height)
        text(0, y, str(case))
        for c, name in enumerate(columns):
            image = row.get(name)
            if image is None:
                continue
            interp = cv2.INTER_AREA if image.shape[0] > tile else cv2.INTER_CUBIC
            grid[y + label_height: y + label_height + tile, c * tile:(c + 1) * tile] = cv2.resize(image, (tile, tile), interpolation=interp)
    return grid


def write_grid(path: str | Path, images: Mapping[str, Mapping[str, np.ndarray]], tile: int = 192) -> Path:
    """Write :func:`make_grid` as a PNG."""
    path = Path(path)
    grid = make_grid(images, tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(grid[:, :, ::-1])):
        raise OutputError(f"cannot write {path}; check the folder is writable")
    return path
