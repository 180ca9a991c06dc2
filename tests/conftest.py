import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _own_cache_root(tmp_path_factory):
    """What streamrestore keeps between runs (ONNX programs, fine-tunes: streamrestore.cache_dir)
    goes to a folder of this test run, never to the user's ~/.cache or a $STREAMRESTORE_CACHE they
    set: a program left there by other code could be loaded, and tests would fill it. A test may
    point it elsewhere with monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMRESTORE_CACHE", str(tmp_path_factory.mktemp("cache_root")))
        yield


def shared_root() -> Path:
    """The shared media folder: $STREAMRESTORE_SHARED, else ../shared next to the repo."""
    env = os.environ.get("STREAMRESTORE_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    return root


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"needs the shared folder's real media or models, not found at {root} "
                    "(set STREAMRESTORE_SHARED)")
    return root


@pytest.fixture(scope="session")
def maybe_shared() -> Path | None:
    """The shared folder, or None without it (for a test that uses it when it is there and runs
    without it too)."""
    root = shared_root()
    return root if (root / "data").is_dir() else None


@pytest.fixture(scope="session")
def shared_data(shared) -> Path:
    return shared / "data"


@pytest.fixture(scope="session")
def train_ok_folders() -> frozenset:
    """The folders of shared/data that may train a shipped model (configs/shared_data.toml)."""
    from streamrestore.data.sources import read_train_ok_folders

    return read_train_ok_folders(Path(__file__).resolve().parents[1] / "configs" / "shared_data.toml")


@pytest.fixture(scope="session")
def shared_models(shared) -> Path:
    return shared / "models"


@pytest.fixture
def refs(tmp_path, shared_data):
    """A reference folder of one person (two photos of Obama), in a test's own tmp folder."""
    folder = tmp_path / "refs"
    folder.mkdir()
    for p in sorted((shared_data / "face_recognition/knn_train/obama").iterdir())[:2]:
        shutil.copy(p, folder / p.name)
    return folder


@dataclass(frozen=True)
class FaceClip:
    """A clip of one drawn face (tests/synthetic_faces.py) and where its landmarks are."""

    path: Path
    landmarks: list  # (5, 2) float array per frame
    width: int
    height: int
    fps: int

    @property
    def frames(self) -> int:
        return len(self.landmarks)


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory) -> FaceClip:
    """16 frames (0.64 s) of a drawn face moving over a textured backdrop, 160x120 H.264 with an
    AAC tone: a face video that needs no shared media. Read-only: copy it to change it."""
    from media_utils import make_face_clip

    path = tmp_path_factory.mktemp("face_clip") / "face.mp4"
    truth = make_face_clip(path, width=160, height=120, frames=16, fps=25, audio="aac")
    return FaceClip(path, truth, 160, 120, 25)


@pytest.fixture(scope="session")
def soft_face_clips(tmp_path_factory):
    """``soft_face_clips(width, height, size=0.23)``: a 60-frame (25 fps) drawn-face clip of that
    size (eye distance ``size`` times the smaller side, +-10 %), softened like camera footage (Gaussian blur, sigma 1.5; the
    drawing's hard saturated edges would cost 4:2:0 chroma far more than real faces do), H.264
    4:2:0, made once per size."""
    import cv2
    from media_utils import make_clip
    from synthetic_faces import face_frames

    folder = tmp_path_factory.mktemp("soft_faces")
    made = {}

    def clip(width: int, height: int, size: float = 0.23) -> Path:
        if (width, height, size) not in made:
            pictures, _ = face_frames(60, width, height, size=size)
            path = folder / f"drawn{width}x{height}_{size}.mp4"
            make_clip(path, width=width, height=height, frames=60,
                      picture=lambda i: cv2.GaussianBlur(pictures[i], (0, 0), 1.5))
            made[width, height, size] = path
        return made[width, height, size]

    return clip


@pytest.fixture
def synthetic_faces(monkeypatch):
    """``create_detector`` and ``create_embedder`` give the drawn-face detector and embedder (what
    ``build_face_restorer``, the command line and the examples load), for this test."""
    import synthetic_faces

    synthetic_faces.install(monkeypatch)
    return synthetic_faces


@pytest.fixture
def synthetic_refs(tmp_path):
    """A reference folder of one drawn person (two photos of Ann), in a test's own tmp folder."""
    from synthetic_faces import write_portraits

    return write_portraits(tmp_path / "refs", "ann")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (tiny networks run fastest so on a busy machine);
    the caller's thread count comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
