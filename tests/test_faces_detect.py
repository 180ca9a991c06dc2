"""Face detection tests on shared photos (and, where the detector's own accuracy is not the
point, on drawn faces too).

Measured choice of dlib landmarks (mean 5-point error against SCRFD-2.5G, % of SCRFD's
inter-ocular distance; 92 faces of face_recognition/ + deepface/, then 75 held-out faces of
liveportrait/ + dlib/ photos):
    68-point predictor: 4.3 % (held out 6.0 %)   -> the default
    5-point predictor + FFHQ layout for nose tip and mouth: 7.7 % (held out 9.4 %)
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamrestore.errors import ModelError
from streamrestore.faces import detect as detect_module
from streamrestore.faces.align import template
from streamrestore.faces.detect import (
    DlibDetector,
    ScrfdDetector,
    create_detector,
    detect_padded,
    detect_upright,
    find_model_pack,
)
from streamrestore.types import Face
from streamrestore.video.reader import quarter_turns


def _rgb(path):
    image = cv2.imread(str(path))
    assert image is not None, path
    return np.ascontiguousarray(image[:, :, ::-1])


@pytest.fixture(scope="module")
def scrfd(shared_models):
    return create_detector("scrfd", models_dir=shared_models / "insightface")


@pytest.fixture(scope="module")
def photos(shared_data):
    folder = shared_data / "face_recognition" / "knn_train"
    found = [_rgb(p) for p in sorted(folder.glob("*/*.jp*g"))]
    assert len(found) >= 4, folder
    return found


def _check_face_layout(face: Face):
    left_eye, right_eye, nose, left_mouth, right_mouth = face.kps
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert min(left_eye[1], right_eye[1]) < nose[1] < max(left_mouth[1], right_mouth[1])
    x1, y1, x2, y2 = face.box
    assert np.all(face.kps[:, 0] > x1) and np.all(face.kps[:, 0] < x2)
    assert np.all(face.kps[:, 1] > y1) and np.all(face.kps[:, 1] < y2)


def test_scrfd_finds_one_face_with_ordered_landmarks(scrfd, shared_data):
    assert isinstance(scrfd, ScrfdDetector) and scrfd.name == "scrfd"
    faces = scrfd.detect(_rgb(shared_data / "face_recognition/knn_train/obama/obama.jpg"))
    assert len(faces) == 1
    assert faces[0].score > 0.6
    assert faces[0].box.shape == (4,) and faces[0].kps.shape == (5, 2)
    _check_face_layout(faces[0])


def test_scrfd_two_people_sorted_by_score(scrfd, shared_data):
    faces = scrfd.detect(_rgb(shared_data / "face_recognition/two_people.jpg"))
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    for face in faces:
        _check_face_layout(face)


@pytest.mark.parametrize("kind", ["dlib", "scrfd"])
def test_detectors_reject_bad_images(request, kind):
    scrfd = create_detector("dlib") if kind == "dlib" else request.getfixturevalue("scrfd")
    with pytest.raises(ValueError, match="uint8"):
        scrfd.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        scrfd.detect(np.zeros((64, 64), np.uint8))


def test_dlib_landmarks_follow_scrfd_convention(scrfd, photos):
    dlib68 = DlibDetector(landmarks="68")
    dlib5 = DlibDetector(landmarks="5")
    errors = {"68": [], "5": []}
    for rgb in photos:
        reference = scrfd.detect(rgb)
        for key, detector in (("68", dlib68), ("5", dlib5)):
            for face in detector.detect(rgb):
                _check_face_layout(face)
                match = min(reference, key=lambda r: np.abs(r.box - face.box).sum())
                iod = np.linalg.norm(match.kps[1] - match.kps[0])
                errors[key].append(np.linalg.norm(face.kps - match.kps, axis=1).mean() / iod)
    assert len(errors["68"]) >= len(photos) - 1 and len(errors["5"]) == len(errors["68"])
    mean68, mean5 = np.mean(errors["68"]), np.mean(errors["5"])
    assert mean68 < 0.08 and mean5 < 0.12
    assert mean68 < mean5  # why 68 is the default


def _two_people(request, media):
    """Two faces, the left one first: drawn (Ann, Ben; dlib finds drawn faces too) or two_people.jpg."""
    if media == "synthetic":
        import synthetic_faces as sf

        return sf.two_people(640, 360)[0]
    return _rgb(request.getfixturevalue("shared_data") / "face_recognition/two_people.jpg")


@pytest.mark.parametrize("media", ["synthetic", "real"])
def test_dlib_scores_and_upsampling(request, media):
    detector = create_detector("dlib")
    assert isinstance(detector, DlibDetector) and detector.name == "dlib"
    assert detector.upsample_for(np.zeros((360, 640, 3), np.uint8)) == 1
    assert detector.upsample_for(np.zeros((1080, 1920, 3), np.uint8)) == 0
    assert detector.upsample_for(np.zeros((120, 160, 3), np.uint8)) == 2
    faces = detector.detect(_two_people(request, media))
    assert len(faces) == 2 and all(0.5 < f.score < 1 for f in faces)
    assert faces[0].score >= faces[1].score
    with pytest.raises(ValueError, match="landmarks"):
        DlibDetector(landmarks="7")
    with pytest.raises(ValueError, match="threshold"):
        create_detector("dlib", threshold=1.5)


def _aligned_drawn_faces():
    import synthetic_faces as sf

    return [sf.aligned_face(person, 512) for person in sf.PEOPLE]


@pytest.mark.parametrize("media", ["synthetic", "real"])
def test_detect_padded_finds_faces_that_fill_the_image(request, media):
    """Aligned 512 crops that the face fills: SCRFD alone misses some (measured 8 of 12 gt.png
    with a 640 input); the padded retry finds them all. Drawn: the drawn-face detector on drawn
    faces aligned the same way (what is checked there: the padded pass maps back)."""
    if media == "synthetic":
        import synthetic_faces as sf

        scrfd, crops = sf.SyntheticFaceDetector(), _aligned_drawn_faces()
    else:
        scrfd = request.getfixturevalue("scrfd")
        files = sorted((request.getfixturevalue("shared_data") / "instantrestore").glob("*/gt.png"))[:6]
        crops = [_rgb(file) for file in files]
    assert len(crops) >= 3
    for file, rgb in enumerate(crops):
        faces = detect_padded(scrfd, rgb)
        assert faces, file
        # Landmarks are mapped back to the unpadded image: near the FFHQ template.
        assert np.abs(faces[0].kps - template(512)).max() < 50
        _check_face_layout(faces[0])


@pytest.mark.parametrize("media", ["synthetic", "real"])
def test_detect_padded_keeps_one_detection_per_face(request, media):
    if media == "synthetic":
        import synthetic_faces as sf

        scrfd = sf.SyntheticFaceDetector()
    else:
        scrfd = request.getfixturevalue("scrfd")
    rgb = _two_people(request, media)
    plain = scrfd.detect(rgb)
    padded = detect_padded(scrfd, rgb)
    assert len(padded) == len(plain) == 2
    for face in plain:
        assert min(np.abs(p.box - face.box).max() for p in padded) < 0.1 * (face.box[2] - face.box[0])


def test_a_detector_that_searches_every_pixel_retries_on_a_padded_picture_shrunk_back():
    """dlib's cost grows with the picture's pixels: the padded retry (on every detection of video with
    no face) searched a picture 2x wider and higher, six times a plain search on 720p. A detector that
    says it searches every pixel gets the padded picture shrunk back to the frame's longer side, and
    the plain search is not repeated; a face that fills the frame is still found, where it is."""
    import synthetic_faces as sf

    class NeedsContext(sf.SyntheticFaceDetector):  # misses a face that fills its picture, as HOG does
        searches_every_pixel = True

        def __init__(self):
            super().__init__()
            self.shapes = []

        def detect(self, image):
            self.shapes.append(image.shape[:2])
            return [f for f in super().detect(image) if (f.box[2] - f.box[0]) < 0.8 * image.shape[1]]

    picture, (truth,) = sf.scene(200, 240, [("ann", sf.face_matrix((100, 120), 80))])
    detector = NeedsContext()
    (face,) = detect_upright(detector, picture)
    assert detector.shapes == [(240, 200), (240, 220)]  # the plain search once, then the padded one, as long
    assert np.abs(face.kps - truth).max() < 3  # (found at half the size: landmarks within a few pixels)
    unshrunk = NeedsContext()
    (whole,) = detect_padded(unshrunk, picture)
    assert unshrunk.shapes == [(240, 200), (480, 440)]  # (what the others get: SCRFD's cost is its input size)
    assert np.abs(face.box - whole.box).max() < 3
    small = NeedsContext()
    small.min_side = 300  # (dlib doubles a picture under its min_side: shrunk under it, nothing is saved)
    detect_upright(small, picture)
    assert small.shapes == [(240, 200), (480, 440)]


def test_quarter_turns():
    assert [quarter_turns(r) for r in (0, 90, -90, 180, -180, 270, 30, 60, -120)] == [0, 1, 3, 2, 2, 3, 0, 1, 3]
    with pytest.raises(ValueError, match="rotation"):
        quarter_turns(float("nan"))


@pytest.mark.parametrize("rotation", [0, 90, -90, 180])
def test_a_picture_stored_turned_is_searched_upright(rotation):
    """A phone stores portrait video sideways and tags its display rotation. The face is drawn
    turned in the stored picture (its landmarks known there), so that the picture shown as the
    tag says is upright: found there, and given back in the stored picture's coordinates."""
    import synthetic_faces as sf

    width, height = (120, 160) if rotation in (90, -90) else (160, 120)
    stored, (truth,) = sf.scene(width, height, [("ann", sf.face_matrix((70, 75), 34, roll_degrees=rotation))])
    detector = sf.UprightFaceDetector()
    shown = np.ascontiguousarray(np.rot90(stored, quarter_turns(rotation)))
    assert len(detector.detect(shown)) == 1  # the picture as shown has an upright face
    if rotation:
        assert detector.detect(stored) == []  # and the stored one a turned face, missed
    faces = detect_upright(detector, stored, rotation)
    assert len(faces) == 1
    assert np.abs(faces[0].kps - truth).max() < 0.6  # in stored coordinates, in the detector's order
    x0, y0, x1, y1 = faces[0].box
    assert x0 < truth[:, 0].min() and x1 > truth[:, 0].max() and y0 < truth[:, 1].min() and y1 > truth[:, 1].max()
    assert x0 < x1 and y0 < y1


