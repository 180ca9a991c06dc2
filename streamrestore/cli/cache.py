"""``streamrestore cache``: what streamrestore keeps between runs, where, and how big; ``--clear``
deletes it.

    streamrestore cache [--clear engines|adapted|prompt|all ...]

Prints the cache folder, what placed it (a variable, or the default), and a line per place
(:data:`streamrestore.cache_dir.CACHE_PLACES`): its files, their size and what deleting them
costs. Loads no torch.
"""
from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
import tempfile
from pathlib import Path

from streamrestore.cache_dir import (
    CACHE_PLACES,
    cache_parts,
    cache_root,
    cache_root_source,
    clear_cache,
    other_cache_roots,
)
from streamrestore.cli.options import CommandParser
from streamrestore.errors import OutputError, UserError, one_line

_ALL = "all"


def build_parser() -> argparse.ArgumentParser:
    names = [place.name for place in CACHE_PLACES]
    p = CommandParser(
        prog="streamrestore cache",
        description="Show what streamrestore keeps between runs (exported programs, --adapt's fine-tunes, the "
                    "official model's prompt), where and how big; --clear deletes it. Anything there is made "
                    "again when needed. The folder is $STREAMRESTORE_CACHE, else $STREAMRESTORE_HOME (the older "
                    "name), else $XDG_CACHE_HOME/streamrestore, else ~/.cache/streamrestore.",
    )
    p.add_argument("--clear", action="append", choices=[*names, _ALL], metavar="|".join([*names, _ALL]),
                   help="delete this place's files (repeat for several; all: every place). Safe beside a "
                        "running streamrestore: it keeps what it has open, and the next run makes it again")
    return p


def size_text(size: int) -> str:
    """A byte count as a person reads it (decimal units, as ``ls -h --si`` and file managers)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def torch_compile_cache() -> Path:
    """Where torch keeps ``--backend compile``'s kernels: ``$TORCHINDUCTOR_CACHE_DIR``, else
    ``torchinductor_<user>`` in the temporary folder (torch's own rule, read without loading torch)."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given:
        return Path(given)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid_{os.getuid()}"
    return Path(tempfile.gettempdir()) / f"torchinductor_{user}"


def _tree_bytes(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
    return total


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    root = cache_root()
    if args.clear:
        names = [place.name for place in CACHE_PLACES] if _ALL in args.clear else list(dict.fromkeys(args.clear))
        try:
            cleared = clear_cache(names, root)
        except OSError as exc:
            raise OutputError(f"cannot delete {exc.filename or root}: {exc.strerror or exc}") from exc
        kept = (f"; kept {cleared.kept} temporary file(s) under an hour old, which a running streamrestore may be "
                "writing" if cleared.kept else "")
        print(one_line(f"deleted {cleared.files} file(s), {size_text(cleared.size)}, from {root} ({', '.join(names)})"
                       f"{kept}"))
        _say_other_roots(names)
        return 0
    try:
        parts = cache_parts(root)
    except OSError as exc:  # (a folder of it this user cannot read)
        raise UserError(f"cannot read {exc.filename or root}: {exc.strerror or exc}") from None
    print(one_line(f"cache: {root} (placed by {cache_root_source()})"))
    width = max(len(part.name) for part in parts)
    for part in parts:
        held = f"{part.files} file(s), {size_text(part.size)}" if part.files else "empty"
        print(f"  {part.name:<{width}}  {held:<22}  {part.about}")
    total = sum(part.size for part in parts)
    print(f"  {'total':<{width}}  {size_text(total)}")
    compiled = torch_compile_cache()
    if compiled.is_dir():  # torch's, shared with anything else that compiles: shown, never cleared here
        print(f"torch's own compile cache (--backend compile), not cleared here: {compiled}, "
              f"{size_text(_tree_bytes(compiled))}")
    _say_other_roots([place.name for place in CACHE_PLACES])
    print("`streamrestore cache --clear PLACE` deletes a place's files (all: every place)", file=sys.stderr)
    return 0


def _say_other_roots(names: list[str]) -> None:
    """A line for each other folder that holds files of the places ``names`` (:func:`other_cache_roots`): a
    person's fine-tune kept there by an older version, or under other variables, was out of sight of ``cache``
    and of ``--clear``."""
    for other in other_cache_roots():
        try:
            held = [part for part in cache_parts(other) if part.files and part.name in names]
        except OSError:
            continue
        if held:
            what = ", ".join(f"{part.name} {part.files} file(s), {size_text(part.size)}" for part in held)
            print(one_line(f"also: {other} holds {what}, kept there by an older version or under other variables; "
                           f"STREAMRESTORE_CACHE={shlex.quote(str(other))} streamrestore cache --clear PLACE deletes "
                           "them"))
