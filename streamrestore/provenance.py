"""What a file streamrestore wrote says of itself: the detail of its faces was made by a network.

A restored copy keeps the input's tags (its title, recording date, a camera's comment), so that libraries sort
it as the recording it came from; passed on or renamed it read as the camera's own export (an insurer, a shop
owner's footage). It also carries :func:`restored_comment`, in the one tag that MP4, MOV, Matroska and WebM all
keep (``comment``), ahead of any comment of the input's (:func:`comment_with`).
"""

from __future__ import annotations

from streamrestore._version import __version__

#: what joins an input's own comment after the mark
ORIGINAL_COMMENT = "; the original's comment: "


def restored_comment() -> str:
    """The mark a restored video carries (see the module)."""
    return f"faces restored by streamrestore {__version__}: their detail is generated, not recorded"


def comment_with(mark: str, original: str | None) -> str:
    """``mark`` followed by the input's comment ``original`` (None or empty: none). A file restored again
    carries one mark, its original comment after it."""
    if original and original.startswith("faces restored by streamrestore "):  # (restored before: its mark goes)
        original = original.partition(ORIGINAL_COMMENT)[2]
    return f"{mark}{ORIGINAL_COMMENT}{original}" if original else mark
