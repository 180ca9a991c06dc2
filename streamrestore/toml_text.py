"""TOML reading on every Python the package supports: the standard library's ``tomllib`` from 3.11,
its backport ``tomli`` (a dependency there) on 3.10. Training configs and data licences are TOML."""
from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from tomllib import TOMLDecodeError, loads
else:  # pragma: no cover - the test machines run 3.11
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "loads"]
