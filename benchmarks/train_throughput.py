"""Where a training run's time goes: the data loader alone, the update alone, and both together.

    python benchmarks/train_throughput.py configs/experiments/lite_v11_gpu.toml --seconds 20 --set num_workers=14

Builds the run's :class:`~streamrestore.train.loop.Trainer` (output in a temporary folder, nothing
checkpointed) and measures samples per second three ways, each for ``--seconds`` after a warm-up:

- ``loader``: batches drawn from ``Trainer.dataloader()`` (degradation, references, transfer to the
  device) and dropped;
- ``update``: ``Trainer.train_step`` over and over on one batch already on the device (forward,
  losses, backward, optimiser), the device synchronised before the clock is read;
- ``both``: the loop as training runs it.

The slower of ``loader`` and ``update`` bounds ``both``; a lent GPU's minutes are best spent after
raising that one (more workers, a cheaper sample, a bigger batch). Prints one JSON line per mode
(and ``--json PATH`` writes them all).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(batches, seconds: float, warmup: int, work) -> dict:
    """Samples/s of ``work(batch)`` over ``batches`` for ``seconds`` after ``warmup`` batches."""
    samples = steps = 0
    started = None
    for i, batch in enumerate(batches):
        work(batch)
        if i + 1 == warmup:
            _sync()
            started = time.perf_counter()
            continue
        if started is None:
            continue
        samples += batch["degraded"].shape[0]
        steps += 1
        if time.perf_counter() - started >= seconds:
            break
    _sync()
    elapsed = time.perf_counter() - started if started is not None else float("nan")
    return {"samples_per_s": round(samples / elapsed, 2), "steps_per_s": round(steps / elapsed, 3),
            "steps": steps, "seconds": round(elapsed, 2)}


def _profile(trainer, batch: dict, path: str, steps: int = 5) -> None:
    """The operators of ``steps`` updates, by total time on the CPU side (launches and Python
    included) and on the device."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.train_step(batch)
        _sync()
    table = prof.key_averages()
    with open(path, "w") as handle:
        handle.write(f"{steps} updates, batch {batch['degraded'].shape[0]}\n\n")
        handle.write(table.table(sort_by="cpu_time_total", row_limit=40) + "\n\n")
        if torch.cuda.is_available():
            handle.write(table.table(sort_by="cuda_time_total", row_limit=40) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as `streamrestore train --set`")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per mode")
    p.add_argument("--warmup", type=int, default=5, help="batches before the clock starts (worker start-up, kernels)")
    p.add_argument("--modes", default="loader,update,both")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--profile", metavar="PATH", help="after the update mode, profile a few updates (torch.profiler) "
                                                      "and write the operators' table here")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 1:
        p.error(f"--seconds must be > 0 and --warmup >= 1, got {args.seconds}, {args.warmup}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"loader", "update", "both"}
    if unknown:
        p.error(f"unknown --modes {sorted(unknown)}; choose from loader, update, both")

    import torch

    from streamrestore.train.config import load_train_config, parse_overrides
    from streamrestore.train.loop import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        overrides = parse_overrides(args.set)
        overrides["output_dir"] = tmp  # the measurement writes no checkpoint anywhere that matters
        # the update mode moves the trainer on: batches enough that a later mode never runs out
        overrides["steps"] = 1_000_000
        trainer = Trainer(load_train_config(args.config, **overrides))
        trainer.model.train()
        base = {"config": args.config, "batch_size": trainer.config.batch_size,
                "num_workers": trainer.config.num_workers, "device": str(trainer.accelerator.device)}
        for mode in modes:
            if mode == "loader":
                r = _timed(trainer.dataloader(), args.seconds, args.warmup, lambda b: None)
            elif mode == "update":
                batch = next(iter(trainer.dataloader()))

                def repeat(one=batch):
                    while True:
                        yield one

                r = _timed(repeat(), args.seconds, args.warmup, trainer.train_step)
                if args.profile:
                    _profile(trainer, batch, args.profile)
            else:
                r = _timed(trainer.dataloader(), args.seconds, args.warmup, trainer.train_step)
            row = {"mode": mode, **r, **base}
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
