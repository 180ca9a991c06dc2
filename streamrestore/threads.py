"""How many CPU threads torch gets for the restorer: one default for the CLI and the library.

Decoding, detection and encoding run beside the restorer, so torch's own default (one thread
per core) only makes them contend. Measured on 2 cores, 720p, lite: 1 restorer thread gave
15.1 fps and 104 ms of CPU per frame, 2 threads 13.5 fps and 144 ms. On 2 cores shared with
a training job, a small convolution took 12 ms with 2 threads and 0.4 ms with 1 (OpenMP threads
wait on each other). Hence the default: half the cores this process may run on, at least one.

The library sets torch's thread count only around its own work (:func:`torch_threads`) and puts
the caller's setting back afterwards; the CLI sets it for its whole process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

__all__ = ["TORCH_THREADS_HELP", "default_torch_threads", "resolve_torch_threads", "torch_threads"]

#: ``--torch-threads`` help, the same for every command that restores
TORCH_THREADS_HELP = ("CPU threads for the restorer (default: half the cores, at least 1; decoding, detection and "
                      "encoding run beside it and more threads only contend. On a machine busy with other work, "
                      "1 is often fastest)")


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity: a container's or taskset's), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_torch_threads() -> int:
    """Half the cores this process may use, at least 1 (see the module docstring)."""
    return max(1, usable_cores() // 2)


def resolve_torch_threads(requested: int | None) -> int:
    """``requested``, or :func:`default_torch_threads` for None."""
    if requested is None:
        return default_torch_threads()
    if int(requested) < 1:
        raise ValueError(f"torch_threads must be >= 1 or None, got {requested!r}")
    return int(requested)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with torch using ``count`` threads; the caller's setting is back afterwards.

    Cheap (well under a microsecond when the count changes), so it can wrap every frame.
    """
    import torch

    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
