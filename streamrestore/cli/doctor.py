"""``streamrestore doctor``: what this installation is and runs on, to attach to a bug report.

    streamrestore doctor [--face-models DIR] [--json]

Prints the build (with its git commit from a checkout), Python, the platform, the libraries that decide
an output (torch, onnxruntime, PyAV and its FFmpeg, OpenCV, ...), whether torch sees a GPU, the cache
folder, the shipped model file's sha256 and the face models found, each file with its sha256. Changes
nothing; loads torch (a second or two).
"""
from __future__ import annotations

import argparse
import json
import sys

from streamrestore.cli.options import CommandParser
from streamrestore.errors import UserError, one_line


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="streamrestore doctor",
        description="Print what this installation is and runs on (the build, Python, platform, library "
                    "versions, GPU, cache folder, model files with their sha256): attach it to a bug report, "
                    "with the failing command's messages (-v) and its --json.",
    )
    p.add_argument("--face-models", metavar="DIR", default=None,
                   help="the face models to describe, as given to the main command (default: the packs under "
                        "~/.insightface/models)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    return p


def face_model_files(face_models: str | None) -> dict[str, object]:
    """The detector and recognition files a run with ``--face-models face_models`` would use, with their
    sha256; ``problem`` says why none are, where they cannot be found or read."""
    from streamrestore.faces.detect import _det_files, find_model_pack
    from streamrestore.output_file import sha256_of

    try:
        pack = find_model_pack(face_models)
    except UserError as exc:
        return {"pack": None, "files": {}, "problem": str(exc)}
    if pack is None:
        return {"pack": None, "files": {}, "problem": "no insightface pack found (dlib's models are used)"}
    files = [*_det_files(pack), *sorted(p for p in pack.glob("*.onnx") if not p.name.startswith("det_"))]
    return {"pack": str(pack.resolve()), "files": {p.name: sha256_of(p) for p in files}}


def doctor_record(face_models: str | None) -> dict[str, object]:
    """What ``streamrestore doctor --json`` prints."""
    from streamrestore.cache_dir import cache_root, cache_root_source
    from streamrestore.environment import environment_record
    from streamrestore.model.registry import model_provenance

    return {**environment_record(), "cache": {"folder": str(cache_root()), "placed_by": cache_root_source()},
            "model": {"lite": model_provenance("lite")}, "face_models": face_model_files(face_models)}


def _text(record: dict[str, object]) -> list[str]:
    """``record`` as lines a person reads (and pastes)."""
    lines = [f"streamrestore {record['streamrestore']}", f"python {record['python']} on {record['platform']}, "
             f"{record['cpus']} CPUs"]
    libraries = record["libraries"]
    assert isinstance(libraries, dict)
    lines.append("libraries: " + ", ".join(f"{name} {version or '(not installed)'}" for name, version in libraries.items()))
    ffmpeg = record["ffmpeg"]
    if isinstance(ffmpeg, dict) and ffmpeg:
        libs, encoders = ffmpeg.get("libraries", {}), ffmpeg.get("encoders", {})
        lines.append("PyAV's FFmpeg: " + ", ".join(f"{name} {version}" for name, version in libs.items())
                     + "; encoders: " + ", ".join(f"{name} {'yes' if there else 'no'}" for name, there in encoders.items()))
    torch = record["torch"]
    if isinstance(torch, dict) and torch:
        gpu = torch["gpu"] if torch["cuda_available"] else "none seen"
        lines.append(f"torch: CUDA build {torch['cuda_build'] or 'none (CPU)'}, GPU {gpu}, {torch['threads']} threads")
    variables = record["variables"]
    if isinstance(variables, dict) and variables:
        lines.append("variables: " + ", ".join(f"{name}={value}" for name, value in variables.items()))
    cache = record["cache"]
    assert isinstance(cache, dict)
    lines.append(f"cache: {cache['folder']} (placed by {cache['placed_by']})")
    lite = record["model"]["lite"]  # type: ignore[index]
    lines.append(f"model lite: {lite['model_file']} sha256 {lite['model_sha256']}")
    faces = record["face_models"]
    assert isinstance(faces, dict)
    if faces.get("pack"):
        lines.append(f"face models: {faces['pack']}")
        lines += [f"  {name} sha256 {digest}" for name, digest in faces["files"].items()]
    else:
        lines.append(f"face models: {faces.get('problem')}")
    return lines


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    record = doctor_record(args.face_models)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        for line in _text(record):
            print(one_line(line))
        print("(attach this, the failing command with its messages (-v 2> log.txt) and its --json, to a report)",
              file=sys.stderr)
    return 0
