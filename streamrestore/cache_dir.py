"""Where streamrestore keeps what it computes once and reuses between runs.

Three kinds of file live there, each in its own place under one root:

* ``engines/``: exported ONNX programs and built TensorRT engines
  (:mod:`streamrestore.backends.engine_files`);
* ``adapted/``: per-person fine-tuned weights of ``--adapt`` (:mod:`streamrestore.model.adapt`), and the
  programs exported from them, which lie in ``engines/`` (their names hold :data:`ADAPTED_NAME`) but hold
  the person's fine-tune: they are counted and cleared with ``adapted``, not ``engines``;
* ``instantrestore_prompt_embeds.safetensors``: the official model's fixed prompt, embedded once
  (:mod:`streamrestore.model.registry`).

The root is ``$STREAMRESTORE_CACHE``, else ``$STREAMRESTORE_HOME`` (the name the engines and the
prompt were first kept under, still read), else ``$XDG_CACHE_HOME/streamrestore``, else
``~/.cache/streamrestore`` (``~`` in a variable is expanded), else, where the user has no home folder
(a container's arbitrary user id with no ``$HOME``, ``env -i``), ``streamrestore-cache-<uid>`` in the
system's temporary folder. Everything there can be deleted
and is made again when needed, at a cost: seconds for an ONNX program, minutes for a TensorRT
engine or a fine-tune; the prompt needs SD-Turbo's text encoder again.

:func:`cache_parts` says what each place holds and :func:`clear_cache` deletes them
(``streamrestore cache``). This module owns the places' names; it imports no torch, so the
command stays fast.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ADAPTED_NAME", "CACHE_PLACES", "CachePart", "CachePlace", "cache_parts", "cache_place", "cache_root",
           "cache_root_source", "clear_cache", "keep_private_if_personal", "place_path"]

#: the variables that place the root, first set wins (the module docstring)
ROOT_VARIABLES = ("STREAMRESTORE_CACHE", "STREAMRESTORE_HOME")


@dataclass(frozen=True)
class CachePlace:
    """One place under the root: a folder (or one file) holding one kind of cached work."""

    name: str  #: what ``streamrestore cache --clear`` calls it
    relative: str  #: its folder or file under the root
    suffixes: tuple[str, ...]  #: the kinds of file it holds; any other file there is neither counted nor deleted
    about: str  #: what its files are, and what deleting them costs
    #: files of another place's folder that are this place's: (that place's name, a part of their names)
    borrowed: tuple[str, str] | None = None


#: what a model adapted to a person adds to its name (``lite+adapt``), so to the names of the programs
#: exported from it (``engines/lite+adapt-<digest>.onnx``)
ADAPTED_NAME = "+adapt"


def keep_private_if_personal(path: Path, personal: bool | None = None) -> None:
    """Makes the cache file ``path`` (before it is renamed into place) readable by its owner only, whatever
    the umask, where it is made from a person's photos: a fine-tune (``personal``), or a program exported from
    one (its name holds :data:`ADAPTED_NAME`). On a shared machine such a file says whose face was worked on,
    and when; the cache's other files (programs of shipped models) follow the umask, as any file a tool writes.
    """
    if personal or (personal is None and ADAPTED_NAME + "-" in path.name):
        os.chmod(path, 0o600)


def make_cache_folders(folder: Path, private: bool = False) -> None:
    """Makes ``folder`` and the folders missing above it. Those of the cache (:func:`cache_root`, those inside it,
    and where XDG's rule placed it the folders above it, ``~/.cache`` on a fresh account) readable by their owner only, as the
    XDG base-directory spec asks of a cache: ``mkdir -p`` made them 0755, and the names of the files under them
    say whose faces were worked on. A folder a caller named elsewhere (``engine_dir=/srv/team/engines``) keeps
    the default mode, unless ``private`` (a person's fine-tunes: ``folder`` itself 0700). A folder already
    there keeps its mode."""
    root = cache_root().expanduser().absolute()
    # (the folders above the root are the cache's where XDG's rule placed it: ~/.cache; not above a root a
    # variable named, /srv/team/cache's /srv/team)
    above = not any(os.environ.get(name) for name in ROOT_VARIABLES)
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        here = made.expanduser().absolute()
        of_cache = here == root or root in here.parents or (above and here in root.parents)
        # (exist_ok: two processes making it at once)
        made.mkdir(mode=0o700 if of_cache or (private and made == missing[0]) else 0o777, exist_ok=True)


#: the cache's places (the module docstring)
CACHE_PLACES = (
    CachePlace("engines", "engines", (".onnx", ".ep"),
               "exported ONNX programs and TensorRT engines (made again in seconds, or minutes for TensorRT)"),
    CachePlace("adapted", "adapted", (".safetensors",),
               "--adapt's fine-tunes, one per person and settings, and the programs exported from them (made again "
               "in about a minute each)", borrowed=("engines", ADAPTED_NAME + "-")),
    CachePlace("prompt", "instantrestore_prompt_embeds.safetensors", (".safetensors",),
               "the official model's prompt embedding (made again with SD-Turbo's text encoder)"),
)


def cache_root() -> Path:
    """The folder streamrestore's caches live under (the module docstring); read from the
    environment at each call, so a change takes effect at once."""
    for name in ROOT_VARIABLES:
        value = os.environ.get(name)
        if value:
            return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "streamrestore"
    home = _home()
    return home / ".cache" / "streamrestore" if home is not None else _temporary_root()


def other_cache_roots() -> list[Path]:
    """The folders the cache lives in under other settings than now's (``$XDG_CACHE_HOME/streamrestore``,
    ``~/.cache/streamrestore``, the temporary one), which exist: where a run with other variables, or an older
    version, kept its files (before 2026-12-05 ``--adapt``'s fine-tunes ignored ``$STREAMRESTORE_HOME``, engines
    ``$XDG_CACHE_HOME``). A person's fine-tune there is out of sight of ``cache --clear``; ``cache`` names them."""
    now = cache_root().expanduser()
    candidates = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        candidates.append(Path(xdg).expanduser() / "streamrestore")
    home = _home()
    if home is not None:
        candidates.append(home / ".cache" / "streamrestore")
    candidates.append(temporary_folder_path("streamrestore-cache"))
    found: list[Path] = []
    for folder in candidates:
        try:
            if not folder.is_dir() or (now.exists() and folder.samefile(now)):
                continue
            if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():  # (another user's, in a shared /tmp)
                continue
            if all(not folder.samefile(other) for other in found):
                found.append(folder)
        except OSError:
            continue
    return found


def _home() -> Path | None:
    """The user's home folder; None where there is none (no ``$HOME`` and no passwd entry, or ``$HOME`` set
    empty, as ``env HOME=`` leaves it: read as the root folder)."""
    if os.environ.get("HOME", None) == "":
        return None
    try:
        return Path.home()
    except RuntimeError:  # ("Could not determine home directory")
        return None


def _temporary_root() -> Path:
    """``streamrestore-cache-<uid>`` in the temporary folder (:func:`private_temporary_folder`)."""
    return private_temporary_folder("streamrestore-cache")


def temporary_folder_path(name: str) -> Path:
    """``<name>-<uid>`` in the temporary folder: where :func:`private_temporary_folder` makes it."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"{name}-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def private_temporary_folder(name: str) -> Path:
    """``<name>-<uid>`` in the temporary folder, made for this user alone (0700); where it is not (another user,
    or a link, got there first: what is kept there would be loaded, or read by them), a fresh folder."""
    import stat
    import tempfile

    user = os.getuid() if hasattr(os, "getuid") else None
    root = temporary_folder_path(name)
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        held = root.lstat()
        if stat.S_ISDIR(held.st_mode) and not held.st_mode & 0o077 and (user is None or held.st_uid == user):
            return root
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=f"{name}-"))


def untrusted_reason(path: Path) -> str | None:
    """Why the cached file ``path`` must not be loaded, None where it may (or does not exist, or the system
    has no owners): another user owns it; or, in a folder that is not this user's, anyone can change it or
    replace it (the folder writable by all without the sticky bit). A cache root from the environment may be
    a shared folder (``XDG_CACHE_HOME=/shared``): a program another user planted there would be run on every
    face (git's ``safe.directory``, ssh's checks of its keys' modes)."""
    import stat

    if not hasattr(os, "getuid"):  # pragma: no cover - not POSIX
        return None
    me = os.getuid()
    try:
        held, folder = path.stat(), path.parent.stat()
    except OSError:
        return None
    if held.st_uid not in (me, 0):
        return f"another user (uid {held.st_uid}) owns it"
    # (group-writable is left alone: a umask of 002 with a group of one's own writes every file so; and a
    # folder of this user's own is trusted however its file system shows modes: WSL's /mnt, exFAT and SMB
    # show everything 0777, which a rebuilt file would show again, run after run)
    if folder.st_uid != me:
        if held.st_mode & 0o002:
            return f"anyone can change it (mode {stat.S_IMODE(held.st_mode):o}) in a folder of another user's"
        if folder.st_mode & 0o002 and not folder.st_mode & stat.S_ISVTX:
            return f"anyone can replace it (its folder {path.parent} is another user's, writable by all)"
    return None


def trusted_cached_file(path: Path, what: str) -> bool:
    """Whether ``path`` holds a cached ``what`` to load: it is a file and :func:`untrusted_reason` finds none;
    where it finds one, a warning says so and the file counts as missing (made again)."""
    if not path.is_file():
        return False
    reason = untrusted_reason(path)
    if reason is None:
        return True
    import logging

    logging.getLogger(__name__).warning("not loading the cached %s %s: %s; making it again (a cache folder is "
                                        "best its user's own: $STREAMRESTORE_CACHE)", what, path, reason)
    return False


def cache_root_source() -> str:
    """What placed :func:`cache_root`: the variable set (``"$STREAMRESTORE_CACHE"``), or
    ``"the default"`` when none is."""
    for name in (*ROOT_VARIABLES, "XDG_CACHE_HOME"):
        if os.environ.get(name):
            return f"${name}"
    if _home() is None:
        return "no home folder: a temporary one, emptied with it; set $STREAMRESTORE_CACHE to keep it"
    return "the default"


def cache_place(name: str) -> CachePlace:
    """The place called ``name`` (one of :data:`CACHE_PLACES`).

    Raises:
        ValueError: no place has that name.
    """
    for place in CACHE_PLACES:
        if place.name == name:
            return place
    raise ValueError(f"no cache place named {name!r}: one of {', '.join(p.name for p in CACHE_PLACES)}")


def place_path(name: str, root: Path | None = None) -> Path:
    """The folder (or file) of the place ``name`` under ``root`` (default :func:`cache_root`)."""
    return (cache_root() if root is None else root) / cache_place(name).relative


@dataclass(frozen=True)
class CachePart:
    """What one place in the cache holds now."""

    name: str  #: ``engines``, ``adapted`` or ``prompt``
    path: Path  #: its folder, or its one file
    about: str  #: what its files are, and what deleting them costs
    files: int  #: how many of its files there are
    size: int  #: their bytes together


#: a temporary file of a place's kind not written to for this long is a killed run's leftover
#: (the cache's writers write theirs in seconds, then rename it); a younger one may be being written
LEFTOVER_AGE_S = 3600.0
#: ... or unchanged this long where the process its name says wrote it is no longer running on this machine
#: (an OOM kill mid-export left 17-27 MB for an hour; a writer on another machine sharing the cache is still
#: writing it within this time, the writers write theirs in seconds)
WRITER_GONE_AGE_S = 120.0


def _writer_gone(name: str) -> bool:
    """Whether the temporary file ``name`` (:func:`cache_temp_name`: ``x.onnx.<pid>.<hex>.tmp``) was written by a
    process that is no longer running here; False where its name carries no process id (an older version's)."""
    parts = name.split(".")
    if len(parts) < 4 or not parts[-3].isdigit():
        return False
    try:
        os.kill(int(parts[-3]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):  # (another user's process: running)
        return False
    return False


def is_leftover(name: str, age: float) -> bool:
    """Whether a temporary cache file ``name`` unchanged for ``age`` seconds is a killed run's leftover, not one
    being written (:data:`LEFTOVER_AGE_S`, :data:`WRITER_GONE_AGE_S`)."""
    return age >= LEFTOVER_AGE_S or (age >= WRITER_GONE_AGE_S and _writer_gone(name))


def cache_temp_name(path: Path) -> Path:
    """The name a cache file ``path`` is written under before it is renamed into place: this process's
    own and no other's (two processes building one file at once each write their own, and the second
    rename finds it whole), ending ``.tmp`` so that :func:`clear_cache` knows it."""
    import secrets

    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")


def _is_temp_of(name: str, suffixes: tuple[str, ...]) -> bool:
    """Whether ``name`` is a temporary file the cache's writers make for one of ``suffixes``
    (:func:`cache_temp_name`: ``x.onnx.4242.a1b2c3.tmp``; ``x.ep.tmp`` and ``x.safetensors.4242.tmp`` from
    older versions) before renaming it."""
    return name.endswith(".tmp") and any(f"{suffix}." in name for suffix in suffixes)


def _part_files(path: Path, suffixes: tuple[str, ...]) -> list[tuple[Path, int, float]]:
    """The files of one place with their sizes and modification times: the file itself, or the
    folder's files of its kinds (nothing below a sub-folder), and the temporary files of those
    kinds that runs left. One deleted meanwhile by another process is skipped."""
    candidates = [path] if path.suffix in suffixes and not path.is_dir() else (
        sorted(path.iterdir()) if path.is_dir() else [])  # (a folder that cannot be read: its OSError)
    found = []
    for p in candidates:
        if p.suffix not in suffixes and not _is_temp_of(p.name, suffixes):
            continue
        try:
            if p.is_file():
                st = p.stat()
                found.append((p, st.st_size, st.st_mtime))
        except OSError:
            continue
    return found


def _place_files(place: CachePlace, root: Path | None) -> list[tuple[Path, int, float]]:
    """:func:`_part_files` of ``place``: those of its own folder less those another place borrows from it,
    and those it borrows."""
    files = _part_files(place_path(place.name, root), place.suffixes)
    for other in CACHE_PLACES:
        if other.borrowed is not None and other.borrowed[0] == place.name:
            files = [entry for entry in files if other.borrowed[1] not in entry[0].name]
    if place.borrowed is not None:
        lender = cache_place(place.borrowed[0])
        files += [entry for entry in _part_files(place_path(lender.name, root), lender.suffixes)
                  if place.borrowed[1] in entry[0].name]
    return files


def cache_parts(root: Path | None = None) -> list[CachePart]:
    """Each place of the cache under ``root`` (default :func:`cache_root`) with its file count
    and size, in :data:`CACHE_PLACES`' order; a place not made yet has no files.

    Raises:
        OSError: a place's folder cannot be read.
    """
    parts = []
    for place in CACHE_PLACES:
        path = place_path(place.name, root)
        files = _place_files(place, root)
        parts.append(CachePart(place.name, path, place.about, len(files), sum(size for _, size, _ in files)))
    return parts


class Cleared(tuple):
    """What :func:`clear_cache` did: the pair (files, bytes) deleted, as it has always returned, and ``kept``,
    the temporary files it left (perhaps being written: not :func:`is_leftover`)."""

    kept: int

    def __new__(cls, files: int, size: int, kept: int = 0) -> Cleared:
        cleared = super().__new__(cls, (files, size))
        cleared.kept = kept
        return cleared

    @property
    def files(self) -> int:
        """How many files it deleted."""
        return self[0]

    @property
    def size(self) -> int:
        """Their bytes together."""
        return self[1]


def clear_cache(names: Iterable[str], root: Path | None = None) -> Cleared:
    """Deletes the files of the places ``names`` (:data:`CACHE_PLACES`' names) under ``root``
    (default :func:`cache_root`).

    Safe beside a running streamrestore: a process that has a program or fine-tune open keeps
    using it (POSIX keeps an open file until it is closed), and the next run makes it again. A
    temporary file is deleted only when :data:`LEFTOVER_AGE_S` old (one younger may be being
    written).
    A file that cannot be deleted (a read-only folder) raises :class:`OSError` naming it.

    Raises:
        ValueError: a name that is no place of the cache.
    """
    import time

    places = [cache_place(name) for name in names]  # every name checked before anything is deleted
    deleted = freed = kept = 0
    now = time.time()
    for place in places:
        for file, size, mtime in _place_files(place, root):
            if file.suffix == ".tmp" and not is_leftover(file.name, now - mtime):
                kept += 1
                continue
            try:
                file.unlink()
            except FileNotFoundError:  # another process deleted it first
                continue
            deleted += 1
            freed += size
    return Cleared(deleted, freed, kept)
