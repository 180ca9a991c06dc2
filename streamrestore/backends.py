"""Execution backends of the restorer: ``eager``, ``compile`` (torch.compile), ``tensorrt``.

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

Compiled backends see a fixed set of shapes per run: faces are padded up to a batch bucket
(1, 2, 4, 8; larger frames are split into chunks of 8) and every face's references are padded
to ``reference_slots`` (4) with a mask, so nothing recompiles mid-video; :meth:`BackendRestorer.warmup`
builds every shape up front. LoRA adapters are merged into a private copy of the restoration
networks before compiling (the reference network shares the base weights and must keep them).

``auto`` picks the fastest available backend for the device (CUDA: tensorrt, then compile,
then eager; CPU: eager, see :data:`CPU_AUTO_NOTE`) and says in one log line which one runs.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from streamrestore.errors import ModelError

log = logging.getLogger(__name__)

#: values of ``--backend``
BACKENDS = ("auto", "eager", "compile", "tensorrt")
#: batch sizes compiled backends are built for
DEFAULT_BUCKETS = (1, 2, 4, 8)
#: why ``auto`` stays eager on CPU (documentation only: nothing is printed, since no advice holds
#: there). ``streamrestore bench`` on 2 busy CPU cores, lite, 720p: compile 7.4 fps end to end,
#: eager 11.7; compiling also costs tens of seconds of start-up per batch bucket.
CPU_AUTO_NOTE = ("torch.compile on CPU was slower end to end than eager (bench, 2 cores: 7.4 vs 11.7 fps) "
                 "and costs tens of seconds of start-up")


@dataclass(frozen=True)
class BackendConfig:
    """How the restorer runs.

    Args:
        backend: ``auto`` (default: the fastest available, see the module doc), ``eager``,
            ``compile`` or ``tensorrt``.
        buckets: batch sizes compiled backends are built for (default 1, 2, 4, 8: one engine per
            size; a frame's faces are padded up to the next size, more than the largest are
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
        engine_dir: where built TensorRT engines are kept (default
            ``$STREAMRESTORE_HOME/engines`` or ``~/.cache/streamrestore/engines``).
    """

    backend: str = "auto"
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    reference_slots: int = 4
    channels_last: bool | None = None
    cuda_graphs: bool = True
    compile_mode: str | None = None
    compiler: str = "inductor"
    engine_dir: str | Path | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        buckets = tuple(int(b) for b in self.buckets)
        if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"buckets must be increasing positive batch sizes, got {self.buckets!r}")
        object.__setattr__(self, "buckets", buckets)
        if self.reference_slots < 1:
            raise ValueError(f"reference_slots must be >= 1, got {self.reference_slots}")


# -- what is available ------------------------------------------------------------------------

def _has_compiler() -> bool:
    """Inductor's CPU code needs a C++ compiler."""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def backend_availability(device: torch.device | str) -> dict[str, str | None]:
    """For each backend: None when it can run on ``device``, else the reason it cannot."""
    device = torch.device(device)
    out: dict[str, str | None] = {"eager": None}
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
    order = ("tensorrt", "compile", "eager") if torch.device(device).type == "cuda" else ("eager", "compile")
    return [b for b in order if avail.get(b) is None]


def select_backend(requested: str, device: torch.device | str) -> str:
    """The backend that will run: ``requested`` itself, or for ``auto`` the best available.

    ``auto`` logs one line naming the backend and why faster ones were skipped; an explicitly
    requested backend that cannot run raises :class:`ModelError` saying what to install.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    device = torch.device(device)
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
    else:
        chosen, note = "eager", ""  # see CPU_AUTO_NOTE: no backend advice holds on CPU
    log.info("backend: %s on %s%s", chosen, device.type, note)
    return chosen


# -- the per-frame core ---------------------------------------------------------------------

class FrameCore(nn.Module):
    """Faces in, restored faces out, with every reference input a plain tensor of fixed shape.

    ``forward(faces, noise, keys, values, means, stds, ref_mask, input_mask)``: faces (B, 3, R, R)
    in [0, 1] and the compute dtype; noise (B, C, h, w); per shared layer (in
    ``net.shared_layers`` order) keys/values (B, S, L, C) and means/stds (B, S, 1, C) for S
    reference slots; ``ref_mask`` (B, S) bool, True for real references; ``input_mask`` (B,)
    bool, faces that also attend to their own tokens (given only when ``with_input``).
    ``with_refs=False`` builds the variant for batches where no face has references (plain
    self-attention; the reference arguments are then ignored and may be empty lists).
    """

    def __init__(self, net: nn.Module, with_refs: bool = True, with_input: bool = False):
        super().__init__()
        self.net = net
        self.with_refs = with_refs
        self.with_input = with_input

    def forward(self, faces, noise, keys: list[torch.Tensor], values: list[torch.Tensor],
                means: list[torch.Tensor], stds: list[torch.Tensor], ref_mask: torch.Tensor,
                input_mask: torch.Tensor | None = None) -> torch.Tensor:
        from streamrestore.model.attention import LayerReferences, ReferenceBatch

        latents = self.net.encode(faces)
        refs = None
        if self.with_refs:
            layers = {name: LayerReferences(k, v, m, s)
                      for name, k, v, m, s in zip(self.net.shared_layers, keys, values, means, stds)}
            refs = ReferenceBatch(layers, ref_mask, input_mask if self.with_input else None, False)
        return self.net.decode(self.net.denoise(latents, noise, refs))


def merge_lora(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose restoration UNet/VAE have their LoRA adapters merged (peft).

    The copy shares nothing with ``net``: merging rewrites the base weights, which the
    reference network of ``net`` also uses. A network without LoRA comes back as a plain copy.
    """
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(net)
    count = 0
    for part in (getattr(merged, "unet", None), getattr(merged, "vae", None)):
        if part is None:
            continue
        for module in part.modules():
            if isinstance(module, LoraLayer) and not module.merged:
                module.merge(safe_merge=True)
                count += 1
    # The copy only runs the restoration path: drop its reference networks (memory).
    if getattr(merged, "ref_unet", None) is not None:
        merged.ref_unet = None
    if getattr(merged, "ref_vae", None) is not None:
        merged.ref_vae = None
    log.debug("merged LoRA into %d layers", count)
    return merged


def bucket_for(batch: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``batch`` faces (the largest for bigger batches: they are split)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for b in buckets:
        if b >= batch:
            return b
    return buckets[-1]


class _Engine:
    """One callable per (bucket, structure): eager module, compiled module or TensorRT program."""

    def __init__(self, fn, name: str):
        self.fn = fn
        self.name = name


class BackendRestorer:
    """An :class:`~streamrestore.model.restorer.InstantRestorer` run by one backend.

    Implements :class:`~streamrestore.types.Restorer` (plus ``noise_seeds`` as the restorer
    does). Outputs match the wrapped restorer's ``restore`` up to float rounding, whatever the
    padding (tests check it). Build with :func:`build_backend`.
    """

    def __init__(self, restorer, backend: str, config: BackendConfig = BackendConfig()):
        if backend not in ("eager", "compile", "tensorrt"):
            raise ValueError(f"backend must be eager, compile or tensorrt, got {backend!r}")
        self.restorer = restorer
        self.backend = backend
        self.config = config
        self.resolution = restorer.resolution
        self.name = f"{getattr(restorer, 'name', 'restorer')}[{backend}]"
        self.device = restorer.device
        self.dtype = restorer.dtype
        self.reference_slots = max(config.reference_slots, 1)
        self._lock = threading.Lock()
        self._engines: dict[tuple[int, int, bool, bool], _Engine] = {}
        cuda = self.device.type == "cuda"
        channels_last = config.channels_last if config.channels_last is not None else cuda
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if backend == "eager":
            self._net = restorer.net  # same weights; eager needs no private copy
        else:
            self._net = merge_lora(restorer.net)
        if channels_last:
            self._net.to(memory_format=torch.channels_last)

    @property
    def net(self) -> nn.Module:
        """The network this backend runs (for compiled backends a private copy with LoRA merged)."""
        return self._net

    # -- Restorer protocol -------------------------------------------------------------------
    def encode_references(self, faces: torch.Tensor):
        cache = self.restorer.encode_references(faces)
        if cache.num_references > self.reference_slots:
            log.info("%d references for one identity: the compiled core takes %d slots from now on",
                     cache.num_references, cache.num_references)
            self.reference_slots = cache.num_references
        return cache

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor, caches: Sequence, noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Restore B faces (B, 3, R, R) in [0, 1]; see ``InstantRestorer.restore``."""
        if self.backend == "eager":
            return self._restore_eager(faces, caches, noise_seeds)
        seeds = self.restorer.check_restore_args(faces, caches, noise_seeds)
        b = faces.shape[0]
        if b == 0:
            return faces.new_zeros(faces.shape, dtype=torch.float32)
        chunk = self.config.buckets[-1]
        outs = [self._restore_padded(faces[i : i + chunk], list(caches[i : i + chunk]), seeds[i : i + chunk])
                for i in range(0, b, chunk)]
        return torch.cat(outs).to(device=faces.device, dtype=torch.float32)

    def _restore_eager(self, faces, caches, noise_seeds):
        if self._memory_format is torch.contiguous_format:
            return self.restorer.restore(faces, caches, noise_seeds)
        x = faces.to(self.device, self.dtype).contiguous(memory_format=self._memory_format)
        return self.restorer.restore(x, caches, noise_seeds).to(device=faces.device)

    # -- padding to fixed shapes ---------------------------------------------------------------
    def padded_inputs(self, faces: torch.Tensor, caches: Sequence, seeds: Sequence[int]):
        """The :class:`FrameCore` inputs for these faces, padded to the bucket and the slots.

        Returns ``(key, args)``: key (bucket, slots, with_refs, with_input) names the engine.
        Padding faces repeat the last real face (its output is dropped), so no padded row
        attends to nothing (an all-masked row would be NaN).
        """
        r = self.restorer
        b = faces.shape[0]
        bucket = bucket_for(b, self.config.buckets)
        pad = bucket - b
        caches = list(caches) + [caches[-1]] * pad
        seeds = list(seeds) + [seeds[-1]] * pad
        # Always a fresh tensor made here (in inference mode): a caller's tensor passed through
        # as is would differ in dispatch keys and trigger a recompile.
        x = torch.empty((bucket, *faces.shape[1:]), device=self.device, dtype=self.dtype)
        x = x.contiguous(memory_format=self._memory_format)
        x[:b].copy_(faces)
        if pad:
            x[b:].copy_(x[b - 1 : b].expand(pad, -1, -1, -1))
        noise = torch.cat([r.fixed_noise(s) for s in seeds]).contiguous()
        counts = [0 if c is None else c.num_references for c in caches]
        with_refs = max(counts) > 0
        slots = self.reference_slots
        if max(counts) > slots:
            raise ValueError(f"a face has {max(counts)} references but the core has {slots} slots; "
                             "encode references through this BackendRestorer so it can grow them")
        with_input = with_refs and (r.config.include_input_kv or min(counts) == 0)
        keys, values, means, stds = [], [], [], []
        if with_refs:
            moved = [None if c is None else r._fit(c) for c in caches]
            for i in range(len(r.net.shared_layers)):
                fields = []
                for attr, fill in (("keys", 0.0), ("values", 0.0), ("value_mean", 0.0), ("value_std", 1.0)):
                    like = next(getattr(c, attr)[i] for c in moved if c is not None)
                    rows = []
                    for c, n in zip(moved, counts):
                        t = getattr(c, attr)[i] if c is not None else like[:0]
                        if n < slots:
                            t = torch.cat([t, torch.full((slots - n, *like.shape[1:]), fill, device=self.device,
                                                         dtype=self.dtype)])
                        rows.append(t)
                    fields.append(torch.stack(rows))
                keys.append(fields[0])
                values.append(fields[1])
                means.append(fields[2])
                stds.append(fields[3])
            ref_mask = torch.arange(slots, device=self.device)[None, :] < torch.tensor(counts, device=self.device)[:, None]
        else:
            ref_mask = torch.zeros(bucket, slots, dtype=torch.bool, device=self.device)
        input_mask = None
        if with_input:
            input_mask = torch.tensor([r.config.include_input_kv or n == 0 for n in counts], device=self.device)
        key = (bucket, slots, with_refs, with_input)
        return key, (x, noise, keys, values, means, stds, ref_mask, input_mask)

    def _restore_padded(self, faces, caches, seeds):
        b = faces.shape[0]
        key, args = self.padded_inputs(faces, caches, seeds)
        engine = self._engine(key, args)
        out = engine.fn(*args)
        # CUDA-graph outputs live in memory the next replay overwrites: copy what we keep.
        return out[:b].to(torch.float32, copy=True)

    # -- engines --------------------------------------------------------------------------------
    def _engine(self, key, args) -> _Engine:
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                bucket, slots, with_refs, with_input = key
                log.debug("building %s engine for %d faces, %d reference slots%s", self.backend, bucket, slots,
                          "" if with_refs else ", no references")
                core = FrameCore(self._net, with_refs=with_refs, with_input=with_input).eval()
                if self.backend == "compile":
                    engine = _Engine(self._compiled(core), "compile")
                else:
                    engine = _Engine(self._tensorrt(core, key, args), "tensorrt")
                self._engines[key] = engine
            return engine

    def _compiled(self, core: FrameCore):
        cuda = self.device.type == "cuda"
        mode = self.config.compile_mode
        if mode is None and cuda and self.config.cuda_graphs:
            mode = "reduce-overhead"
        if self.config.compiler != "inductor":
            mode = None  # modes are inductor options
        compiled = torch.compile(core, backend=self.config.compiler, mode=mode, dynamic=False, fullgraph=True)
        # Every engine is a separate entry of the same code object (FrameCore.forward); dynamo's
        # default of 8 entries per code object would silently fall back to eager past 8 shapes.
        limit = 4 * max(8, len(self.config.buckets) * 3)

        def run(*args):
            with torch._dynamo.config.patch(recompile_limit=limit):
                return compiled(*args)

        return run

    def _tensorrt(self, core: FrameCore, key, args):
        import torch_tensorrt

        path = self.engine_path(key)
        if path.is_file():
            try:
                program = torch_tensorrt.load(str(path)).module()
                log.info("TensorRT engine loaded from %s", path)
                return program
            except Exception as exc:  # a stale or damaged engine is rebuilt
                log.warning("cannot load TensorRT engine %s (%s); building it again", path, exc)
        x, noise, keys, values, means, stds, ref_mask, input_mask = args
        kwargs = {"input_mask": input_mask} if input_mask is not None else {}
        exported = torch.export.export(core, (x, noise, keys, values, means, stds, ref_mask), kwargs=kwargs)
        inputs = [x, noise, *keys, *values, *means, *stds, ref_mask] + ([input_mask] if input_mask is not None else [])
        options = dict(enabled_precisions={self.dtype}, use_explicit_typing=False,
                       # our attention is not causal; Torch-TensorRT's default would make it so
                       attn_bias_is_causal=False)
        try:
            program = torch_tensorrt.dynamo.compile(exported, inputs=inputs, **options)
        except TypeError:  # an older torch_tensorrt without one of the options
            options.pop("attn_bias_is_causal")
            options.pop("use_explicit_typing")
            program = torch_tensorrt.dynamo.compile(exported, inputs=inputs, **options)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            torch_tensorrt.save(program, str(tmp), inputs=inputs)
            tmp.replace(path)
        except Exception as exc:
            log.warning("could not cache the TensorRT engine at %s: %s", path, exc)
        return program

    def engine_path(self, key) -> Path:
        """Where the TensorRT engine for ``key`` is cached: a hash of everything it depends on."""
        bucket, slots, with_refs, with_input = key
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        try:
            from importlib.metadata import version

            trt_version = version("torch_tensorrt")
        except Exception:
            trt_version = "none"
        ident = {
            # the name carries "+taesd" when --fast-vae swapped the decoder (not in the fingerprint)
            "name": getattr(self.restorer, "name", "model"),
            "model": self.restorer.fingerprint, "lora_merged": True, "resolution": self.resolution,
            "batch": bucket, "slots": slots, "refs": with_refs, "input": with_input, "dtype": str(self.dtype),
            "gpu": gpu, "torch": torch.__version__, "torch_tensorrt": trt_version,
        }
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
        return engine_dir(self.config.engine_dir) / f"{getattr(self.restorer, 'name', 'model')}-{digest}.ep"

    def warmup(self, batches: Sequence[int] | None = None, with_references: bool = True,
               without_references: bool = False, mixed: bool = False) -> None:
        """Build (compile) every engine a run may need now, not on the first frame that needs it.

        ``batches``: bucket sizes to build (default all); ``with_references``: faces with
        references; ``without_references``: faces without; ``mixed``: batches mixing both.
        """
        if self.backend == "eager":
            return
        r = self.restorer
        res = self.resolution
        g = torch.Generator().manual_seed(0)
        probe = torch.rand(1, 3, res, res, generator=g)
        cache = r.encode_references(torch.rand(1, 3, res, res, generator=g)) if (with_references or mixed) else None
        for b in batches or self.config.buckets:
            faces = probe.expand(b, -1, -1, -1)
            variants = []
            if with_references:
                variants.append([cache] * b)
            if without_references:
                variants.append([None] * b)
            if mixed and b > 1:
                variants.append([cache] * (b - 1) + [None])
            for caches in variants:
                self.restore(faces, caches)


def engine_dir(override: str | Path | None = None) -> Path:
    """Folder of cached TensorRT engines (see :class:`BackendConfig`)."""
    if override is not None:
        return Path(override)
    home = os.environ.get("STREAMRESTORE_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "streamrestore") / "engines"


def build_backend(restorer, backend: str = "auto", config: BackendConfig | None = None):
    """``restorer`` run by ``backend`` (``auto`` resolves and logs once; see :func:`select_backend`).

    Restorers that are not InstantRestorers (the identity restorer) come back unchanged: they
    have no network to compile.
    """
    config = config or BackendConfig(backend=backend)
    if not hasattr(restorer, "net"):
        return restorer
    chosen = select_backend(backend, restorer.device)
    return BackendRestorer(restorer, chosen, config)
