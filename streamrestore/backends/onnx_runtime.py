"""ONNX Runtime programs of the per-frame core, for the CPU: exported once, cached on disk.

The core (:class:`~streamrestore.backends.core.FrameCore`, fixed shapes) is exported with
torch's TorchScript-based ONNX exporter (it needs no extra package) and run by onnxruntime's
CPU provider, which is already a dependency (face detection). Measured on the 2-core machine,
one thread, lite with 2 references: the restore step 54 ms per face against 64 ms eager (1.18x;
CPU time 71-78 vs 82-92 ms with 4 references), outputs equal to 1.2e-7; end to end (720p, one
face, ``streamrestore bench --backend eager --backend onnxruntime``) 11.9 against 11.7 fps.

The exported file is cached under a hash of everything it depends on (model fingerprint,
shapes, versions), next to TensorRT engines: a second run only opens a session (~0.1 s).
"""
from __future__ import annotations

import contextlib
import glob
import logging
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from streamrestore.cache_dir import cache_temp_name, is_leftover, keep_private_if_personal, make_cache_folders
from streamrestore.errors import ModelError, out_of_memory

log = logging.getLogger(__name__)


def _flat_inputs(args) -> tuple[list[str], list[torch.Tensor]]:
    """The core's inputs (``padded_inputs``' args) as one named tensor each, the optional ones
    only when given."""
    x, noise, keys, values, means, stds, ref_mask, input_mask, reference_faces = args
    names, flat = ["faces", "noise"], [x, noise]
    for kind, tensors in (("keys", keys), ("values", values), ("means", means), ("stds", stds)):
        names += [f"{kind}_{i}" for i in range(len(tensors))]
        flat += list(tensors)
    names.append("ref_mask")
    flat.append(ref_mask)
    for name, tensor in (("input_mask", input_mask), ("reference_faces", reference_faces)):
        if tensor is not None:
            names.append(name)
            flat.append(tensor)
    return names, flat


class _FlatCore(nn.Module):
    """The core with one tensor per input (ONNX inputs cannot be lists)."""

    def __init__(self, core: nn.Module, layers: int, with_input: bool, with_reference_faces: bool):
        super().__init__()
        self.core = core
        self.layers = layers
        self.with_input = with_input
        self.with_reference_faces = with_reference_faces

    def forward(self, faces, noise, *rest):
        n = self.layers
        keys, values, means, stds = (list(rest[i * n:(i + 1) * n]) for i in range(4))
        optional = list(rest[4 * n + 1:])
        input_mask = optional.pop(0) if self.with_input else None
        reference_faces = optional.pop(0) if self.with_reference_faces else None
        return self.core(faces, noise, keys, values, means, stds, rest[4 * n], input_mask, reference_faces)


def export_onnx(core: nn.Module, args, path: Path) -> None:
    """Writes the ONNX program of ``core`` for ``args`` (the core's inputs, fixed shapes) to ``path``.

    Raises:
        OSError: ``path``'s folder cannot be written (read-only, full).
        ModelError: the exporter failed.
    """
    names, flat = _flat_inputs(args)
    flat_core = _FlatCore(core, len(args[2]), args[7] is not None, args[8] is not None)
    make_cache_folders(path.parent)
    now = time.time()
    for left in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):  # (an earlier export of it killed midway)
        with contextlib.suppress(OSError):
            if is_leftover(left.name, now - left.stat().st_mtime):
                left.unlink()
    tmp = cache_temp_name(path)  # (two terminals on one cache exporting one shape: each its own)
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter warns about every Python-level shape read; the shapes are fixed here
            warnings.simplefilter("ignore")
            torch.onnx.export(flat_core, tuple(flat), str(tmp),
                              input_names=names, output_names=["restored"], opset_version=17, dynamo=False)
        keep_private_if_personal(tmp)
        tmp.replace(path)
    except (OSError, MemoryError):  # the folder (read-only, full) or the memory, not the exporter: the caller decides
        raise
    except Exception as exc:  # an exporter that changed or went away in another torch version
        raise ModelError(f"cannot export the restorer to ONNX with torch {torch.__version__} "
                         f"({type(exc).__name__}: {exc}); use --backend eager") from exc
    finally:  # (Ctrl-C too: a name of its own is never written over by a later export)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


#: cache folders already said to be unwritable or on a nearly full disk (said once a process, not once a shape)
_UNWRITABLE_SAID: set[Path] = set()

