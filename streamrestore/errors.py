"""User-facing errors.

Anything derived from :class:`UserError` is a mistake the user can fix (bad path, bad option,
unreadable media); the CLI prints its message on one line and exits with code 2. Every other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or options; the message says what to do."""

    exit_code = 2


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


class DeviceError(UserError):
    """The requested device (e.g. ``cuda``) is not available on this machine."""
