"""What a run ran on: the tool's build, Python, the platform and the libraries that decide its output.

One owner for "attach this to a bug report": ``streamrestore doctor`` prints it, and ``--json``
records it (``environment``). ``--version`` says the build: the release number alone was the same for
every commit (support F3), so a checkout also gives its git commit.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from streamrestore._version import __version__

#: the libraries whose versions change a run's output or its failures, by import name: (distribution names
#: to look up, first found wins; the PyPI names differ from the import names)
LIBRARIES = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "av": ("av",),
    "cv2": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "numpy": ("numpy",),
    "insightface": ("insightface",),
    "dlib": ("dlib-bin", "dlib"),
    "norfair": ("norfair",),
    "safetensors": ("safetensors",),
    "ray": ("ray",),
}


#: the variables recorded with their values: what changes a run (threads, caches, the GPU seen). Named one by
#: one: a prefix took RAY_AUTH_TOKEN (Ray's cluster token) into a record users attach to reports (review 52)
RECORDED_VARIABLES = ("STREAMRESTORE_CACHE", "STREAMRESTORE_HOME", "STREAMRESTORE_ENGINE_CACHE_MB",
                      "STREAMRESTORE_MODELS", "XDG_CACHE_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                      "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_CACHE_DIR", "RAY_TMPDIR",
                      "STREAMRESTORE_SHARED", "HF_HUB_OFFLINE", "TRITON_INTERPRET")


def _package_folder() -> Path:
    return Path(__file__).resolve().parent


def git_commit() -> str | None:
    """The short commit of the checkout the package runs from, with ", modified" where its tracked files
    differ from it; None for an installed copy (no ``.git`` beside the package) or without git."""
    root = _package_folder().parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=2, check=True).stdout.strip()
        # (GIT_OPTIONAL_LOCKS=0: status would refresh the index, under a lock the user's own git may want; the
        # variable, not --no-optional-locks, which git before 2.15 refuses)
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=2, check=True,
                                 env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}, modified" if changed else commit or None


def version_text() -> str:
    """``0.1.0``, or ``0.1.0 (git 1afb262)`` from a checkout: what ``--version`` prints."""
    commit = git_commit()
    return f"{__version__} (git {commit})" if commit else __version__


def library_versions() -> dict[str, str | None]:
    """Each of :data:`LIBRARIES`' installed version (None: not installed), read from the installed
    distributions: nothing is imported."""
    found: dict[str, str | None] = {}
    for name, distributions in LIBRARIES.items():
        found[name] = None
        for distribution in distributions:
            try:
                found[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def _ffmpeg() -> dict[str, object]:
    """The FFmpeg libraries PyAV carries, and whether it has the encoders the tool prefers."""
    try:
        av = importlib.import_module("av")
    except ImportError:
        return {}
    versions = {name: ".".join(map(str, version)) for name, version in getattr(av, "library_versions", {}).items()}
    encoders = {}
    for codec in ("libx264", "libx265", "libsvtav1", "libvpx-vp9"):
        try:
            av.Codec(codec, "w")
            encoders[codec] = True
        except Exception:  # (av.codec.codec.UnknownCodecError; its module path moved between PyAV versions)
            encoders[codec] = False
    return {"libraries": versions, "encoders": encoders}


def _torch_device() -> dict[str, object]:
    """torch's build and whether it sees a GPU (imports torch: a second or two)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return {}
    cuda = bool(torch.cuda.is_available())
    return {"cuda_build": torch.version.cuda, "cuda_available": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "threads": torch.get_num_threads()}


def environment_record() -> dict[str, object]:
    """What ran the tool, as plain data (``--json``'s ``environment``, ``streamrestore doctor --json``)."""
    return {
        "streamrestore": version_text(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "libraries": library_versions(),
        "ffmpeg": _ffmpeg(),
        "torch": _torch_device(),
        "variables": {name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ},
    }
