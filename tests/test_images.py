"""The one photo loader: references, training data and evaluation sets read the same files."""
import cv2
import numpy as np
import pytest

from streamrestore.errors import InputError
from streamrestore.images import IMAGE_SUFFIXES, is_image, read_rgb


def _picture() -> np.ndarray:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10, 0] = 200  # red left third
    rgb[:, 20:, 2] = 150  # blue right third
    return rgb


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff", ".TIF"])
def test_lossless_formats_read_back_as_rgb(tmp_path, suffix):
    path = tmp_path / f"bild-ü{suffix}"  # non-ASCII name: fromfile + imdecode
    ok, buf = cv2.imencode(suffix.lower(), _picture()[:, :, ::-1])
    assert ok
    path.write_bytes(buf.tobytes())
    assert is_image(path)
    assert np.array_equal(read_rgb(path), _picture())


def test_unreadable_files_raise_input_error_naming_them(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        read_rgb(broken)
    with pytest.raises(InputError, match="missing.png"):
        read_rgb(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png"):
        read_rgb(tmp_path / "empty.png")
    (tmp_path / "broken.avif").write_bytes(b"not an avif")  # (also what an OpenCV without AVIF says)
    with pytest.raises(InputError, match=r"broken.avif: this OpenCV \(.*\) decodes no AVIF, or the file is damaged"):
        read_rgb(tmp_path / "broken.avif")


def test_references_and_training_take_the_same_files(tmp_path):
    from streamrestore.data.sources import discover_sources
    from streamrestore.faces.references import list_reference_files

    person = tmp_path / "person"
    person.mkdir()
    for suffix in sorted(IMAGE_SUFFIXES) + [".txt", ".mp3"]:
        (person / f"photo{suffix}").write_bytes(b"x")
    as_refs = {p.name for p in list_reference_files(person, warn=False)}
    as_training = {s.path.name for s in discover_sources(tmp_path) if s.kind == "image"}
    assert as_refs == as_training == {f"photo{s}" for s in IMAGE_SUFFIXES}


def test_avif_photos_are_read(tmp_path):
    """AVIF (phones and browsers save it): OpenCV decodes it (lossy: colours close, not equal)."""
    ok, buf = cv2.imencode(".avif", _picture()[:, :, ::-1])
    if not ok:
        pytest.skip("this OpenCV build writes no AVIF")
    path = tmp_path / "photo.AVIF"
    path.write_bytes(buf.tobytes())
    assert is_image(path)
    assert np.abs(read_rgb(path).astype(int) - _picture()).mean() < 12


def test_raw_references_say_how_to_make_them_readable(tmp_path, caplog):
    """A camera's raw files are not read: the folder's error (or the warning, beside readable
    photos) names them and says to export JPEG, not "no images" in a folder of photos."""
    from streamrestore.errors import ReferencesError
    from streamrestore.faces.references import list_reference_files

    person = tmp_path / "person"
    person.mkdir()
    for name in ("IMG_0001.CR2", "IMG_0002.nef"):
        (person / name).write_bytes(b"x")
    with pytest.raises(ReferencesError, match=r"only photos that cannot be read \(IMG_0001.CR2, IMG_0002.nef\): "
                                              r"camera raw photos .* export them as JPEG"):
        list_reference_files(person)
    with pytest.raises(ReferencesError, match="IMG_0001.CR2: camera raw photos"):
        list_reference_files(person / "IMG_0001.CR2")
    ok, buf = cv2.imencode(".png", _picture())
    (person / "photo.png").write_bytes(buf.tobytes())
    with caplog.at_level("WARNING", logger="streamrestore"):
        assert [p.name for p in list_reference_files(person)] == ["photo.png"]
    assert "skipping IMG_0001.CR2, IMG_0002.nef: camera raw photos" in caplog.text


def test_an_iphones_heic_photos_are_references(tmp_path):
    """HEIC, an iPhone's default photo format, is read upright as every photo is: libheif applies
    the file's turn, so a portrait taken sideways comes out as shown."""
    from PIL import Image

    from streamrestore.faces.references import list_reference_files
    from streamrestore.images import _pillow

    shown = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown after a quarter turn clockwise
    _pillow()
    person = tmp_path / "person"
    person.mkdir()
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(person / "IMG_0001.HEIC", format="HEIF",
                                                                   quality=100, exif=exif.tobytes())
    assert all(is_image(f"IMG_0001{suffix}") for suffix in (".HEIC", ".heif", ".HIF"))
    (path,) = list_reference_files(person)
    rgb = read_rgb(path)
    assert rgb.shape == shown.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - shown).mean() < 6
    (person / "IMG_0002.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # cut off after its first box
    with pytest.raises(InputError, match="IMG_0002.heic; is it a valid HEIF photo"):
        read_rgb(person / "IMG_0002.heic")


def test_a_pipe_named_as_a_photo_is_refused_not_waited_on(tmp_path):
    """A FIFO named f.jpg (as the input, in a batch's folder or among reference photos) hung the run for
    ever, saying nothing: opening it waits for a writer."""
    import os
    import threading

    from streamrestore.batch import count_frames
    from streamrestore.images import read_photo, read_photo_header

    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)
    said = []

    def read_all():
        for read in (read_photo_header, read_rgb, read_photo):
            for path in (fifo, link):
                with pytest.raises(InputError, match=r"is a pipe or a device, not a photo file"):
                    read(path)
                said.append(path)
        said.append(count_frames(fifo))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # (free the waiting open before failing)
        with open(fifo, "wb"):
            pass
        pytest.fail("a read waited on the pipe")
    assert said[-1] == -1 and len(said) == 7


def test_a_reference_photo_of_too_many_pixels_is_read_smaller_or_refused(tmp_path, monkeypatch):
    """A 0.5 MB PNG of 13000 x 13000 passed the size guard and took 4.5 GB and 49 s as a reference photo."""
    from streamrestore.errors import PhotoTooLargeError
    from streamrestore.faces import references

    picture = np.zeros((300, 400, 3), np.uint8)
    picture[:, :200] = (200, 60, 30)
    jpeg, png = tmp_path / "big.jpg", tmp_path / "big.png"
    cv2.imwrite(str(jpeg), picture)
    cv2.imwrite(str(png), picture)
    assert read_rgb(jpeg).shape == (300, 400, 3) and read_rgb(jpeg, most_pixels=120_000).shape == (300, 400, 3)
    assert read_rgb(jpeg, most_pixels=40_000).shape == (150, 200, 3)  # (decoded at half its side)
    assert read_rgb(jpeg, most_pixels=2_000).shape == (38, 50, 3)  # (an eighth)
    with pytest.raises(PhotoTooLargeError, match=r"big.png holds 0 million pixels, more than is read of a reference"):
        read_rgb(png, most_pixels=40_000)
    with pytest.raises(PhotoTooLargeError):
        read_rgb(jpeg, most_pixels=1_000)  # (more than an eighth of a side would take)
    monkeypatch.setattr(references, "REFERENCE_PHOTO_PIXELS", 40_000)
    assert next(references.reference_pictures(jpeg))[1].shape == (150, 200, 3)
    with pytest.raises(references.ReferencesError, match="too large|more than is read"):
        next(references.reference_pictures(png))