def test_model_pack_resolution(shared_models, tmp_path, monkeypatch):
    root = shared_models / "insightface"
    pack = root / "models" / "mini_sc"
    assert find_model_pack(root) == pack
    assert find_model_pack(pack) == pack
    assert find_model_pack(pack / "det_500m.onnx") == pack
    detector = create_detector("auto", models_dir=shared_models / "scrfd" / "det_2.5g.onnx")
    assert isinstance(detector, ScrfdDetector) and detector.model_file.name == "det_2.5g.onnx"
    with pytest.raises(ModelError, match="--face-models"):
        find_model_pack(tmp_path)
    with pytest.raises(ModelError, match="no such file or folder"):  # (it said "no detector found there")
        find_model_pack(tmp_path / "typo")
    with pytest.raises(ValueError, match="kind"):
        create_detector("yolo")


def test_auto_without_pack_uses_dlib_and_says_what_it_misses(tmp_path, monkeypatch, caplog):
    """dlib finds far fewer faces than SCRFD (a 3 s interview: 20 against 145): the fallback is a
    warning naming what it misses and how to get SCRFD, not an info line."""
    monkeypatch.setattr(detect_module, "_INSIGHTFACE_HOME", tmp_path)
    assert find_model_pack() is None
    with caplog.at_level("WARNING", logger="streamrestore"):
        assert isinstance(create_detector("auto"), DlibDetector)
    assert "misses small, turned and partly hidden faces" in caplog.text and "--face-models DIR" in caplog.text


