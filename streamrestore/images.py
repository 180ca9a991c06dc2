"""Reading photos: the one image loader and the one list of image file suffixes.

References, training data and evaluation sets all read photos through :func:`read_rgb`, so a
photo that works as a reference also works as training data, and the other way round.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamrestore.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "UNREAD_PHOTO_FORMATS", "is_image", "read_rgb"]

#: File suffixes (lower case) read as photos; OpenCV decodes all of them (AVIF where it is built
#: with it, as opencv-python 5.0 is).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif"})

#: Photo formats OpenCV does not decode, by suffix: what to do with them instead.
UNREAD_PHOTO_FORMATS = {
    suffix: "HEIC photos (an iPhone's default) are not read; export them as JPEG (Mac: Preview, File > Export; "
            "iPhone: Settings > Camera > Formats > Most Compatible for new ones)"
    for suffix in (".heic", ".heif")
}


def is_image(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_SUFFIXES` (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_rgb(path: str | Path) -> np.ndarray:
    """The photo at ``path`` as (H, W, 3) uint8 RGB.

    IMREAD_COLOR drops alpha, converts grey and 16-bit pictures to 8-bit colour and applies the
    EXIF orientation, so phone photos come out upright. ``np.fromfile`` + ``imdecode`` copes with
    non-ASCII paths, which ``cv2.imread`` does not on every platform.

    Args:
        path: the photo file.

    Raises:
        InputError: the file is missing, empty or not a picture OpenCV can decode.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        if Path(path).suffix.lower() == ".avif":
            raise InputError(f"cannot read image {path}: this OpenCV ({cv2.__version__}) decodes no AVIF, or the "
                             "file is damaged; install opencv-python 5 or give the photo as JPEG/PNG")
        raise InputError(f"cannot read image {path}; is it a valid image?")
    return np.ascontiguousarray(image[:, :, ::-1])
