"""The per-frame core and the restorer that runs it on one backend.

:class:`FrameCore` is the one export core: faces, noise and packed reference K/V in (plain
tensors of fixed shapes), restored faces out. :class:`BackendRestorer` pads a frame's faces to
a batch bucket and its references to fixed slots (:func:`~streamrestore.model.packing.pack_caches`)
and runs one engine per shape: the eager module, a ``torch.compile`` of it, a TensorRT program
or an ONNX Runtime program.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from streamrestore.backends.engine_files import engine_path, mark_used, prune_engines
from streamrestore.backends.onnx_runtime import onnxruntime_engine
from streamrestore.backends.selection import BackendConfig, select_backend
from streamrestore.backends.tensorrt import tensorrt_engine
from streamrestore.errors import ModelError
from streamrestore.model.packing import pack_caches, pack_face_means

log = logging.getLogger(__name__)

#: ONNX Runtime sessions a backend keeps open beyond those used in the last minute: one per face count
#: and reference count met, each 55-250 MB (lite, measured), so a long-lived process (a notebook, a
#: batch worker) meeting photos of 1 to 29 faces grew from 0.8 to 2.5 GB. One closed is reopened from
#: its cached file (~0.1-0.3 s) when needed again. (Per backend: --adapt serves each person by its own.)
ONNX_SESSIONS_KEPT = 4
#: ... and sessions used this recently are kept whatever their number
ONNX_SESSION_IDLE_SECONDS = 60.0


class FrameCore(nn.Module):
    """Faces in, restored faces out, with every reference input a plain tensor of fixed shape.

    ``forward(faces, noise, keys, values, means, stds, ref_mask, input_mask, reference_faces)``: faces (B, 3, R, R)
    in [0, 1] and the compute dtype; noise (B, C, h, w); per shared layer (in
    ``net.shared_layers`` order) keys/values (B, S, L, C) and means/stds (B, S, 1, C) for S
    reference slots; ``ref_mask`` (B, S) bool, True for real references; ``input_mask`` (B,)
    bool, faces that also attend to their own tokens (given only when ``with_input``);
    ``reference_faces`` (B, 3, R, R), each face's mean reference face (given only when the
    detail head sees references, see :func:`~streamrestore.model.packing.pack_face_means`).
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
                input_mask: torch.Tensor | None = None, reference_faces: torch.Tensor | None = None) -> torch.Tensor:
        from streamrestore.model.attention import LayerReferences, ReferenceBatch

        latents = self.net.encode(faces)
        refs = None
        if self.with_refs:
            layers = {name: LayerReferences(k, v, m, s)
                      for name, k, v, m, s in zip(self.net.shared_layers, keys, values, means, stds)}
            refs = ReferenceBatch(layers, ref_mask, input_mask if self.with_input else None, False)
        return self.net.refine(faces, self.net.decode(self.net.denoise(latents, noise, refs)), reference_faces)


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
    if count:  # (lite has no LoRA layers: nothing worth a line)
        log.debug("merged the model's LoRA weights into its %d layers for the fast path", count)
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
    """One callable per (bucket, structure): eager module, compiled module, TensorRT or ONNX Runtime program.
    ``reopenable``: an ONNX Runtime session whose program is kept on disk (one closed is opened again in
    a fraction of a second; one whose cache folder could not be written would need another export)."""

    def __init__(self, fn, name: str, reopenable: bool = False):
        self.fn = fn
        self.name = name
        self.reopenable = reopenable
        self.used = time.monotonic()


