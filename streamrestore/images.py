"""Photos: the one image loader, the one list of image file suffixes, and writing a restored photo back.

References, training data, evaluation sets and the photos given to restore all read their pixels
through :func:`read_rgb`, so a photo that works as a reference also works as training data, and
the other way round. :func:`read_photo` adds what writing the photo back keeps (transparency, grey,
colour profile, EXIF, XMP, a PNG's text); :func:`write_photo` writes it.
"""
from __future__ import annotations

import functools
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamrestore.errors import InputError, OutputError, PhotoTooLargeError
from streamrestore.output_file import check_output_path, write_atomically

__all__ = ["HEIF_SUFFIXES", "IMAGE_SUFFIXES", "PHOTO_OUTPUT_SUFFIXES", "UNREAD_PHOTO_FORMATS", "PhotoFile", "check_photo_output",
           "check_photo_size", "copy_photo", "default_photo_output", "is_image", "read_photo", "read_photo_header", "read_rgb", "same_photo_format", "write_photo"]

#: HEIF photos (an iPhone's HEIC, a Canon or Fujifilm camera's HIF): pillow-heif decodes and writes them
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})

#: File suffixes (lower case) read as photos: OpenCV decodes all of them (AVIF where it is built
#: with it, as opencv-python 5.0 is) but :data:`HEIF_SUFFIXES`.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif"}) | HEIF_SUFFIXES

