"""``streamrestore train CONFIG``: train a restorer from a config file (TOML, YAML or JSON).

    streamrestore train configs/lite.toml                  # fresh run (or continue: --resume latest)
    streamrestore train configs/lite.toml --resume latest --max-minutes 40
    streamrestore train configs/lite.toml --set max_refs=4 --stop-at 1100   # other settings, stop early
    accelerate launch -m streamrestore.cli train configs/lite.toml   # several GPUs / machines

A config with ``[[phases]]`` runs them in order (``streamrestore.train.config.TrainConfig.phases``);
a resumed run continues in the phase of its checkpoint. Writes into the config's ``output_dir``:
``checkpoints/step_*`` (resumable; one at each phase's end), ``losses.csv``, ``validation.csv``
and, when the last step is reached, ``model.safetensors`` (the shippable format;
``--model runs/<name>/model.safetensors`` loads it everywhere a model name is taken).
"""
from __future__ import annotations

import argparse
import sys

from streamrestore.cli.options import CommandParser, configure_logging, decimal, log, whole


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="streamrestore train",
                                description="Train an InstantRestore-style restorer (accelerate: CPU, GPU, many GPUs).")
    p.add_argument("config", help="training config (.toml, .yaml or .json); see configs/lite.toml")
    p.add_argument("--resume", metavar="CKPT",
                   help="'latest' (newest checkpoint in output_dir, if any) or a checkpoint folder")
    p.add_argument("--output-dir", help="override the config's output_dir")
    p.add_argument("--data", help="override the config's data pack")
    p.add_argument("--steps", type=whole, help="override the config's total steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a top-level setting of the config (VALUE in TOML syntax: 0.2, true, \"text\"); "
                        "repeatable. A phase's own settings ([[phases]]) still win over it")
    p.add_argument("--stop-at", type=whole, metavar="STEP", help="checkpoint and stop at this step (resume later)")
    p.add_argument("--max-minutes", type=decimal, help="checkpoint and stop after this much wall time")
    p.add_argument("--schedule-by-time", action="store_true",
                   help="with --max-minutes: the learning rate decays over that time (or the steps, whichever ends "
                        "first), so a run stopped by the clock still ends at its lowest rate (a GPU lent for minutes)")
    p.add_argument("--export", metavar="PATH",
                   help="also write the weights in the shippable format to PATH when the run stops (e.g. at --stop-at); "
                        "the last step always writes <output_dir>/model.safetensors")
    p.add_argument("--torch-threads", "--threads", dest="threads", type=whole, metavar="N",
                   help="CPU threads for torch (default: torch's choice; --threads is the older name). On a machine "
                        "shared with other jobs, 1 is often several times faster than oversubscribed cores (OpenMP "
                        "threads wait on each other)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="also log debug lines")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    import importlib.util

    from streamrestore.errors import InputError
    from streamrestore.train.config import load_train_config, parse_overrides

    if importlib.util.find_spec("accelerate") is None:  # (said before the data and the model load)
        raise InputError('streamrestore train needs the accelerate package: pip install "streamrestore[train]"')
    from streamrestore.train.loop import TimeBudget, Trainer

    if args.max_minutes is not None and args.max_minutes <= 0:
        raise InputError(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.schedule_by_time and args.max_minutes is None:
        raise InputError("--schedule-by-time needs --max-minutes (the time the schedule runs over)")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--torch-threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    for key, value in {"output_dir": args.output_dir, "data": args.data, "steps": args.steps}.items():
        if value is None:
            continue
        if key in overrides and overrides[key] != value:  # two answers to one question: say so, pick neither
            flag = "--" + key.replace("_", "-")
            raise InputError(f"{flag} {value!r} and --set {key}={overrides[key]!r} disagree; give one of them")
        overrides[key] = value
    config = load_train_config(args.config, **overrides)
    budget = TimeBudget(args.max_minutes * 60) if args.schedule_by_time else None
    trainer = Trainer(config, resume=args.resume, time_budget=budget)
    log.info("model: %.2f M parameters (%.2f M trained); %d training targets of %d identities, %d held out",
             trainer.num_parameters / 1e6, trainer.num_trainable / 1e6, trainer.targets, len(trainer.train_ids),
             len(trainer.val_ids))
    result = trainer.train(stop_at=args.stop_at, max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
                           progress=not args.no_progress and sys.stderr.isatty())
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
    print(f"step {result.step}/{config.final_step}: {losses}", file=sys.stderr)
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}", file=sys.stderr)
    if result.exported is not None:
        print(f"model: {result.exported}", file=sys.stderr)
    if args.export:
        print(f"model: {trainer.export(args.export)}", file=sys.stderr)
    return 0