class BackendRestorer:
    """An :class:`~streamrestore.model.restorer.InstantRestorer` run by one backend.

    Implements :class:`~streamrestore.types.Restorer` (``noise_seeds`` included). Outputs
    match the wrapped restorer's ``restore`` up to float rounding, whatever the padding (tests
    check it). Build with :func:`build_backend`.
    """

    def __init__(self, restorer, backend: str, config: BackendConfig = BackendConfig(),
                 fallback: str | None = None):
        """``fallback``: ``"eager"`` to run eagerly from then on when building an engine fails
        (what ``auto`` asks for: a model the exporter cannot take still restores); None raises."""
        if backend not in ("eager", "compile", "tensorrt", "onnxruntime"):
            raise ValueError(f"backend must be eager, compile, tensorrt or onnxruntime, got {backend!r}")
        if fallback not in (None, "eager"):
            raise ValueError(f"fallback must be None or 'eager', got {fallback!r}")
        self.restorer = restorer
        self.backend = backend
        self.fallback = fallback
        self.config = config
        self.resolution = restorer.resolution
        self.name = f"{getattr(restorer, 'name', 'restorer')}[{backend}]"
        self.device = restorer.device
        self.dtype = restorer.dtype
        # Compiled engines take a fixed slot count (recompiling costs tens of seconds); ONNX
        # programs export in ~2 s, so they take exactly the most references an identity has:
        # padded slots cost attention time (2 photos in 4 slots: restore 85 vs 67 ms eager).
        self.reference_slots = 1 if backend == "onnxruntime" else max(config.reference_slots, 1)
        self._lock = threading.Lock()
        # a compiled program on a GPU replays a CUDA graph into memory its next replay overwrites: two
        # streams restoring at once (a service's fresh() copies share this object) take turns, from the
        # call to the copy of its output; on the CPU, and with ONNX Runtime, each call has its own memory
        self._replay_lock = threading.Lock() if backend in ("compile", "tensorrt") and self.device.type == "cuda" \
            else None
        self._engines: OrderedDict[tuple[int, int, bool, bool], _Engine] = OrderedDict()  # (least recent first)
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
            log.log(logging.DEBUG if self.backend == "onnxruntime" else logging.INFO,
                    "%d references for one identity: the compiled core takes %d slots from now on",
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
        try:
            outs = [self._restore_padded(faces[i : i + chunk], list(caches[i : i + chunk]), seeds[i : i + chunk])
                    for i in range(0, b, chunk)]
        except (ModelError, MemoryError) as exc:
            with self._lock:  # (copies of a service share this object: one switches, the others follow it)
                if self.backend != "eager":
                    if self.fallback is None:
                        raise
                    if isinstance(exc, MemoryError):  # (eager holds less: no program, no session's copy of the weights)
                        log.warning("%s ran out of memory (%s); running %s from now on, which needs less",
                                    self.backend, exc, self.fallback)
                    else:
                        log.warning("%s backend unavailable for this model (%s); running %s from now on",
                                    self.backend, exc, self.fallback)
                    self.backend, self.fallback = self.fallback, None
                    self.name = f"{getattr(self.restorer, 'name', 'restorer')}[{self.backend}]"
                    self._engines.clear()  # (the sessions and the merged copy are not used again: their memory goes)
                    self._net = self.restorer.net
            return self._restore_eager(faces, caches, noise_seeds)
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
        attends to nothing (an all-masked row would be NaN). ``args`` are :class:`FrameCore`'s
        positional inputs; ``input_mask`` and ``reference_faces`` are None when the engine
        takes no such input.
        """
        r = self.restorer
        b = faces.shape[0]
        # ONNX programs export in ~2 s: they take exactly the faces there are (3 faces padded to 4
        # would cost a quarter more); compiled and TensorRT engines keep to the buckets
        bucket = b if self.backend == "onnxruntime" else bucket_for(b, self.config.buckets)
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
        if self.backend == "onnxruntime" and max(counts) > self.reference_slots:
            self.reference_slots = max(counts)  # references encoded elsewhere (a cache on disk): grow
        slots = self.reference_slots
        if max(counts) > slots:
            raise ValueError(f"a face has {max(counts)} references but the core has {slots} slots; "
                             "encode references through this BackendRestorer so it can grow them")
        refs = pack_caches(r.net, caches, self.device, self.dtype, slots=slots)
        keys, values, means, stds = [], [], [], []
        if refs is None:
            with_refs, with_input = False, False
            ref_mask = torch.zeros(bucket, slots, dtype=torch.bool, device=self.device)
            input_mask = None
        else:
            with_refs, with_input = True, refs.input_mask is not None
            for name in r.net.shared_layers:
                layer = refs.layers[name]
                keys.append(layer.keys)
                values.append(layer.values)
                means.append(layer.value_mean)
                stds.append(layer.value_std)
            ref_mask, input_mask = refs.ref_mask, refs.input_mask
        key = (bucket, slots, with_refs, with_input)
        reference_faces = None
        if r.net.head_sees_references:
            reference_faces = pack_face_means(caches, x).contiguous(memory_format=self._memory_format)
        return key, (x, noise, keys, values, means, stds, ref_mask, input_mask, reference_faces)

    def _restore_padded(self, faces, caches, seeds):
        b = faces.shape[0]
        key, args = self.padded_inputs(faces, caches, seeds)
        engine = self._engine(key, args)
        if self._replay_lock is None:
            return engine.fn(*args)[:b].to(torch.float32, copy=True)
        with self._replay_lock:
            out = engine.fn(*args)
            # CUDA-graph outputs live in memory the next replay overwrites: copy what we keep.
            return out[:b].to(torch.float32, copy=True)

    # -- engines --------------------------------------------------------------------------------
    def _engine(self, key, args) -> _Engine:
        with self._lock:
            if self.backend == "eager":  # (another thread fell back meanwhile: this call follows it, see restore)
                raise ModelError("the backend fell back to eager")
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                engine.used = time.monotonic()
            else:
                bucket, slots, with_refs, with_input = key
                log.debug("building the %s engine for batches of up to %d face%s, %d reference slots%s", self.backend,
                          bucket, "" if bucket == 1 else "s", slots, "" if with_refs else ", no references")
                core = FrameCore(self._net, with_refs=with_refs, with_input=with_input).eval()
                if self.backend == "compile":
                    engine = _Engine(self._compiled(core), "compile")
                else:  # a program file on disk: built or loaded, then kept within the cache's limit
                    path = self.engine_path(key)
                    if self.backend == "onnxruntime":
                        # the session's threads are fixed when it opens: the caller's torch thread count
                        run, kept = onnxruntime_engine(core, args, path, torch.get_num_threads())
                        engine = _Engine(run, "onnxruntime", reopenable=kept)
                    else:
                        engine = _Engine(tensorrt_engine(core, args, self.dtype, path), "tensorrt")
                    mark_used(path)
                    if self.config.engine_cache_mb is not None:
                        prune_engines(path.parent, self.config.engine_cache_mb * 2**20, keep=path)
                self._engines[key] = engine
            if self.backend == "onnxruntime" and len(self._engines) > ONNX_SESSIONS_KEPT:
                self._close_idle_sessions()  # (this one was just used: never among them)
            return engine

    def _close_idle_sessions(self) -> None:
        """Closes the sessions beyond :data:`ONNX_SESSIONS_KEPT` (least recently used first) that no
        call used for :data:`ONNX_SESSION_IDLE_SECONDS` and whose programs are on disk: a video whose
        restored face count changes from frame to frame uses all of its sessions every few frames."""
        now = time.monotonic()
        idle = [key for key, engine in self._engines.items()
                if engine.reopenable and now - engine.used >= ONNX_SESSION_IDLE_SECONDS]
        for key in idle[:max(0, len(self._engines) - ONNX_SESSIONS_KEPT)]:
            del self._engines[key]

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

    def engine_path(self, key) -> Path:
        """Where the TensorRT or ONNX engine for ``key`` is cached (see
        :func:`~streamrestore.backends.engine_files.engine_path`)."""
        return engine_path(self.restorer, key, self.config.engine_dir, self.backend)

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


def build_backend(restorer, backend: str = "auto", config: BackendConfig | None = None):
    """``restorer`` run by ``backend`` (``auto`` resolves and logs once; see :func:`select_backend`).

    Restorers that are not InstantRestorers (the identity restorer) come back unchanged: they
    have no network to compile.
    """
    config = config or BackendConfig(backend=backend)
    if not hasattr(restorer, "net"):
        return restorer
    model_bytes = sum(p.numel() * p.element_size() for p in restorer.net.parameters())
    chosen = select_backend(backend, restorer.device, model_bytes)
    fallback = "eager" if backend == "auto" and chosen != "eager" else None
    return BackendRestorer(restorer, chosen, config, fallback=fallback)


def per_person_backend(restorer, backend: str = "auto"):
    """How copies of ``restorer`` made per person (``--adapt``'s fine-tunes) are served: a function
    wrapping one in its backend, or None for the eager networks themselves.

    Only ``onnxruntime`` of the compiled backends is used: a copy exports in seconds, once per
    person, face count and reference count (on 2 CPU cores, one torch thread, it restores a face in
    54 ms against eager's 81: docs/video_eval.md, "Session 32"), and with ``auto`` a copy it cannot
    export runs eagerly, as :func:`build_backend` does for the plain model. A backend that resolves
    to anything else gives None: a TensorRT or compiled engine per person would take minutes, and
    an eager wrapper on CUDA would switch the shared weights to channels-last in place, which the
    fine-tunes copy to the CPU.
    """
    if not hasattr(restorer, "net"):
        return None
    model_bytes = sum(p.numel() * p.element_size() for p in restorer.net.parameters())
    chosen = select_backend(backend, restorer.device, model_bytes)
    if chosen != "onnxruntime":
        if chosen != "eager":
            log.info("adapted models run eagerly: building a %s engine per person would take minutes", chosen)
        return None
    fallback = "eager" if backend == "auto" else None
    return lambda copy: BackendRestorer(copy, chosen, BackendConfig(backend=chosen), fallback=fallback)
