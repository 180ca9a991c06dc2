"""Whether the optional Triton kernels can run here (kept apart so the kernel modules and the
package that re-exports them do not import each other)."""
from __future__ import annotations

import functools
import importlib.util


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it may still lack a GPU to run on)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install (wrong CUDA/driver libs) counts as absent
        return False
    return True