#: a program is kept in the cache only where its disk has this much free before it is written: on a nearly full disk
#: (a small VM's, an SD card's) the programs (~27 MB each shape for lite) took the room the output then needed
KEEP_PROGRAMS_FREE_BYTES = 512 << 20


def _free_bytes(folder: Path) -> int | None:
    """The free bytes of the disk ``folder`` is on (of its nearest existing folder above); None where unknown."""
    import shutil

    for place in (folder, *folder.parents):
        if place.exists():
            try:
                return shutil.disk_usage(place).free
            except OSError:
                return None
    return None


def _export_or_not_cached(core: nn.Module, args, path: Path) -> tuple[Path, Path | None]:
    """``path`` exported; where its folder cannot be written (read-only, a full disk), the program
    exported into a temporary folder instead, used for this run only and said (a traceback ended
    the run, after the models had loaded). Returns where the program is, and the temporary folder
    (None: none), which the caller removes.

    Raises:
        ModelError: it could be written nowhere (the backend then falls back to eager), or the
            exporter failed.
    """
    import shutil
    import tempfile

    free = _free_bytes(path.parent)
    if free is not None and free < KEEP_PROGRAMS_FREE_BYTES:
        if path.parent not in _UNWRITABLE_SAID:
            _UNWRITABLE_SAID.add(path.parent)
            log.warning("the cache's disk has %.0f MB free: the exported restorer is not kept in %s, so that the "
                        "output has room (it is exported again in every run); free some space, or set "
                        "STREAMRESTORE_CACHE to a folder on another disk", free / 1e6, path.parent)
    else:
        try:
            export_onnx(core, args, path)
            return path, None
        except OSError as exc:
            if path.parent not in _UNWRITABLE_SAID:
                _UNWRITABLE_SAID.add(path.parent)
                log.warning("cannot keep the exported restorer in %s (%s): it is exported again in every run; set "
                            "STREAMRESTORE_CACHE (library: engine_dir) to a folder you can write", path.parent,
                            exc.strerror or exc)
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="streamrestore-onnx-"))
        export_onnx(core, args, folder / path.name)
        return folder / path.name, folder
    except OSError as again:
        raise ModelError(f"cannot write the exported restorer in {path.parent} nor in the temporary folder "
                         f"({again.strerror or again}; TMPDIR moves it)") from again
    finally:
        if folder is not None and not (folder / path.name).is_file():  # (failed: nothing to keep)
            shutil.rmtree(folder, ignore_errors=True)


def onnxruntime_engine(core: nn.Module, args, path: Path, threads: int) -> tuple[Callable[..., torch.Tensor], bool]:
    """A callable taking the core's inputs and returning its output, run by onnxruntime on the
    CPU with ``threads`` intra-op threads; the program is loaded from ``path`` when there, else
    exported there first. Also returns whether the program is kept at ``path`` (False: its folder
    could not be written, and a session closed would need another export)."""
    import shutil

    from streamrestore.cache_dir import trusted_cached_file
    from streamrestore.faces.detect import onnx_session_options, onnxruntime_module

    onnxruntime = onnxruntime_module()

    options = onnx_session_options(threads)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    temporary = None
    try:
        if not trusted_cached_file(path, "ONNX program"):
            log.info("exporting the restorer to ONNX (%s)", path.name)
            path, temporary = _export_or_not_cached(core, args, path)
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            if out_of_memory(exc) is not None:  # (memory, not the file: said as such)
                raise MemoryError(f"onnxruntime could not open {path.name} ({exc})") from exc
            if temporary is not None:  # (just exported: not a damaged cache file)
                raise ModelError(f"onnxruntime cannot open the exported restorer ({exc})") from exc
            log.warning("cannot open ONNX program %s (%s); exporting it again", path, exc)  # a damaged cache file
            path, temporary = _export_or_not_cached(core, args, path)
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    finally:  # (loaded, or failed: the temporary copy is not needed)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    # the exporter drops inputs the graph does not use (lite: the noise, the AdaIN statistics)
    wanted = {i.name for i in session.get_inputs()}

    def run(*core_args) -> torch.Tensor:
        names, flat = _flat_inputs(core_args)
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(names, flat) if name in wanted}
        try:
            return torch.from_numpy(session.run(None, feed)[0])
        except Exception as exc:  # (its arena's failed allocation comes as its own Fail, not a MemoryError)
            if out_of_memory(exc) is not None:
                raise MemoryError(f"onnxruntime ran out of memory running {path.name} ({exc})") from exc
            raise

    return run, temporary is None
