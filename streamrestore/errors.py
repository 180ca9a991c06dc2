"""User-facing errors.

Anything derived from :class:`UserError` is a mistake the user can fix (bad path, bad option,
unreadable media); the CLI prints its message on one line and exits with code 2. Every other
exception is a bug and keeps its traceback.
"""
import errno
import unicodedata

#: characters that end a line or drive a terminal: control characters (a newline, ESC), and the line
#: and paragraph separators a terminal may break at
_NOT_SHOWN = ("Cc", "Zl", "Zp")
#: the bidirectional embeddings, overrides and isolates, which reorder what follows them on the line (a name
#: ending U+202E shows "wrote x.mp4" backwards); the marks that only set a direction (U+200E/F) stay
_REORDERING = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n``, ``\\x1b``), for a line that names
    files or people: a newline in a file name cannot start a line that reads as the tool's own ("error: ...",
    "wrote ..."), nor an escape sequence in one recolour or clear the terminal. Printable text, non-English
    names included, is kept as it is."""
    if text.isprintable():  # (the common case: nothing to look at; the reordering marks are not printable)
        return text
    return "".join(char.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(char) in _NOT_SHOWN or char in _REORDERING else char for char in text)


#: how torch, onnxruntime and the loader say memory ran out (a MemoryError aside)
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "failed to allocate memory", "failed to map segment",
                  "cannot allocate memory", "std::bad_alloc")


def out_of_memory(exc: BaseException | None) -> BaseException | None:
    """The error of ``exc``'s chain (it, or what it was raised from) that says memory ran out (an address-space
    limit, ulimit -v or a container's, or the machine's); None where none does."""
    while exc is not None:
        said = str(exc).lower()
        # ("failed to map segment ...: Operation not permitted" is a library on a noexec mount, not memory)
        if isinstance(exc, MemoryError) or (any(words in said for words in _OUT_OF_MEMORY)
                                            and "operation not permitted" not in said):
            return exc
        if thread_not_started(exc):
            return exc
        # (a context the raiser suppressed, `raise ... from None`, is not what went wrong)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def thread_not_started(exc: BaseException) -> bool:
    """Whether ``exc`` says a thread could not start: its stack did not fit an address-space limit (FFmpeg's
    scaler said EAGAIN under ulimit -v 2.5 GB, a 50-line traceback read as a busy file: support F1), or the
    process's thread limit was reached (ulimit -u, a container's pids limit). Nothing of ours lets EAGAIN out
    otherwise."""
    return (isinstance(exc, OSError) and exc.errno == errno.EAGAIN) or "can't start new thread" in str(exc).lower()


class UserError(Exception):
    """A problem with the user's input or options; the message says what to do."""

    exit_code = 2
    #: the message is a list of lines (the files a model lacks), not one line: the CLI keeps its line breaks
    several_lines = False


class InputError(UserError):
    """The input media is missing, unreadable or not a video."""


class PhotoTooLargeError(InputError):
    """A photo holds more pixels than is read (:func:`streamrestore.images.check_photo_size`)."""


class ReferencesError(UserError):
    """A reference photo or folder cannot be used."""


class OutputError(UserError):
    """The output cannot be written (exists without --force, folder not writable, ...)."""


class ModelError(UserError):
    """A model or checkpoint cannot be found or does not fit."""


class TemporaryError(UserError):
    """What another process or machine holds now (another batch writing the same folder, a Ray cluster not
    reachable): the command may work when run again later. Exit code 75 (``EX_TEMPFAIL``), which a scheduler
    can retry, where 2 (a usage mistake) would fail the job for good."""

    exit_code = 75


class DeviceError(UserError):
    """The requested device (e.g. ``cuda``) is not available on this machine."""
