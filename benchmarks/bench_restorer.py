"""Restorer speed: ms per face with cached references vs recomputing them every frame.

Random weights (speed does not depend on their values). "cached": references were encoded once
(ReferenceCache) and every frame only runs restore(). "recomputed": every frame each face's
references go through the reference network again (each face its own identity), then restore().

    python benchmarks/bench_restorer.py --scale tiny
    python benchmarks/bench_restorer.py --scale paper --device cuda --dtype fp16 --batch 1,4 --refs 4 --compile
    python benchmarks/bench_restorer.py --scale paper --device cpu --batch 1 --iters 1 --warmup 0
    python benchmarks/bench_restorer.py --model lite --batch 1,8 --skip-recompute   # a trained model file or name
    OMP_NUM_THREADS=1 python benchmarks/bench_restorer.py --model random-paper --device cpu --batch 1 --iters 1 --warmup 0

Peak memory: torch's allocator peak on CUDA; on the CPU the process's resident set (weights
included), sampled while each measurement runs.
"""
from __future__ import annotations

import argparse
import time

import torch

from streamrestore.bench import DTYPES
from streamrestore.bench import median_seconds as timed
from streamrestore.model import InstantRestoreNet, InstantRestorer, paper_config, tiny_config
from streamrestore.model.cache import paper_cache_bytes_per_reference


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 20 ms
    from /proc (CPU runs; torch's CUDA counters cover the GPU). Linux only: NaN elsewhere."""

    def __enter__(self):
        import threading

        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            return float("nan")
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def compile_net(net: InstantRestoreNet, mode: str | None) -> None:
    """torch.compile the UNets and the VAE encoder/decoder in place (benchmark only)."""
    # static shapes: one graph per (batch, references) shape, like an engine per stream
    opts = dict(mode=mode, dynamic=False)
    net.unet = torch.compile(net.unet, **opts)
    if net.ref_unet is not None:
        net.ref_unet = torch.compile(net.ref_unet, **opts)
    for vae in {id(v): v for v in (net.vae, net.ref_vae) if v is not None}.values():
        vae.encoder = torch.compile(vae.encoder, **opts)
        vae.decoder = torch.compile(vae.decoder, **opts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=["paper", "tiny"], default="tiny", help="paper: SD-Turbo UNet + SD VAE, 512 px")
    ap.add_argument("--model", help="time this model (a name such as lite, or a file) instead of random --scale weights")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--batch", default="1,4", help="comma-separated batch sizes (faces per call)")
    ap.add_argument("--refs", type=int, default=4, help="references per identity")
    ap.add_argument("--iters", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (compile happens here)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    ap.add_argument("--skip-recompute", action="store_true", help="only time the cached path")
    ap.add_argument("--one-identity", action="store_true",
                    help="every face of a batch uses the same person's cache (encodes one reference set, "
                         "not one per face: the cached path costs the same, setting up is batch times cheaper)")
    args = ap.parse_args(argv)

    dtype = DTYPES[args.dtype] if args.dtype else None
    batches = [int(b) for b in args.batch.split(",")]

    start = time.perf_counter()
    if args.model:
        from streamrestore.model.registry import load_model

        restorer = load_model(args.model, device=args.device, dtype=dtype)
        net, cfg = restorer.net, restorer.net.config
    else:
        cfg = paper_config() if args.scale == "paper" else tiny_config()
        torch.manual_seed(0)
        net = InstantRestoreNet(cfg)
        restorer = InstantRestorer(net, device=args.device, dtype=dtype, name=args.scale)
    device = restorer.device
    n_params = sum(p.numel() for p in net.parameters())
    print(f"# model={args.model or args.scale} device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} threads) dtype={restorer.dtype} resolution={cfg.resolution} "
          f"params={n_params / 1e6:.1f}M build={time.perf_counter() - start:.1f}s")
    per_ref = paper_cache_bytes_per_reference(cfg.unet, cfg.latent_size, torch.finfo(restorer.dtype).bits // 8)
    print(f"# reference cache: {per_ref / 2**20:.2f} MiB per reference ({len(net.shared_layers)} layers, "
          f"{restorer.dtype}), {args.refs * per_ref / 2**20:.1f} MiB per identity with {args.refs} references")

    g = torch.Generator().manual_seed(0)
    r = cfg.resolution
    rows = []
    modes = ["eager"] + (["compile"] if args.compile else [])
    for mode in modes:
        if mode == "compile":
            compile_net(restorer.net, args.compile_mode)
        for b in batches:
            faces = torch.rand(b, 3, r, r, generator=g)
            refs = [torch.rand(args.refs, 3, r, r, generator=g) for _ in range(1 if args.one_identity else b)]
            caches = [restorer.encode_references(x) for x in refs]
            if args.one_identity:
                refs, caches = refs * b, caches * b

            def cached():
                restorer.restore(faces, caches)

            def recomputed():
                restorer.restore(faces, [restorer.encode_references(x) for x in refs])

            warmup = max(args.warmup, 2) if mode == "compile" else args.warmup  # compiles happen here
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            calls = args.iters + warmup
            cpu0 = time.process_time()  # CPU seconds of this process: what a busy shared machine does not inflate
            with PeakRSS() as rss:
                t_cached = timed(cached, device, args.iters, warmup)
            cpu_cached = (time.process_time() - cpu0) / calls
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak
            t_recomp, peak_re, cpu_recomp = float("nan"), float("nan"), float("nan")
            if not args.skip_recompute:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                cpu0 = time.process_time()
                with PeakRSS() as rss:
                    t_recomp = timed(recomputed, device, args.iters, warmup)
                cpu_recomp = (time.process_time() - cpu0) / calls
                peak_re = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak
            rows.append((mode, b, args.refs, 1e3 * t_cached / b, 1e3 * t_recomp / b, t_recomp / t_cached, peak, peak_re))
            print(f"#  {mode} batch={b}: CPU time per face cached {1e3 * cpu_cached / b:.0f} ms, "
                  f"recomputed {1e3 * cpu_recomp / b:.0f} ms", flush=True)
            print(f"#  done {mode} batch={b}", flush=True)

    print()
    where = "GPU allocated" if device.type == "cuda" else "process RSS"
    print(f"| mode | batch | refs | cached ms/face | recomputed ms/face | cache speed-up | faces/s cached "
          f"| peak MiB cached ({where}) | peak MiB recomputed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, b, n, tc, tr, sp, peak, peak_re in rows:
        print(f"| {mode} | {b} | {n} | {tc:.1f} | {tr:.1f} | {sp:.2f}x | {1e3 / tc:.2f} | {peak:.0f} | {peak_re:.0f} |")


if __name__ == "__main__":
    main()
