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

__all__ = ["TORCH_THREADS_HELP", "cpu_quota_cores", "default_torch_threads", "resolve_torch_threads", "torch_threads"]

#: ``--torch-threads`` help, the same for every command that restores
TORCH_THREADS_HELP = ("CPU threads for the restorer (default: half the cores, at least 1; decoding, detection and "
                      "encoding run beside it and more threads only contend. On a machine busy with other work, "
                      "1 is often fastest)")


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (a container's cpuset, taskset), else the machine's,
    and no more than its CPU quota allows (:func:`cpu_quota_cores`: ``docker --cpus 1``, a Kubernetes limit,
    which leave every core visible)."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cpu_quota_cores()
    return max(1, min(cores, quota)) if quota is not None else cores


def cpu_quota_cores(root: str = "/") -> int | None:
    """The cores' worth of CPU time this process's control group may use a period (its quota over its period,
    rounded up: ``docker --cpus 1.5`` gives 2), None where none is set. Read from cgroup v2's ``cpu.max``, else
    v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, of the process's own group (``/proc/self/cgroup``) and
    of the root group (a container's own, with a cgroup namespace). ``root``: where ``/proc`` and ``/sys`` are
    (tests)."""
    import math

    base = os.path.join(root, "sys", "fs", "cgroup")
    try:
        with open(os.path.join(root, "proc", "self", "cgroup"), encoding="utf-8") as lines:
            groups = dict(line.rstrip("\n").split(":", 2)[1:] for line in lines if line.count(":") >= 2)
    except (OSError, ValueError):
        groups = {}
    v1 = next((path for controllers, path in groups.items() if "cpu" in controllers.split(",")), None)
    candidates = []
    for group in dict.fromkeys([groups.get(""), "/"]):  # (v2: the line "0::/path")
        if group is not None:
            candidates.append(("v2", os.path.join(base, group.lstrip("/"), "cpu.max")))
    for folder in ("cpu", "cpu,cpuacct"):
        for group in dict.fromkeys([v1, "/"]):
            if group is not None:
                candidates.append(("v1", os.path.join(base, folder, group.lstrip("/"))))
    for kind, path in candidates:
        try:
            if kind == "v2":
                with open(path, encoding="utf-8") as limit:
                    quota, period = limit.read().split()[:2]
            else:
                with open(os.path.join(path, "cpu.cfs_quota_us"), encoding="utf-8") as limit:
                    quota = limit.read().strip()
                with open(os.path.join(path, "cpu.cfs_period_us"), encoding="utf-8") as limit:
                    period = limit.read().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            continue  # (no quota here; a more general group may have one)
        try:
            cores = math.ceil(int(quota) / int(period))
        except (ValueError, ZeroDivisionError):
            continue
        if cores >= 1:
            return cores
    return None


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
