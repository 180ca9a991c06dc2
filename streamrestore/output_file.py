"""Where a result is written: the checks on an output path, and the hidden temporary file beside it.

The video writer and the photo writer both write to a temporary file in the output's folder and
rename it onto the output once it is complete, so an output file is never half written and a
failed run leaves nothing behind.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from streamrestore.errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX (Windows): no file locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["SPACE_ERRNOS", "STALE_TEMP_SECONDS", "check_output_path", "hold_temp", "move_into_place", "output_target", "sha256_of",
           "release_temp", "remove_stale_temps", "stale_temps", "temp_beside", "write_atomically", "write_failed"]

#: errnos of a failed write whose cause is the disk or a limit (not the codec or the container)
SPACE_ERRNOS = {getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EDQUOT", "EIO") if hasattr(errno, name)}


def check_output_path(dst: Path, force: bool, example: str) -> None:
    """Refuses an output that is a folder, standard output (``-``), a device or pipe, exists
    (without ``force``) or lies in a missing folder.

    Args:
        dst: the output file.
        force: whether an existing ``dst`` may be replaced.
        example: a file name the message suggests inside a folder given as ``dst`` (``out.mp4``).

    Raises:
        OutputError: one of the above, in one line.
    """
    if str(dst) == "-":
        raise OutputError("writing to standard output (-o -) is not supported: an MP4 or MOV is finished by going back "
                          f"to its start, so streamrestore writes files; give a file name such as {example}")
    try:
        os.stat(dst)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # (a traceback from the checks below)
            name = len(os.fsencode(dst.name))
            if name <= 255:  # (the whole path is: PATH_MAX)
                raise OutputError(f"output path {dst} is too long for the file system; give a shorter one with -o"
                                  ) from None
            raise OutputError(f"output name {dst.name} is too long for the file system ({name} bytes); give a "
                              "shorter one with -o") from None
    if dst.is_dir():
        raise OutputError(f"output {dst} is a folder; give a file name such as {dst}/{example}")
    if dst.exists() and not dst.is_file():  # (exists() and is_file() follow a link: its target is judged)
        raise OutputError(f"output {dst} is not a regular file (a device, pipe or socket): streamrestore writes files "
                          "(it goes back to finish them); give a file name, and delete it afterwards if it was a trial")
    if dst.exists() and not force:
        raise OutputError(f"output {dst} already exists; replace it with --force (library: force=True)")
    if dst.is_symlink() and not dst.exists() and not force and not _link_loop(dst):
        # (one planted in a shared folder at the name a run derives would make it write where the link points)
        raise OutputError(f"output {dst} is a symbolic link to {os.readlink(dst)}, which does not exist: the output "
                          "would be written there; name another file, or write through the link with --force")
    if not dst.parent.exists():
        raise OutputError(f"output folder {dst.parent} does not exist; create it first")


def stale_temps(dst: Path, every_output: bool = False) -> list[Path]:
    """The temporary files of ``dst`` (:func:`temp_beside`'s names) that a run killed before its
    clean-up left beside it (a batch worker ended by Ray, ``kill -9``); ``every_output``: those of any
    output in ``dst``'s folder (a run killed on one file, then another file restored there)."""
    stem, suffix = (r"[^/]+", r"\.[^./]+") if every_output else (re.escape(_temp_stem(dst)), re.escape(dst.suffix))
    pattern = re.compile(rf"\.{stem}\.[0-9a-f]{{8}}\.partial{suffix}")
    try:
        return [entry for entry in dst.parent.iterdir() if pattern.fullmatch(entry.name)]
    except OSError:
        return []


#: a temporary file of an output younger than this is never taken for a killed run's: its writer may not
#: have taken its lock yet (:func:`hold_temp`; where there are no locks, a writer untouched this long)
STALE_TEMP_SECONDS = 60.0
#: ... and one of another output than the one being written, removed in passing (:func:`remove_stale_temps`)
OTHER_OUTPUT_IDLE_SECONDS = 3600.0


def hold_temp(temp: Path) -> int | None:
    """Marks ``temp`` as being written by this process: an open descriptor holding an exclusive
    ``flock`` on it, which the system drops when the process ends, however it ends (pass it to
    :func:`release_temp` when done). None where it cannot be locked: no such locks here, or another
    process holds it."""
    try:
        return _exclusive_lock(temp, os.O_RDONLY)
    except BlockingIOError:  # (held by another process)
        return None


def hold_record(record: Path) -> int | None:
    """An exclusive ``flock`` on ``record`` (a batch's manifest) for as long as this run writes beside it
    (:func:`release_temp` ends it; the system, when the process ends however it ends). None where the
    file system has no such locks.

    Raises:
        BlockingIOError: another process (or another run in this one) holds it.
    """
    # (opened as the batch writes it, appending: a record this user may only write to is locked too)
    return _exclusive_lock(record, os.O_WRONLY | os.O_APPEND)


def _exclusive_lock(path: Path, mode: int) -> int | None:
    """A descriptor of ``path`` (opened with ``mode``) holding an exclusive ``flock``; None where it cannot be
    opened or the file system has no such locks (not POSIX: only a file's age tells a killed run's).

    Raises:
        BlockingIOError: another holder has it.
    """
    if fcntl is None:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(path, mode | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # (a file system without locks: nothing to hold)
        os.close(fd)
        return None
    return fd


def release_temp(held: int | None) -> None:
    """Ends :func:`hold_temp`'s hold (None: nothing held)."""
    if held is not None:
        os.close(held)


def _held_elsewhere(temp: Path) -> bool:
    """Whether another process may be writing ``temp`` (:func:`hold_temp`): it cannot be locked (kept,
    where locks do not work at all, to be safe)."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return False
    held = hold_temp(temp)
    release_temp(held)
    return held is None


def remove_stale_temps(dst: Path, idle_seconds: float = STALE_TEMP_SECONDS, every_output: bool = False) -> list[Path]:
    """Removes the temporary files of ``dst`` (:func:`stale_temps`; ``every_output``: of any output in its
    folder) that no live process holds (:func:`hold_temp`) and nothing wrote to for ``idle_seconds``: a run
    killed before its clean-up (``kill -9``, the OOM killer, a power cut) left a hidden file as large as the
    output it had written so far, which nothing else removes (and only a run to that same output did, where a
    killed user goes on with smaller settings under another name). Another run writing one keeps its own; where
    the file system has no locks, none is taken for a killed run's. Returns those removed."""
    import time

    removed, own = [], set(stale_temps(dst)) if every_output else set()
    for temp in stale_temps(dst, every_output):
        # (another output's: an hour untouched, as a writer on another machine of a file system whose locks are
        # local only is not seen holding it, and a slow restorer can write nothing for a minute)
        idle = idle_seconds if not every_output or temp in own else max(idle_seconds, OTHER_OUTPUT_IDLE_SECONDS)
        try:
            if time.time() - temp.stat().st_mtime >= idle and not _held_elsewhere(temp):
                temp.unlink()
                removed.append(temp)
        except OSError:
            continue  # (gone meanwhile, or not ours to remove)
    return removed


def _temp_stem(dst: Path) -> str:
    """The part of ``dst``'s name its temporary files carry: its stem, cut to leave room for the 19 characters
    they add (a 240-byte name's temporary file was too long, said as "cannot write to output folder")."""
    stem = dst.stem
    while len(os.fsencode(stem)) > 200:
        stem = stem[:-1]
    return stem


def temp_beside(dst: Path) -> Path:
    """A new, empty, hidden file beside ``dst`` (same file system, so the final rename is atomic),
    ending in ``dst``'s suffix (FFmpeg and Pillow pick the format from it).

    Created with mode 0666 less the umask, as any file a tool writes (mkstemp's 0600 would survive
    the rename and hide the result from other users and services).

    Raises:
        OutputError: the folder cannot be written to.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = dst.parent / f".{_temp_stem(dst)}.{secrets.token_hex(4)}.partial{dst.suffix}"
        try:
            fd = os.open(name, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(
                f"cannot write to output folder {dst.parent} ({exc.strerror or exc}); choose a folder you can write to"
            ) from None
        os.close(fd)
        return name
    raise OutputError(f"cannot create a temporary file in {dst.parent}")  # pragma: no cover


def output_target(dst: Path) -> Path:
    """The file a run writes for the output ``dst``: ``dst``, or where a symbolic link there points
    (written through, as ``cp`` and FFmpeg do: a rename onto the link would replace the link itself
    and leave its target as it was).

    Raises:
        OutputError: a link that leads nowhere (a loop), or to a file of another kind (its
            extension: the format is chosen by the output's).
    """
    if not dst.is_symlink():
        return dst
    if _link_loop(dst):
        raise OutputError(f"output {dst} is a symbolic link that leads nowhere (a loop); give a file name")
    target = dst.resolve(strict=False)
    if _format_suffix(target) != _format_suffix(dst):
        raise OutputError(f"output {dst} links to {target}, a file of another kind ({target.suffix or 'no extension'}); "
                          "name the file itself")
    return target


def _link_loop(path: Path) -> bool:
    """Whether following ``path`` goes round in a loop (``resolve`` says so only before Python 3.13)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


#: suffixes that name one format under two spellings (a link from out.jpg to a .jpeg file is no other kind)
_SAME_FORMAT = {".jpeg": ".jpg", ".jfif": ".jpg", ".tiff": ".tif", ".heif": ".heic", ".hif": ".heic"}


def _format_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    return _SAME_FORMAT.get(suffix, suffix)


def _kept_beside(dst: Path) -> Path:
    """A new visible name beside ``dst`` for a result that must not replace it: ``<stem>.<hex><suffix>``."""
    while True:
        name = dst.with_name(f"{dst.stem}.{secrets.token_hex(3)}{dst.suffix}")
        if not name.exists():
            return name


def move_into_place(temp: Path, dst: Path, replace: bool) -> None:
    """Renames the finished ``temp`` (:func:`temp_beside`) onto ``dst``.

    With ``replace`` False an output that appeared while this run was writing (another run given
    the same output, a ``make -j``) is kept: the move is a hard link, which refuses an existing name
    atomically, where the file system has hard links (else a check just before the rename). This
    run's result is then kept under a new visible name beside it, never lost.

    Raises:
        OutputError: ``dst`` appeared meanwhile (naming where this run's result is).
        OSError: the rename failed (a full disk, the folder removed).
    """
    if replace:
        os.replace(temp, dst)
        return
    try:
        os.link(temp, dst)
    except FileExistsError:
        if same_file(temp, dst):  # (a network file system's retried link: it is this run's)
            _drop_name(temp)
            return
    except OSError:  # no hard links here (FAT, exFAT, some shares; each says it with its own errno)
        if not (dst.exists() or dst.is_symlink()):
            os.replace(temp, dst)
            return
    else:
        _drop_name(temp)
        return
    kept = _kept_beside(dst)
    os.replace(temp, kept)
    raise OutputError(f"output {dst} appeared while this run was writing it (another run writing the same file?): "
                      f"it was left as it is, and this run's result is {kept}")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are one file on disk, however spelled (relative path, ``..``,
    symlink, hard link: same device and inode). False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _drop_name(temp: Path) -> None:
    """Removes the temporary name of a result already linked into place: one that cannot be removed
    is left (the next run's clean-up takes it), never taken for a failed write."""
    try:
        temp.unlink()
    except OSError:
        pass


def write_failed(dst: Path, exc: BaseException) -> OutputError:
    """One-line OutputError for an encoder/muxer/file-system failure while writing ``dst`` (with what
    to do when the disk or a limit is the cause)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    hint = ""
    if getattr(exc, "errno", None) in SPACE_ERRNOS:
        hint = "; free some space (or raise the file-size limit) or write to another disk"
    return OutputError(f"writing {dst} failed: {reason}{hint}; nothing was written")


def write_atomically(dst: Path, write: Callable[[Path], object], replace: bool = True) -> None:
    """``write(temp)`` into :func:`temp_beside` ``dst``, then the temporary file moved onto ``dst``
    (:func:`move_into_place`; ``replace`` False: an output another run wrote meanwhile is kept):
    ``dst`` appears only complete, and a failure (Ctrl-C too) leaves nothing behind. A symbolic
    link at ``dst`` is written through (:func:`output_target`).

    Raises:
        OutputError: ``write`` or the rename failed with an OSError or ValueError (a full disk, an
            encoder refusing the data), in one line; or ``dst`` appeared meanwhile.
    """
    dst = output_target(dst)
    temp = temp_beside(dst)
    held = hold_temp(temp)
    try:
        write(temp)
        move_into_place(temp, dst, replace)
    except OutputError:
        temp.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as exc:
        temp.unlink(missing_ok=True)
        raise write_failed(dst, exc) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        release_temp(held)
    remove_stale_temps(dst)


def write_text_file(dst: Path, text: str) -> Path:
    """``text`` written to ``dst`` (UTF-8) complete or not at all (:func:`write_atomically`), the folders
    above it made; returns ``dst``. A results file: an existing one is replaced.

    Raises:
        OutputError: it could not be written, in one line.
    """
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() and not dst.is_file():  # (a device or pipe: /dev/stdout; nothing to replace)
            with open(dst, "w", encoding="utf-8") as stream:
                stream.write(text)
            return dst
    except OSError as exc:
        raise OutputError(f"cannot write {dst} ({exc.strerror or exc})") from None
    write_atomically(dst, lambda temp: temp.write_text(text, encoding="utf-8"))
    return dst


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of the file at ``path``, in hex (read a megabyte at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
