"""Which file lies where in the evaluation models folder (``streamrestore eval --models DIR``).

Measuring a restorer needs face models the package does not ship (their licences do not allow
it): identity judges, the detector that aligns faces, the landmark detector. They live in one
folder, and :class:`EvalModelFiles` is the only code that knows its layout::

    DIR/
      recog/mobilefacenet_128d.onnx          MobileFaceNet, RGB input: the weights a training
                                             identity loss may use, so reported but never the judge
      recog/mobilefacenet_paddle_128d.onnx   an independently trained MobileFaceNet, BGR input:
                                             the identity judge
      scrfd/det_2.5g.onnx                    SCRFD-2.5G: aligns faces (identity folders, packs) and
                                             finds the measured face of each clean video frame
      insightface/models/mini_sc/det_500m.onnx
                                             SCRFD-500M, for the landmark distance (LMD)
      scrfd/det_500m.onnx                    the same SCRFD-500M bytes, used when the file above is
                                             missing
      insightface/                           optional: an insightface root whose model pack the
                                             pipeline's detector and embedder load when a video is
                                             evaluated (``--face-models``)

Everything that reads this folder (``streamrestore eval``, the training loop's validation
judges, ``python -m streamrestore.data``) takes its paths from here. The module sits at the top
of the package, not in :mod:`streamrestore.eval`, because the data packer needs it too and
``streamrestore.eval`` depends on ``streamrestore.data``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["EvalModelFiles"]


@dataclass(frozen=True)
class EvalModelFiles:
    """The files of an evaluation models folder (see the module docstring for the layout).

    Build it with :meth:`from_dir`; nothing is checked or loaded then (:meth:`missing` says
    what is not on disk), so commands can report every missing file at once.
    """

    #: the folder itself
    root: Path
    #: MobileFaceNet (RGB input), reported next to the judge
    mobilefacenet: Path
    #: the paddle MobileFaceNet (BGR input): the identity judge
    paddle: Path
    #: SCRFD-2.5G: the detector that aligns faces and finds the measured faces of video frames
    detector: Path
    #: SCRFD-500M for the landmark distance
    landmark_detector: Path
    #: the insightface root (optional; the pipeline's face models in video evaluation)
    face_models: Path

    @classmethod
    def from_dir(cls, path: str | Path) -> "EvalModelFiles":
        """The files of the folder ``path``: where each one is expected to be."""
        root = Path(path)
        landmark_detector = root / "insightface/models/mini_sc/det_500m.onnx"
        if not landmark_detector.is_file() and (root / "scrfd/det_500m.onnx").is_file():
            landmark_detector = root / "scrfd/det_500m.onnx"
        return cls(
            root=root,
            mobilefacenet=root / "recog/mobilefacenet_128d.onnx",
            paddle=root / "recog/mobilefacenet_paddle_128d.onnx",
            detector=root / "scrfd/det_2.5g.onnx",
            landmark_detector=landmark_detector,
            face_models=root / "insightface",
        )

    def missing(self, *names: str) -> list[Path]:
        """The files among ``names`` (field names, e.g. ``"paddle"``) that are not on disk."""
        known = {f.name for f in fields(self)} - {"root", "face_models"}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"unknown model files {unknown}; valid ones: {sorted(known)}")
        return [getattr(self, name) for name in names if not getattr(self, name).is_file()]