def test_scrfd_without_pack_names_the_pack_and_stays_offline(tmp_path, monkeypatch, capfd):
    """No download attempt, no insightface chatter: one error saying which pack to get."""
    import socket

    monkeypatch.setattr(detect_module, "_INSIGHTFACE_HOME", tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("create_detector tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(ModelError) as error:
        create_detector("scrfd")
    message = str(error.value)
    assert detect_module.DEFAULT_PACK in message and str(tmp_path / "models" / "buffalo_l") in message
    assert "--face-models" in message and "--detector dlib" in message
    assert list(tmp_path.iterdir()) == []  # nothing created either
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""


def test_scrfd_uses_a_pack_in_the_insightface_home(shared_models, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mini_sc").symlink_to(shared_models / "insightface" / "models" / "mini_sc")
    monkeypatch.setattr(detect_module, "_INSIGHTFACE_HOME", tmp_path)
    assert isinstance(create_detector("auto"), ScrfdDetector)


def test_scrfd_input_follows_the_frame_aspect(shared_models):
    """A 16:9 frame is not letterboxed into a square (half the work would be padding)."""
    from streamrestore.faces.detect import create_detector

    det = create_detector("scrfd", models_dir=shared_models / "insightface", det_size=640)
    assert det.input_size(720, 1280) == (640, 384)
    assert det.input_size(1280, 720) == (384, 640)
    assert det.input_size(480, 480) == (640, 640)
    assert det.input_size(1080, 1920) == (640, 384)
    assert all(v % 32 == 0 for v in det.input_size(361, 641))


def test_a_face_package_that_cannot_be_imported_is_named_with_its_pip_name(monkeypatch, tmp_path):
    """dlib-bin or insightface missing from a trimmed environment gave a ModuleNotFoundError traceback."""
    import sys

    from streamrestore.faces.identity import DlibEmbedder, InsightfaceEmbedder

    monkeypatch.setitem(sys.modules, "dlib", None)  # (as if it were not installed)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", None)
    for make in (DlibDetector, DlibEmbedder):
        with pytest.raises(ModelError, match=r"dlib's face models need the dlib-bin package, .*: pip install dlib-bin "
                                             r"\(or give --face-models with an insightface pack\)"):
            make()
    model = tmp_path / "det.onnx"
    model.write_bytes(b"x")
    for make in (ScrfdDetector, InsightfaceEmbedder):
        with pytest.raises(ModelError, match=r"insightface's face models \(--face-models\) need the insightface "
                                             r"package, .*: pip install insightface \(or leave out --face-models"):
            make(model)


def test_a_package_that_a_face_package_needs_is_named_not_the_face_package(monkeypatch):
    """insightface installed without onnxruntime said "pip install insightface", which changes nothing."""
    from streamrestore.faces import detect

    def without(missing):
        def import_module(name):
            raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)
        return import_module

    for missing, wanted in (("onnxruntime", "onnxruntime"), ("cv2", "opencv-python")):
        monkeypatch.setattr(detect.importlib, "import_module", without(missing))
        with pytest.raises(ModelError, match=rf"need the insightface package, which needs {wanted} \(No module "
                                             rf"named '{missing}'\): pip install {wanted} \(or leave out"):
            detect.insightface_model_zoo()

    # insightface raises its own ImportError from onnxruntime's (it still said "pip install insightface")
    def insightface_without_onnxruntime(name):
        try:
            raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
        except ModuleNotFoundError as exc:
            raise ImportError("InsightFace requires ONNX Runtime for inference, but the 'onnxruntime' module could "
                              "not be imported.") from exc

    monkeypatch.setattr(detect.importlib, "import_module", insightface_without_onnxruntime)
    with pytest.raises(ModelError, match=r"which needs onnxruntime .*: pip install onnxruntime \(or leave out"):
        detect.insightface_model_zoo()

    # under a memory limit a library's code may not be mapped: memory, not a package to install (exit 2, "pip
    # install insightface", which changes nothing)
    def not_mapped(name):
        raise ImportError("The installed ONNX Runtime package could not be imported. Original error: "
                          "onnxruntime_pybind11_state.so: failed to map segment from shared object")

    monkeypatch.setattr(detect.importlib, "import_module", not_mapped)
    with pytest.raises(MemoryError, match="insightface could not be loaded .*failed to map segment"):
        detect.insightface_model_zoo()

    def on_a_noexec_mount(name):  # (the same words, with a reason that is not memory)
        raise ImportError("onnxruntime_pybind11_state.so: failed to map segment from shared object: Operation not "
                          "permitted")

    monkeypatch.setattr(detect.importlib, "import_module", on_a_noexec_mount)
    with pytest.raises(ModelError, match="cannot be imported .*Operation not permitted"):
        detect.insightface_model_zoo()


def test_onnxruntime_is_loaded_without_its_telemetry(tmp_path):
    """ONNX Runtime (the CPU backend, SCRFD, the face embedder) recorded a usage event per process (a device id,
    the system, the Python path) under ~/.cache/Microsoft: it is loaded with ``ORT_DISABLE_TELEMETRY=1`` unless
    the user set that variable (``=0``, the control here, records it), also where the CLI loads the native
    libraries up front (``--adapt``), which imported it before the variable was set."""
    import os
    import subprocess
    import sys
    import time

    import torch

    model = tmp_path / "linear.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(model), dynamo=False)
    # (its events are written by a thread of its own, seconds later: the control waits for its file, up to a
    # minute on a busy machine; the others live 5 s longer)
    script = ("import pathlib, sys, time\n"
              "from streamrestore.faces.detect import onnxruntime_module\n"
              "from streamrestore.stop_signals import preload_native_libraries\n"
              "if sys.argv[1] == 'preload': preload_native_libraries()\n"
              f"onnxruntime_module().InferenceSession({str(model)!r}, providers=['CPUExecutionProvider'])\n"
              "until = time.monotonic() + 60\n"
              "while time.monotonic() < until and not (sys.argv[1] == 'control' and any(\n"
              "        (pathlib.Path(sys.argv[2]) / '.cache' / 'Microsoft').rglob('*.db'))):\n"
              "    time.sleep(0.5)\n")
    environment = {key: value for key, value in os.environ.items() if key != "ORT_DISABLE_TELEMETRY"}
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # (this checkout, not another install)
    runs = {}
    for name, env in (("control", {"ORT_DISABLE_TELEMETRY": "0"}), ("default", {}), ("preload", {})):
        home = tmp_path / name
        home.mkdir()
        runs[name] = subprocess.Popen([sys.executable, "-c", script, name, str(home)], cwd=tmp_path, env={
            **environment, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), **env})
    assert runs["control"].wait(timeout=180) == 0
    time.sleep(5)
    for name in ("default", "preload"):
        runs[name].terminate()
        runs[name].wait(timeout=60)
    recorded = {name: any((tmp_path / name / ".cache" / "Microsoft").rglob("*.db")) for name in runs}
    if not recorded["control"]:
        pytest.skip("this onnxruntime build records no telemetry")
    assert recorded == {"control": True, "default": False, "preload": False}
