"""Execution backends of the restorer: ``eager``, ``compile`` (torch.compile), ``tensorrt``, ``onnxruntime``.

:func:`build_backend` wraps an :class:`~streamrestore.model.restorer.InstantRestorer` in a
:class:`BackendRestorer` that implements the same :class:`~streamrestore.types.Restorer`
protocol, so the pipeline does not know which backend runs.

- ``eager``: plain PyTorch in the restorer's dtype (fp32 on CPU, fp16 on CUDA unless the model
  was loaded in bf16); on CUDA the networks switch to channels-last memory (faster convolutions
  with tensor cores; on CPU it is left off: some CPU conv kernels are slower or fail with it).
  Batches run at their own size (nothing to pad: eager does not care about shapes).
- ``compile``: ``torch.compile`` of the whole per-frame core (encode → one UNet step with the
  reference K/V → decode) with static shapes; on CUDA with CUDA graphs (``reduce-overhead``).
- ``tensorrt``: the same core through ``torch.export`` and Torch-TensorRT (fp16), the built
  engine cached on disk under a key of model fingerprint, shapes, dtype, GPU and versions.
- ``onnxruntime`` (CPU): the same core exported to ONNX and run by ONNX Runtime's CPU provider,
  the exported program cached on disk the same way (:mod:`~streamrestore.backends.onnx_runtime`).

Compiled backends see a fixed set of shapes per run: faces are padded up to a batch bucket
(1, 2, 4, 8; larger frames are split into chunks of 8) and every face's references are padded
to ``reference_slots`` (4) with a mask, so nothing recompiles mid-video; :meth:`BackendRestorer.warmup`
builds every shape up front. ONNX Runtime programs export in ~2 s, so they take exactly the
faces and references there are (a new count exports once, then the program is cached on disk).
LoRA adapters are merged into a private copy of the restoration networks before compiling (the
reference network shares the base weights and must keep them).

``auto`` picks the fastest available backend for the device (CUDA: tensorrt, then compile,
then eager; CPU: onnxruntime, else eager, see :data:`CPU_AUTO_NOTE`) and says in one log line
which one runs; a model its engine cannot be built for then runs eagerly, with a warning.

The package, by concern: :mod:`~streamrestore.backends.selection` (which backend can and will
run, :class:`BackendConfig`), :mod:`~streamrestore.backends.core` (:class:`FrameCore`, the one
per-frame core every compiled backend and export runs, and :class:`BackendRestorer`),
:mod:`~streamrestore.backends.engine_files` (where built engines are cached),
:mod:`~streamrestore.backends.tensorrt` (building TensorRT engines),
:mod:`~streamrestore.backends.onnx_runtime` (exporting and running ONNX programs on the CPU).
"""
from streamrestore.backends.core import (
    BackendRestorer,
    FrameCore,
    bucket_for,
    build_backend,
    merge_lora,
    per_person_backend,
)
from streamrestore.backends.engine_files import engine_dir
from streamrestore.backends.selection import (
    BACKENDS,
    CPU_AUTO_NOTE,
    DEFAULT_BUCKETS,
    BackendConfig,
    available_backends,
    backend_availability,
    select_backend,
)

__all__ = [
    "BACKENDS", "CPU_AUTO_NOTE", "DEFAULT_BUCKETS", "BackendConfig", "BackendRestorer", "FrameCore",
    "available_backends", "backend_availability", "bucket_for", "build_backend", "engine_dir", "merge_lora",
    "per_person_backend", "select_backend",
]
