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


def test_references_and_training_take_the_same_files(tmp_path):
    from streamrestore.data.sources import discover_sources
    from streamrestore.faces.references import list_reference_images

    person = tmp_path / "person"
    person.mkdir()
    for suffix in sorted(IMAGE_SUFFIXES) + [".txt", ".mp3"]:
        (person / f"photo{suffix}").write_bytes(b"x")
    as_refs = {p.name for p in list_reference_images(person, warn=False)}
    as_training = {s.path.name for s in discover_sources(tmp_path) if s.kind == "image"}
    assert as_refs == as_training == {f"photo{s}" for s in IMAGE_SUFFIXES}
