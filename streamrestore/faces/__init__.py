"""Faces: detection, alignment, tracking, identity and reference photos.

Per frame the pipeline calls ``detector.detect(rgb)``, ``tracker.push(...)``,
``alignment_matrix(kps, R)`` and ``crop_face(pixels, matrix, R)``; per track
``matcher.observe(...)`` / ``matcher.identity_of(...)``; once per run ``load_reference_sets``.
Heavy dependencies (insightface, dlib, norfair) are imported only when a detector, embedder or
tracker is built.
"""
from streamrestore.faces.align import (
    FFHQ_TEMPLATE_512,
    alignment_matrix,
    crop_face,
    invert_affine,
    similarity_transform,
    template,
    warp_to_template,
)
from streamrestore.faces.detect import (
    Detector,
    DlibDetector,
    ScrfdDetector,
    create_detector,
    detect_padded,
    find_model_pack,
)
from streamrestore.faces.identity import (
    DlibEmbedder,
    FaceEmbedder,
    IdentityMatcher,
    InsightfaceEmbedder,
    ReferenceSet,
    create_embedder,
    default_threshold,
)
from streamrestore.faces.references import load_reference_sets, parse_reference_specs
from streamrestore.faces.track import FaceTracker, OneEuroFilter, TrackerConfig

__all__ = [
    "FFHQ_TEMPLATE_512",
    "template",
    "similarity_transform",
    "alignment_matrix",
    "invert_affine",
    "warp_to_template",
    "crop_face",
    "Detector",
    "ScrfdDetector",
    "DlibDetector",
    "create_detector",
    "detect_padded",
    "find_model_pack",
    "FaceEmbedder",
    "InsightfaceEmbedder",
    "DlibEmbedder",
    "create_embedder",
    "default_threshold",
    "ReferenceSet",
    "IdentityMatcher",
    "parse_reference_specs",
    "load_reference_sets",
    "TrackerConfig",
    "FaceTracker",
    "OneEuroFilter",
]