#: Photo formats that are not read, by suffix: what to do with them instead. A camera's raw files
#: need a raw developer's choices (white balance, exposure) before they are a picture.
UNREAD_PHOTO_FORMATS = {
    suffix: "camera raw photos are not read; export them as JPEG or TIFF from your raw developer (Lightroom, "
            "darktable, the camera's own software)"
    for suffix in (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")
}


@functools.cache
def _pillow():
    """Pillow's ``Image`` with pillow-heif's HEIF reader and writer registered (Pillow keeps one
    registry of formats per process: registered once)."""
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return Image


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_SUFFIXES` (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_rgb(path: str | os.PathLike, most_pixels: int | None = None) -> np.ndarray:
    """The photo at ``path`` as (H, W, 3) uint8 RGB.

    IMREAD_COLOR drops alpha, converts grey and 16-bit pictures to 8-bit colour and applies the
    EXIF orientation, so phone photos come out upright. ``np.fromfile`` + ``imdecode`` copes with
    non-ASCII paths, which ``cv2.imread`` does not on every platform.

    Args:
        path: the photo file.

    ``most_pixels``: a photo of more pixels is decoded smaller, by 2, 4 or 8 a side (a JPEG: in its decoder,
    at a fraction of the memory), or refused (others decode whole first): what a reference photo needs.

    Raises:
        InputError: the file is missing, empty, not a picture OpenCV can decode, or holds more
            pixels than Pillow reads (:func:`check_photo_size`); PhotoTooLargeError beyond ``most_pixels``,
            where it cannot be decoded smaller.
    """
    check_photo_size(path)
    reduced = _reduced_decode(path, most_pixels) if most_pixels is not None else None
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not data.size:  # ("is it a valid image?" of a file cut to nothing: as a video's, said plainly)
        raise InputError(f"image is empty (0 bytes): {path}")
    if Path(path).suffix.lower() in HEIF_SUFFIXES:
        return _read_heif_rgb(path)
    image = cv2.imdecode(data, reduced or cv2.IMREAD_COLOR)
    if image is None:
        if Path(path).suffix.lower() == ".avif":
            raise InputError(f"cannot read image {path}: this OpenCV ({cv2.__version__}) decodes no AVIF, or the "
                             "file is damaged; install opencv-python 5 or give the photo as JPEG/PNG")
        raise InputError(f"cannot read image {path}; is it a valid image?")
    return np.ascontiguousarray(image[:, :, ::-1])


def _reduced_decode(path: str | os.PathLike, most_pixels: int) -> int | None:
    """OpenCV's flag that decodes ``path`` at no more than ``most_pixels`` (None: it has no more). Raises
    PhotoTooLargeError for a photo over it that only decodes whole (not a JPEG): a 0.5 MB PNG of 13000 x 13000
    took 4.5 GB as a reference photo."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            width, height, kind = image.width, image.height, image.format
    except Exception:  # (a format Pillow does not read: the decoder's own rules)
        return None
    if width * height <= most_pixels:
        return None
    for factor, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (8, cv2.IMREAD_REDUCED_COLOR_8)):
        if kind == "JPEG" and width * height <= most_pixels * factor * factor:
            return flag
    raise PhotoTooLargeError(f"{path} holds {width * height / 1e6:.0f} million pixels, more than is read of a "
                             f"reference photo ({most_pixels / 1e6:.0f} million, or a JPEG of up to "
                             f"{64 * most_pixels / 1e6:.0f} million); scale it down first")


def check_photo_size(path: str | os.PathLike) -> None:
    """Refuses, from its header, a photo of more pixels than Pillow reads (2 x its
    ``MAX_IMAGE_PIXELS``, 179 million by default): a small file can hold a huge flat picture (a
    "decompression bomb": a 1.2 MB PNG of 20000 x 20000 took 6.4 GB and 28 s to decode as a
    reference photo). A file Pillow cannot read is left to the decoder.

    Raises:
        PhotoTooLargeError: an :class:`~streamrestore.errors.InputError` naming the file and what to do.
    """
    _check_not_a_pipe(path)
    Image = _pillow()
    try:
        with Image.open(path):
            return
    except Image.DecompressionBombError:
        raise _too_large(path) from None
    except Exception:  # (not a format Pillow reads, missing, damaged: the decoder says it as it does)
        return


def _check_not_a_pipe(path: str | os.PathLike) -> None:
    """Refuses a pipe, socket or device (followed through a link): reading one as a photo waited forever for
    a writer (a FIFO named f.jpg in a batch's or a reference folder hung the run, saying nothing)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:  # (missing, a loop: the decoder says it as it does)
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{path} is a pipe or a device, not a photo file")


def _too_large(path: str | os.PathLike) -> PhotoTooLargeError:
    return PhotoTooLargeError(f"{path} holds more than {2 * (_pillow().MAX_IMAGE_PIXELS or 0) / 1e6:.0f} million pixels, "
                              "more than is read (a guard against files that decode to gigabytes); scale it down first")


def _read_heif_rgb(path: str | os.PathLike) -> np.ndarray:
    """A HEIF photo as (H, W, 3) uint8 RGB, upright: libheif turns the picture as the file says (a
    HEIF's EXIF orientation is informational and pillow-heif reads it back as 1), 10 and 12 bits
    are rounded to 8."""
    from PIL import ImageOps

    try:
        with _pillow().open(path) as image:
            return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}; is it a valid HEIF photo? ({exc})") from None


#: Output suffixes a restored photo is written as -> the Pillow format (Pillow writes them; OpenCV
#: would drop the colour profile and EXIF)
PHOTO_OUTPUT_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".webp": "WEBP",
                         ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".avif": "AVIF",
                         ".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF"}

#: Lossy formats' quality (0-100): 95 keeps the restored detail and the compression's own marks
#: below what one sees, as photo tools' "high quality" settings do
PHOTO_QUALITY = 95

_EXIF_ORIENTATION = 0x0112
_PNG_XMP = "XML:com.adobe.xmp"  # the text chunk a PNG holds its XMP in
_EXIF_SOFTWARE = 0x0131  # the program that made the file (a restored photo's: streamrestore.provenance)
_IPTC_RESOURCE = 0x0404  # the Photoshop resource (APP13) a JPEG's IPTC data is in
#: a TIFF's IFD0 tags that describe the photo, not how its pixels are stored: what its EXIF keeps (Pillow reads the
#: whole IFD0 as EXIF; given back, a CMYK or palette TIFF's PhotometricInterpretation was written over RGB samples, and
#: the output opened nowhere). Description, make, model, page, software, date, artist, host, copyright, the Exif, GPS
#: and interoperability blocks, IPTC, Photoshop's resources, ratings, Windows' XP* tags, PrintIM.
_TIFF_METADATA_TAGS = {0x010D, 0x010E, 0x010F, 0x0110, 0x011D, 0x0131, 0x0132, 0x013B, 0x013C, 0x8298, 0x8769, 0x8825,
                       0xA005, 0x83BB, 0x8649, 0x4746, 0x4749, 0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F, 0xC4A5}
#: a TIFF's compressions a restored copy keeps (the others, a fax's bilevel ones, hold no colour: written without)
_TIFF_COMPRESSIONS_KEPT = {"tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits", "jpeg"}


@dataclass
class PhotoFile:
    """A photo to restore, and what of the file its restored copy keeps.

    Attributes:
        rgb: (H, W, 3) uint8, upright (the EXIF orientation applied), as :func:`read_rgb` gives it.
        alpha: (H, W) uint8 transparency, or None.
        grey: the file holds a grey picture (written back grey).
        bits: bits per sample in the file (8; 16 for 16-bit PNG and TIFF; 10 or 12 for such HEIC).
        deep: a deep photo's samples, upright, on the 16-bit scale: (H, W, 3) RGB or (H, W) grey,
            uint16; None for 8 bits. A PNG, TIFF or HEIC (10 bits) output keeps them where nothing
            changed and adds the change elsewhere.
        icc_profile: the colour profile (phones tag Display P3), kept so colours stay as they were.
        exif: the EXIF block, its orientation set to upright (the pixels are turned upright).
        xmp: the XMP block (ratings, captions, editing history); JPEG, WebP, AVIF, HEIC and PNG keep it.
        dpi: the print resolution.
        text: a PNG's text chunks (title, author, description), kept in a PNG.
        comment: a JPEG's comment (COM), kept in a JPEG.
        iptc: a JPEG's IPTC data (credit, copyright, caption, as agencies read them: the IPTC resource of its
            Photoshop block, APP13), kept in a JPEG.
        subsampling: a JPEG's chroma subsampling (Pillow's 0: 4:4:4, 1: 4:2:2, 2: 4:2:0), kept in a JPEG.
        lossless: a lossless WebP (written lossless again).
        compression: a TIFF's compression (Pillow's name), kept in a TIFF where it holds colour.
        dropped_profile: the colour space of a profile that cannot describe the restored RGB
            pixels (a print scan's CMYK), which is not kept; None when there was none.
        unprofiled_colours: the picture's colour model where it is not RGB or grey and no profile says how
            to read it (a print scan's CMYK): it is read and written as RGB; None otherwise.
        parts_not_kept: what the file holds beside its picture that the restored copy does not
            (a HEIC's depth map or HDR gain map), a phrase each.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    grey: bool = False
    bits: int = 8
    deep: np.ndarray | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple | None = None
    text: dict[str, str] = field(default_factory=dict)
    comment: bytes | None = None
    iptc: bytes | None = None
    subsampling: int | None = None
    lossless: bool = False
    compression: str | None = None
    dropped_profile: str | None = None
    unprofiled_colours: str | None = None
    parts_not_kept: list[str] = field(default_factory=list)


def read_photo(path: str | os.PathLike) -> PhotoFile:
    """The photo at ``path`` with its transparency, depth, colour profile, EXIF, XMP and PNG text.

    Raises:
        InputError: as :func:`read_photo_header`.
    """
    from PIL import ImageOps

    Image = _pillow()
    read_photo_header(path)
    rgb = read_rgb(path)
    heif = Path(path).suffix.lower() in HEIF_SUFFIXES
    as_stored = None if heif else cv2.imdecode(np.fromfile(str(path), dtype=np.uint8),
                                                 cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    photo = PhotoFile(rgb=rgb)
    if as_stored is not None:
        photo.grey = as_stored.ndim == 2
        photo.bits = 8 * as_stored.dtype.itemsize
        if as_stored.dtype == np.uint16 and as_stored.shape[:2] == rgb.shape[:2]:
            photo.deep = as_stored if photo.grey else np.ascontiguousarray(as_stored[:, :, 2::-1])
    try:
        with Image.open(path) as image:
            photo.icc_profile = image.info.get("icc_profile") or None
            space = photo.icc_profile[16:20] if photo.icc_profile else b"RGB "
            if space not in (b"RGB ", b"GRAY"):  # the profile's colour space (ICC header, bytes 16-19)
                photo.dropped_profile, photo.icc_profile = space.decode("latin-1").strip(), None
            elif image.mode == "CMYK":  # (inks without a profile: converted to RGB by the decoder, unsaid)
                photo.unprofiled_colours = "CMYK"
            photo.xmp = image.info.get("xmp") or None
            photo.dpi = image.info.get("dpi")
            photo.text = {key: value for key, value in getattr(image, "text", {}).items() if key != _PNG_XMP}
            exif = image.getexif()
            if image.format == "TIFF":
                for tag in [tag for tag in exif if tag not in _TIFF_METADATA_TAGS]:
                    del exif[tag]
                if 0x011A not in getattr(image, "tag_v2", {}):  # (no XResolution: Pillow says 1 dpi, which is not so)
                    photo.dpi = None
                photo.compression = image.info.get("compression")
            if _EXIF_ORIENTATION in exif:
                exif[_EXIF_ORIENTATION] = 1
            photo.exif = exif.tobytes() if len(exif) else None
            if image.format == "JPEG":
                from PIL import JpegImagePlugin

                sampling = JpegImagePlugin.get_sampling(image)
                photo.subsampling = sampling if sampling >= 0 else None
                photo.comment = image.info.get("comment") or None
                # (the IPTC resource alone: the block's others may hold a thumbnail of the picture as it was, the
                # unrestored face kept in the restored file)
                photo.iptc = (image.info.get("photoshop") or {}).get(_IPTC_RESOURCE) or None
            photo.lossless = image.format == "WEBP" and _webp_lossless(path)
            if heif:
                photo.bits = int(image.info.get("bit_depth") or 8)
                photo.parts_not_kept = _heif_parts(image.info)
                if photo.bits > 8 and not photo.grey:
                    photo.deep = _heif_deep(path, rgb.shape)
            if "A" in image.getbands() or "transparency" in image.info:
                upright = ImageOps.exif_transpose(image.convert("RGBA"))
                alpha = np.asarray(upright.getchannel("A"))
                photo.alpha = alpha if alpha.shape == rgb.shape[:2] else None
                if image.format == "TIFF" and image.mode == "RGBA" and photo.alpha is not None:
                    # (OpenCV's TIFF reader multiplies the colour by the alpha: a feathered edge came out darkened,
                    # the colour under a transparent pixel black; Pillow gives the samples as stored)
                    photo.rgb = np.ascontiguousarray(np.asarray(upright.convert("RGB")))
    except (OSError, ValueError, SyntaxError):  # a file OpenCV reads and Pillow does not: its pixels are all there is
        pass
    return photo


def _webp_lossless(path: str | os.PathLike) -> bool:
    """Whether the WebP at ``path`` is coded lossless (its picture a ``VP8L`` chunk, not ``VP8 ``)."""
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)  # (the chunks before the picture: a profile, EXIF, XMP, alpha)
    except OSError:
        return False
    at = 12  # (RIFF, its size, WEBP)
    while at + 8 <= len(data):
        kind, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        if kind in (b"VP8L", b"VP8 "):
            return kind == b"VP8L"
        at += 8 + size + (size & 1)
    return False


def _heif_deep(path: str | os.PathLike, shape: tuple) -> np.ndarray | None:
    """A 10- or 12-bit HEIF photo's samples, upright, as 16-bit RGB (pillow-heif scales them up),
    or None where they do not match its 8-bit picture."""
    from pillow_heif import open_heif

    deep = np.asarray(open_heif(path, convert_hdr_to_8bit=False))
    return np.ascontiguousarray(deep) if deep.dtype == np.uint16 and deep.shape == shape else None


def _heif_parts(info: dict) -> list[str]:
    """What a HEIF file holds beside its picture that a restored copy does not (pillow-heif's
    ``info``): a Portrait photo's depth map, an HDR photo's gain map."""
    parts = []
    if info.get("depth_images"):
        parts.append("depth map (Portrait mode's background blur is no longer editable)")
    if any("hdrgainmap" in str(kind).lower() for kind in (info.get("aux") or {})):
        parts.append("HDR gain map (the photo shows as SDR)")
    return parts


def read_photo_header(path: str | os.PathLike) -> None:
    """Checks that ``path`` is one photo that can be read, from its header where Pillow knows the
    format (a batch plans thousands of photos without decoding them), else by decoding it.

    Raises:
        InputError: as :func:`read_rgb` (a photo of too many pixels too); or the file holds several pictures (an animated WebP or
            PNG, a multi-page TIFF, a HEIF burst), of which a photo's restore would keep only the first.
    """
    _check_not_a_pipe(path)
    Image = _pillow()
    try:
        with Image.open(path) as image:  # (its header: check_photo_size's check too)
            pictures, kind = getattr(image, "n_frames", 1), image.format
    except Image.DecompressionBombError:
        raise _too_large(path) from None
    except (OSError, ValueError, SyntaxError):
        read_rgb(path)  # a format only OpenCV reads, or an error worded as every photo's
        return
    if pictures > 1 and kind == "TIFF":  # (a scanner's front and back of a print: pages, not a film)
        raise InputError(f"{path} holds {pictures} pages; a photo's restore would keep the first only: save each page "
                         "as a photo first (e.g. ImageMagick: magick IN page-%d.png) and restore those")
    if pictures > 1:
        raise InputError(f"{path} holds {pictures} pictures (animated, or pages); a photo's restore would keep the "
                         "first only: make it a video first (e.g. ffmpeg -i IN out.mp4) and restore that")


def default_photo_output(src: str | os.PathLike) -> Path:
    """``<stem>.restored<ext>`` beside ``src``: its own format where one is written, else PNG."""
    src = Path(src)
    suffix = src.suffix if src.suffix.lower() in PHOTO_OUTPUT_SUFFIXES else ".png"
    return src.with_name(f"{src.stem}.restored{suffix}")


def check_photo_output(path: str | Path, force: bool = False) -> str:
    """Refuses an output no photo can be written to (see :func:`write_photo`); its Pillow format."""
    Image = _pillow()
    dst = Path(path)
    check_output_path(dst, force, "out.png")
    fmt = PHOTO_OUTPUT_SUFFIXES.get(dst.suffix.lower())
    if fmt is None:
        names = ", ".join(dict.fromkeys(PHOTO_OUTPUT_SUFFIXES))
        raise OutputError(f"cannot write a photo as {dst.suffix or 'an extension-less file'} ({dst.name}); "
                          f"use one of {names}")
    Image.init()
    if fmt not in Image.SAVE:  # AVIF needs a Pillow built with libavif
        raise OutputError(f"this Pillow ({Image.__version__}) writes no {dst.suffix} files; write .png or .jpg")
    return fmt


def same_photo_format(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Whether ``dst`` is written in the format ``src`` is stored in (by their suffixes)."""
    fmt = PHOTO_OUTPUT_SUFFIXES.get(Path(src).suffix.lower())
    return fmt is not None and fmt == PHOTO_OUTPUT_SUFFIXES.get(Path(dst).suffix.lower())


def copy_photo(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> None:
    """Copies the photo ``src`` to ``dst`` byte for byte (a photo nothing was changed in: re-encoding
    it would only lose quality). The file appears only when complete.

    Raises:
        OutputError: as :func:`check_photo_output`, or the copy fails.
    """
    dst = Path(dst)
    check_photo_output(dst, force)
    write_atomically(dst, lambda temp: shutil.copyfile(src, temp), replace=force)


def write_photo(path: str | Path, rgb: np.ndarray, like: PhotoFile, *, force: bool = False,
                software: str | None = None) -> list[str]:
    """Writes ``rgb`` to ``path`` as the photo ``like`` was (grey, transparency, colour profile, EXIF, and
    a JPEG's comment, IPTC and chroma subsampling, a WebP's losslessness, a TIFF's compression), in the format
    its suffix names (:data:`PHOTO_OUTPUT_SUFFIXES`; JPEG, WebP, AVIF and HEIC at :data:`PHOTO_QUALITY`).
    The file appears only when complete, and once it opens again.

    Args:
        path: the output file.
        rgb: (H, W, 3) uint8 RGB, ``like.rgb``'s size.
        like: the photo it was restored from.
        force: replace an existing ``path``.
        software: written as the EXIF ``Software`` tag (the program that made the file; every format but BMP),
            in place of the photo's; None (default): the photo's kept. What restores faces gives
            :func:`streamrestore.provenance.restored_comment`.

    Returns:
        What the output does not keep of the photo, a sentence each (16 bits, transparency in a JPEG).

    Raises:
        OutputError: ``path`` has a suffix no photo is written as, is a folder, exists without
            ``force``, lies in a missing folder, or cannot be written.
    """
    Image = _pillow()
    dst = Path(path)
    fmt = check_photo_output(dst, force)
    notes = []
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if like.grey:
        image = image.convert("L")
    if like.alpha is not None:
        if fmt in ("JPEG", "BMP"):
            notes.append(f"the photo's transparency is not kept: {dst.suffix} holds none (write .png to keep it)")
        else:
            image.putalpha(Image.fromarray(like.alpha))
    deep = None
    if like.deep is not None and like.alpha is None and (fmt in ("PNG", "HEIF") or fmt == "TIFF" and _writes_16_bit_tiff()):
        deep = _deepened(rgb, like)
        if fmt == "HEIF" and like.bits > 10:
            notes.append(f"the photo had {like.bits} bits per sample; a HEIC is written with 10 (write .png or .tif to "
                         f"keep {like.bits})")
        if fmt == "TIFF" and like.exif and _EXIF_WORTH_SAYING & _exif_tags(like.exif):
            notes.append("the photo's EXIF is not kept: its 16-bit TIFF is written without it (.png keeps both)")
    elif like.bits > 8:
        keep = "" if like.alpha is not None or like.deep is None else f" (write .png or .tif to keep {like.bits})"
        if keep and fmt == "TIFF":  # (a .tif already: what it lacks is tifffile, which a plain install has)
            keep = f" (write .png to keep {like.bits}, or pip install tifffile)"
        notes.append(f"the photo had {like.bits} bits per sample; it is written with 8{keep}")
    notes += [f"the photo's {part} is not kept" for part in like.parts_not_kept]
    if like.unprofiled_colours:
        notes.append(f"the photo's colours are {like.unprofiled_colours} (a print's inks), with no colour profile to "
                     "read them by: it is written as RGB")
    if like.dropped_profile:
        notes.append(f"the photo's {like.dropped_profile} colour profile is not kept: it is written as RGB")
    options: dict = {}
    if fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
        options["quality"] = PHOTO_QUALITY
    if fmt == "JPEG" and like.subsampling is not None:  # (a 4:4:4 master came back 4:2:0: the colour's edges halved)
        options["subsampling"] = like.subsampling
    if fmt == "JPEG" and like.comment:
        options["comment"] = like.comment
    if fmt == "WEBP" and like.lossless:  # (the colour under transparent pixels too)
        options.update(lossless=True, exact=True)
    if fmt == "TIFF" and like.compression in _TIFF_COMPRESSIONS_KEPT:
        if like.exif and {0x8769, 0x8825} & _exif_tags(like.exif):  # (libtiff, which compresses, refuses their pointers)
            notes.append(f"the photo's {like.compression} compression is not kept: its EXIF blocks and a compressed "
                         "TIFF cannot both be written here (written uncompressed; .png is lossless and smaller)")
        else:
            options["compression"] = like.compression
            if like.compression == "jpeg":  # (libtiff's own default is 75)
                options["quality"] = PHOTO_QUALITY
    if fmt != "BMP":
        if like.icc_profile:
            options["icc_profile"] = like.icc_profile
        exif = _with_software(like.exif, software)
        if exif:
            options["exif"] = exif
    if like.xmp and fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
        options["xmp"] = like.xmp
    if like.dpi and fmt in ("JPEG", "PNG", "TIFF"):
        options["dpi"] = like.dpi
    if fmt == "PNG" and (like.text or like.xmp):
        from PIL import PngImagePlugin

        chunks = PngImagePlugin.PngInfo()
        for key, value in like.text.items():
            chunks.add_itxt(key, value)
        if like.xmp:
            chunks.add_itxt(_PNG_XMP, like.xmp.decode("utf-8", "replace"))
        options["pnginfo"] = chunks
    iptc = like.iptc if fmt == "JPEG" else None

    def write(temp: Path) -> None:
        if deep is not None:
            _write_16_bits(temp, deep, fmt, options, like.xmp, software)
        else:
            image.save(temp, format=fmt, **options)
        if iptc:
            temp.write_bytes(_with_iptc(temp.read_bytes(), iptc))
        _check_opens(temp, dst)

    write_atomically(dst, write, replace=force)
    return notes


def _with_software(exif: bytes | None, software: str | None) -> bytes | None:
    """``exif`` with its ``Software`` tag ``software`` (None: as it is; no EXIF: one of that tag alone)."""
    if software is None:
        return exif
    from PIL import Image

    tags = Image.Exif()
    if exif:
        tags.load(exif)
    tags[_EXIF_SOFTWARE] = software
    return tags.tobytes()


def _with_iptc(jpeg: bytes, iptc: bytes) -> bytes:
    """The JPEG file ``jpeg`` with ``iptc`` as the IPTC resource of a Photoshop APP13 segment (Pillow writes none),
    after its application segments (JFIF, EXIF, XMP, the profile), before the picture's tables."""
    resource = b"8BIM" + _IPTC_RESOURCE.to_bytes(2, "big") + b"\x00\x00" + len(iptc).to_bytes(4, "big") + iptc
    block = b"Photoshop 3.0\x00" + resource + b"\x00" * (len(iptc) & 1)
    if len(block) + 2 > 0xFFFF:  # (more than one segment holds)
        return jpeg
    at = 2  # (after SOI)
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF and (0xE0 <= jpeg[at + 1] <= 0xEF or jpeg[at + 1] == 0xFE):
        at += 2 + int.from_bytes(jpeg[at + 2:at + 4], "big")  # (an APPn or COM segment)
    return jpeg[:at] + b"\xff\xed" + (len(block) + 2).to_bytes(2, "big") + block + jpeg[at:]


def _check_opens(temp: Path, dst: Path) -> None:
    """OSError (said as the output not written) where the photo written to ``temp`` does not open again: a
    format's writer given what it cannot describe wrote a file nothing reads (a TIFF's old colour model over RGB
    samples), and the run said it was written."""
    try:
        with _pillow().open(temp):
            pass
    except Exception as exc:  # (Pillow raises many types for a file it cannot read)
        raise OSError(f"the {dst.suffix} file written does not open again ({exc}); write .png instead") from None


# EXIF tags a photo's owner would miss (a TIFF's EXIF as Pillow reads it holds its structure's tags
# too): make, model, date, artist, copyright, the Exif and GPS blocks
_EXIF_WORTH_SAYING = {0x010F, 0x0110, 0x0132, 0x013B, 0x8298, 0x8769, 0x8825}


def _exif_tags(exif: bytes) -> set[int]:
    from PIL import Image

    tags = Image.Exif()
    tags.load(exif)
    return set(tags)


def _writes_16_bit_tiff() -> bool:
    """Whether tifffile is there (scikit-image, which insightface needs, brings it)."""
    import importlib.util

    return importlib.util.find_spec("tifffile") is not None


def _deepened(rgb: np.ndarray, like: PhotoFile) -> np.ndarray:
    """``like.deep`` plus the change from ``like.rgb`` to ``rgb``, at 16 bits (an 8-bit step is 257):
    samples nothing changed keep every bit (a grey photo: the change of the grey picture)."""
    assert like.deep is not None
    if like.grey:
        change = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.int32)
                  - cv2.cvtColor(like.rgb, cv2.COLOR_RGB2GRAY).astype(np.int32))
    else:
        change = rgb.astype(np.int32) - like.rgb.astype(np.int32)
    return np.clip(like.deep.astype(np.int32) + change * 257, 0, 65535).astype(np.uint16)


def _write_16_bits(path, deep: np.ndarray, fmt: str, options: dict, xmp: bytes | None,
                   software: str | None = None) -> None:
    """Writes the 16-bit picture ``deep`` as a PNG, TIFF or HEIC (10 bits) with what ``options``
    (Pillow's save options) keep. Pillow writes no 16-bit colour picture: OpenCV writes the PNG, which is given the
    metadata chunks Pillow writes for the same options (on a 1-pixel picture); tifffile writes the
    TIFF (colour profile, dpi, ``xmp`` and ``software``; not EXIF)."""
    from PIL import Image

    if fmt == "HEIF":  # (pillow-heif writes 16-bit samples as a 10-bit HEIC)
        from pillow_heif import from_bytes

        heif = from_bytes(mode="RGB;16", size=(deep.shape[1], deep.shape[0]), data=deep.tobytes())
        if options.get("icc_profile"):
            heif.info["icc_profile"] = options["icc_profile"]
        heif.save(path, quality=options.get("quality", PHOTO_QUALITY), exif=options.get("exif"), xmp=xmp)
        return
    if fmt == "TIFF":
        import tifffile

        dpi = options.get("dpi")
        extratags = [(700, "B", len(xmp), xmp, True)] if xmp else []  # (TIFF's XMP tag)
        tifffile.imwrite(path, deep, photometric="minisblack" if deep.ndim == 2 else "rgb", compression="zlib",
                         metadata=None, iccprofile=options.get("icc_profile"), extratags=extratags, software=software,
                         resolution=(float(dpi[0]), float(dpi[1])) if dpi else None,
                         resolutionunit="INCH" if dpi else None)
        return
    ok, png = cv2.imencode(".png", deep if deep.ndim == 2 else deep[:, :, ::-1])
    if not ok:
        raise OSError("OpenCV could not encode the 16-bit PNG")
    donor = io.BytesIO()
    Image.new("L", (1, 1)).save(donor, format="PNG", **options)
    kept = b"".join(chunk for kind, chunk in _png_chunks(donor.getvalue()) if kind not in _PNG_PICTURE_CHUNKS)
    data = png.tobytes()
    header_end = 8 + 25  # the signature, then IHDR (length, type, 13 bytes, CRC)
    with open(path, "wb") as out:
        out.write(data[:header_end] + kept + data[header_end:])


# chunks that describe a PNG's pixels, not the photo: taken from the picture written, not the donor
_PNG_PICTURE_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"sBIT", b"bKGD", b"hIST", b"sPLT"}


def _png_chunks(data: bytes):
    """(type, the whole chunk's bytes) of each chunk of a PNG file."""
    at = 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        yield data[at + 4:at + 8], data[at:at + 12 + length]
        at += 12 + length
