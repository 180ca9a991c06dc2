"""The check every settings dataclass runs first: each field holds a value of its declared kind.

A range check such as ``tolerance <= 0`` lets NaN through (every comparison with NaN is false),
and NaN tolerances turned faces black with the run still ending well; a float where a count is
meant failed deep inside a frame (``slice indices must be integers``), and ``temporal=None`` as
an attribute error there. :func:`check_kinds` turns each into a ``ValueError`` naming the field,
before the object exists; each dataclass's own ``__post_init__`` then checks the ranges.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

__all__ = ["check_kinds"]


def _declared(field: dataclasses.Field) -> tuple[str, bool]:
    """(kind, whether None is allowed) of a field from its annotation (a string under
    ``from __future__ import annotations``)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    parts = [part.strip() for part in kind.split("|")]
    optional = "None" in parts
    parts = [part for part in parts if part != "None"]
    return (parts[0] if len(parts) == 1 else " | ".join(parts)), optional


def check_kinds(settings) -> None:
    """Raises ``ValueError`` naming the first field of the dataclass ``settings`` whose value is
    not of its declared kind: an ``int`` field takes a whole number (not a bool, not 1.5), a
    ``float`` field any finite real number, a field whose default is a dataclass (a nested
    settings object) an instance of that class. Fields of other kinds (strings, unions) are left
    to the class's own checks."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        kind, optional = _declared(field)
        if value is None and optional:
            continue
        if kind == "int":
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{field.name} must be a whole number, got {value!r}")
        elif kind == "float":
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
        else:
            default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                       else field.default)
            if dataclasses.is_dataclass(default) and not isinstance(value, type(default)):
                raise ValueError(f"{field.name} must be a {type(default).__name__}, got {value!r}")
