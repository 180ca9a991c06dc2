"""Which backend runs: what each needs, what is available on a device, what ``auto`` picks.

See :mod:`streamrestore.backends` for what each backend does.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamrestore.errors import ModelError, UserError

log = logging.getLogger(__name__)

#: values of ``--backend``
BACKENDS = ("auto", "eager", "compile", "tensorrt", "onnxruntime")
#: batch sizes compiled backends are built for
DEFAULT_BUCKETS = (1, 2, 4, 8)
#: the largest model ``auto`` exports to ONNX on CPU: one ONNX file holds at most 2 GB (protobuf),
#: and a paper-scale model (~3.5 GB in fp32) would spend minutes tracing before failing
ONNX_AUTO_MAX_BYTES = 1 << 30
#: what ``auto`` picks on CPU, and why (documentation only: nothing is printed). ``onnxruntime``
#: when it is installed (it is a dependency) and the model is under :data:`ONNX_AUTO_MAX_BYTES`:
#: ``streamrestore bench`` on 2 busy CPU cores, lite with 2 references, 720p, one face, in
#: interleaved runs: 14.8 and 13.9 fps end to end against eager's 10.6 and 11.7 (restore 50-53 ms
#: per face against 69-76: one ONNX Runtime call per frame where eager runs hundreds of small
#: operations, each taking the interpreter's lock the reader thread also needs). Its output matches
#: eager's to ~3e-7; the first frame with a new face or reference count exports the program once,
#: ~2 s, cached on disk after that. A model the exporter cannot take falls back to eager with a
#: warning. ``compile`` on CPU: 7.4 fps against eager's 11.7 and tens of seconds of start-up per
#: batch bucket.
CPU_AUTO_NOTE = ("onnxruntime when installed (2 cores, 720p, one face: 14.8/13.9 fps against eager's 10.6/11.7), "
                 "else eager; torch.compile on CPU was slower than eager (7.4 vs 11.7 fps)")


#: the variable that sets :attr:`BackendConfig.engine_cache_mb`'s default
ENGINE_CACHE_VARIABLE = "STREAMRESTORE_ENGINE_CACHE_MB"


def default_engine_cache_mb() -> float | None:
    """``$STREAMRESTORE_ENGINE_CACHE_MB`` (MiB; ``none``: no limit), else 2048; read when a config is made.

    Raises:
        UserError: the variable is neither ``none`` nor a number > 0 as people write one (named, with its value).
    """
    given = os.environ.get(ENGINE_CACHE_VARIABLE, "").strip()
    if not given:
        return 2048.0
    if given.lower() == "none":
        return None
    if not re.fullmatch(r"\d+\.?\d*|\.\d+", given) or not 0 < float(given) < float("inf"):  # (not "1_5", "inf")
        raise UserError(f"{ENGINE_CACHE_VARIABLE}={given!r}: give the most the exported programs may take, in MiB "
                        "(a number > 0, such as 500; none: no limit)")
    return float(given)


@dataclass(frozen=True)
class BackendConfig:
    """How the restorer runs.

    Args:
        backend: ``auto`` (default: the fastest available, see :mod:`streamrestore.backends`), ``eager``,
            ``compile``, ``tensorrt`` or ``onnxruntime``.
        buckets: batch sizes compiled and exported backends are built for (default 1, 2, 4, 8: one
            engine per size; a frame's faces are padded up to the next size, more than the largest are
            split). Eager ignores them.
        reference_slots: references per face the compiled core takes (default 4, the number the
            method was trained with); fewer are padded and masked out. An identity with more
            references raises the slot count at ``encode_references`` time (before any frame).
        channels_last: channels-last memory for the networks (default None: on CUDA only).
        cuda_graphs: capture the compiled core in CUDA graphs (default True; CUDA only). Cuts the
            launch overhead of ~1000 kernels per face, which dominates at batch 1.
        compile_mode: ``torch.compile`` mode (default None: ``reduce-overhead`` with CUDA graphs,
            else inductor's default).
        compiler: ``torch.compile`` backend (default ``inductor``; ``eager`` captures the same
            static graphs with dynamo but generates no code: tests use it to check shapes,
            padding and recompiles in seconds).
        engine_dir: where built TensorRT engines and ONNX programs are kept (default
            ``engines/`` under :func:`streamrestore.cache_dir.cache_root`).
        engine_cache_mb: the most that folder may hold (default 2048 MiB, or
            ``$STREAMRESTORE_ENGINE_CACHE_MB``; None: no limit). One program per model and shape (lite:
            ~26 MB each, a new one for every new face count bucket or reference count), so a machine
            that restores many kinds of video would otherwise fill its disk; past the limit the least
            recently used programs are deleted after a new one is written (a deleted one is exported
            again when next needed). The variable lowers it where no option reaches: a class's home
            folders under a quota, a small disk.
    """

    backend: str = "auto"
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    reference_slots: int = 4
    channels_last: bool | None = None
    cuda_graphs: bool = True
    compile_mode: str | None = None
    compiler: str = "inductor"
    engine_dir: str | Path | None = None
    engine_cache_mb: float | None = field(default_factory=default_engine_cache_mb)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        buckets = tuple(int(b) for b in self.buckets)
        if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"buckets must be increasing positive batch sizes, got {self.buckets!r}")
        object.__setattr__(self, "buckets", buckets)
        if self.reference_slots < 1:
            raise ValueError(f"reference_slots must be >= 1, got {self.reference_slots}")
        if self.engine_cache_mb is not None and not self.engine_cache_mb > 0:
            raise ValueError(f"engine_cache_mb must be > 0 or None, got {self.engine_cache_mb!r}")


# -- what is available ------------------------------------------------------------------------

def _has_compiler() -> bool:
    """Inductor's CPU code needs a C++ compiler."""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def backend_availability(device: torch.device | str) -> dict[str, str | None]:
    """For each backend: None when it can run on ``device``, else the reason it cannot."""
    device = torch.device(device)
    out: dict[str, str | None] = {"eager": None}
    if importlib.util.find_spec("onnxruntime") is None:
        out["onnxruntime"] = "onnxruntime is not installed (pip install onnxruntime)"
    elif device.type != "cpu":
        out["onnxruntime"] = "the onnxruntime backend runs on the CPU only"
    else:  # installed is not importable: a wheel for another CPU or C library, or one damaged
        from streamrestore.faces.detect import onnxruntime_module  # noqa: PLC0415

        try:
            onnxruntime_module()
            out["onnxruntime"] = None
        except ImportError as exc:
            out["onnxruntime"] = f"onnxruntime cannot be imported ({exc}; pip install --force-reinstall onnxruntime)"
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            out["compile"] = "torch.compile on CUDA needs the 'triton' package"
        else:
            out["compile"] = None
        if importlib.util.find_spec("torch_tensorrt") is None:
            out["tensorrt"] = "torch_tensorrt is not installed (pip install 'streamrestore[trt]' plus NVIDIA's TensorRT)"
        else:
            try:
                import torch_tensorrt  # noqa: F401
                out["tensorrt"] = None
            except Exception as exc:  # missing TensorRT libraries surface here
                out["tensorrt"] = f"torch_tensorrt cannot be imported ({type(exc).__name__}: {exc})"
    else:
        out["compile"] = None if _has_compiler() else "torch.compile on CPU needs a C++ compiler (g++ or clang++)"
        out["tensorrt"] = "TensorRT needs a CUDA device"
    return out


def available_backends(device: torch.device | str) -> list[str]:
    """The backends that can run on ``device``, fastest first for that device."""
    avail = backend_availability(device)
    order = ("tensorrt", "compile", "eager") if torch.device(device).type == "cuda" else ("eager", "onnxruntime", "compile")
    return [b for b in order if avail.get(b) is None]


def select_backend(requested: str, device: torch.device | str, model_bytes: int | None = None) -> str:
    """The backend that will run: ``requested`` itself, or for ``auto`` the best available.

    ``auto`` logs one line naming the backend and why faster ones were skipped; an explicitly
    requested backend that cannot run raises :class:`ModelError` saying what to install.
    ``model_bytes``: the size of the network's weights, when known; on CPU ``auto`` runs a model
    over :data:`ONNX_AUTO_MAX_BYTES` eagerly.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    device = torch.device(device)
    if requested == "eager":  # (asked for: nothing to look at; onnxruntime's trial import alone holds ~64 MB)
        return requested
    avail = backend_availability(device)
    if requested != "auto":
        reason = avail.get(requested)
        if reason is not None:
            raise ModelError(f"backend {requested!r} cannot run on {device.type}: {reason}; "
                             "use --backend auto or eager")
        return requested
    if device.type == "cuda":
        skipped = []
        for name in ("tensorrt", "compile"):
            if avail[name] is None:
                chosen = name
                break
            skipped.append(f"{name}: {avail[name]}")
        else:
            chosen = "eager"
        note = f" ({'; '.join(skipped)})" if skipped else ""
    else:  # see CPU_AUTO_NOTE
        chosen, note = "onnxruntime", ""
        if avail.get("onnxruntime") is not None:
            chosen, note = "eager", f" (onnxruntime: {avail['onnxruntime']})"
        elif model_bytes is not None and model_bytes > ONNX_AUTO_MAX_BYTES:
            chosen, note = "eager", f" (onnxruntime: a {model_bytes / 2**30:.1f} GiB model is too large to export)"
    log.info("backend: %s on %s%s", chosen, device.type, note)
    return chosen
