"""Two restorers' time per face, measured interleaved in one process (A, B, A, B, ...), so that a
machine whose speed drifts slows both alike; prints each one's median and the ratio B/A.

    python benchmarks/bench_restore_ab.py runs/lite_v4.safetensors lite [--rounds 6] [--faces 20]
        [--refs 2] [--threads 1] [--full-attention a|b]
    python benchmarks/bench_restore_ab.py lite lite --full-attention a --refs 4

What it answered: the detail head of lite v5 against lite v4, the same UNet without it; the
windowed reference attention against full attention over every reference token (``--full-attention a``
runs model A with the windowed path off, ``SharedImageAttnProcessor.windowed``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from streamrestore.api import load_restorer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_a")
    p.add_argument("model_b")
    p.add_argument("--rounds", type=int, default=6, help="A/B rounds (default 6)")
    p.add_argument("--faces", type=int, default=20, help="faces restored one by one per round (default 20)")
    p.add_argument("--refs", type=int, default=2, help="reference faces of the one identity (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the pipeline)")
    p.add_argument("--full-attention", choices=["a", "b"], default=None,
                   help="run model A or B with full reference attention (the windowed path off)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = {}
    for which, name in (("a", args.model_a), ("b", args.model_b)):
        restorer = load_restorer(name, device="cpu")
        label = f"{which.upper()} {name}"
        if args.full_attention == which:
            label += " (full attention)"
            for processor in restorer.net.unet.attn_processors.values():
                processor.windowed = False
        models[label] = restorer
    side = next(iter(models.values())).resolution
    g = torch.Generator().manual_seed(0)
    face = torch.rand(1, 3, side, side, generator=g)
    refs = torch.rand(args.refs, 3, side, side, generator=g)
    caches = {name: r.encode_references(refs) for name, r in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, r in models.items():  # warm-up: first calls build kernels
            for _ in range(5):
                r.restore(face, [caches[name]])
        for _ in range(args.rounds):
            for name, r in models.items():
                start = time.perf_counter()
                for _ in range(args.faces):
                    r.restore(face, [caches[name]])
                times[name].append((time.perf_counter() - start) / args.faces * 1000)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.1f} ms per face "
              f"(min {min(values):.1f}, max {max(values):.1f}, {args.rounds} rounds)")
    a, b = (statistics.median(times[n]) for n in models)
    label_a, label_b = models
    print(f"ratio {label_b} / {label_a}: {b / a:.3f}")


if __name__ == "__main__":
    main()
