import math

import cv2
import numpy as np
import pytest

from streamrestore.faces.align import (
    FFHQ_TEMPLATE_512,
    alignment_matrix,
    invert_affine,
    similarity_transform,
    template,
    warp_to_template,
)


def _apply(matrix, points):
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _similarity(angle_deg, scale, tx, ty):
    angle = math.radians(angle_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([scale * rotation, [[tx], [ty]]])


def test_template_scales_with_resolution():
    np.testing.assert_allclose(template(512), FFHQ_TEMPLATE_512)
    np.testing.assert_allclose(template(256), FFHQ_TEMPLATE_512 / 2)
    np.testing.assert_allclose(template(1024)[0], [385.96276, 479.89416], rtol=1e-6)
    with pytest.raises(ValueError, match="resolution"):
        template(0)


def test_template_landmarks_are_ordered_like_scrfd():
    left_eye, right_eye, nose, left_mouth, right_mouth = FFHQ_TEMPLATE_512
    assert left_eye[0] < nose[0] < right_eye[0]
    assert left_mouth[0] < right_mouth[0]
    assert left_eye[1] < nose[1] < left_mouth[1]


def test_alignment_of_template_itself_is_identity():
    matrix = alignment_matrix(template(512), 512)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (17, 0.6, 40, -25), (-120, 2.5, 700, 300)])
def test_alignment_recovers_a_known_similarity(angle, scale, tx, ty):
    crop_to_frame = _similarity(angle, scale, tx, ty)
    kps = _apply(crop_to_frame, template(256))
    matrix = alignment_matrix(kps, 256)
    np.testing.assert_allclose(_apply(matrix, kps), template(256), atol=1e-6)
    np.testing.assert_allclose(invert_affine(matrix), crop_to_frame, atol=1e-6)


def test_alignment_is_least_squares_with_noise():
    rng = np.random.default_rng(0)
    kps = _apply(_similarity(8, 0.4, 100, 50), template(512)) + rng.normal(0, 2.0, (5, 2))
    matrix = alignment_matrix(kps, 512)
    residual = np.sum((_apply(matrix, kps) - template(512)) ** 2)
    # No small change of the matrix (keeping it a similarity) lowers the residual.
    for delta in ([0.001, 0, 0], [0, 0, 0.5]):
        a, b, t = matrix[0, 0], matrix[1, 0], matrix[:, 2]
        for sign in (1, -1):
            a2 = a + sign * delta[0]
            t2 = t + sign * np.array([delta[2], 0])
            other = np.array([[a2, -b, t2[0]], [b, a2, t2[1]]])
            assert np.sum((_apply(other, kps) - template(512)) ** 2) >= residual


def test_alignment_never_reflects():
    mirrored = template(512).copy()
    mirrored[:, 0] = 512 - mirrored[:, 0]  # a mirror image of the face layout
    matrix = alignment_matrix(mirrored, 512)
    assert np.linalg.det(matrix[:, :2]) > 0
    generic = similarity_transform([[0, 0], [1, 0], [0, 1]], [[0, 0], [-1, 0], [0, 1]])
    assert np.linalg.det(generic[:, :2]) > 0


def test_alignment_rejects_bad_landmarks():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        alignment_matrix(np.zeros((4, 2)), 512)
    with pytest.raises(ValueError, match="non-finite"):
        alignment_matrix(np.full((5, 2), np.nan), 512)
    with pytest.raises(ValueError, match="same place"):
        alignment_matrix(np.ones((5, 2)), 512)


def test_invert_affine_composes_to_identity():
    matrix = _similarity(33, 1.7, -12, 40)
    inverse = invert_affine(matrix)
    full = np.vstack([matrix, [0, 0, 1]])
    np.testing.assert_allclose(np.vstack([inverse, [0, 0, 1]]), np.linalg.inv(full), atol=1e-12)
    with pytest.raises(ValueError, match="invertible"):
        invert_affine(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        invert_affine(np.eye(3))


def test_warp_puts_landmarks_on_the_template():
    frame = np.zeros((300, 400, 3), np.uint8)
    crop_to_frame = _similarity(-20, 0.5, 120, 60)
    kps = _apply(crop_to_frame, template(256))
    for x, y in kps:
        cv2.circle(frame, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
    crop = warp_to_template(frame, alignment_matrix(kps, 256), 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    for x, y in template(256):
        assert crop[int(round(y)), int(round(x))].min() > 200


def test_warp_border_is_constant_not_reflected():
    frame = np.full((200, 200, 3), 255, np.uint8)
    # A face whose left half is outside the frame: the crop's left part must be border, not a
    # mirrored copy of the visible half.
    kps = _apply(_similarity(0, 0.4, -100, 20), template(512))
    crop = warp_to_template(frame, alignment_matrix(kps, 512), 512)
    x_edge = int(round(100 / 0.4))  # crop column of frame x = 0
    m = 6  # the cubic kernel reaches 2 frame pixels (5 crop pixels at this 2.5x scale) past an edge
    assert crop[:, : x_edge - m].max() == 0
    y_edge = int(round((200 - 20) / 0.4))  # crop row of frame y = 200
    assert crop[: y_edge - m, x_edge + m :].min() == 255
    assert crop[y_edge + m :].max() == 0
    grey = warp_to_template(frame, alignment_matrix(kps, 512), 512, border_value=128)
    assert grey[10, 10].tolist() == [128, 128, 128]


def test_warp_rejects_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        warp_to_template(np.zeros((10, 10, 3), np.float32), np.eye(2, 3), 64)
    with pytest.raises(ValueError, match="shape"):
        warp_to_template(np.zeros((10, 10, 3), np.uint8), np.eye(3), 64)


def test_ffhq_aligned_photos_align_to_nearly_identity(shared_data, shared_models):
    """gt.png of the InstantRestore set are 512 FFHQ-aligned faces; detecting and aligning them
    again must give almost the identity (FFHQ's own alignment uses 68 landmarks, so not exactly:
    measured with SCRFD-500M, max |linear - I| 0.10 and max shift 36 px, both on 00291)."""
    from streamrestore.faces.detect import create_detector, detect_padded

    detector = create_detector("scrfd", models_dir=shared_models / "insightface")
    files = sorted((shared_data / "instantrestore").glob("*/gt.png"))
    assert len(files) >= 10
    linear, shift = [], []
    for file in files:
        rgb = cv2.imread(str(file))[:, :, ::-1].copy()
        faces = detect_padded(detector, rgb)
        assert faces, file
        matrix = alignment_matrix(faces[0].kps, 512)
        linear.append(np.abs(matrix[:, :2] - np.eye(2)).max())
        shift.append(np.abs(matrix[:, 2]).max())
    assert max(linear) < 0.15 and max(shift) < 0.1 * 512
    assert np.median(linear) < 0.06 and np.median(shift) < 20


def test_arcface_matrix_puts_landmarks_on_the_arcface_template():
    from streamrestore.faces.align import ARCFACE_TEMPLATE_112, arcface_matrix

    # insightface's norm_crop layout (float32 there)
    insightface = pytest.importorskip("insightface.utils.face_align")
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112, insightface.arcface_dst, atol=1e-5)
    # any similarity of the template is undone: a face rotated, scaled and moved maps back exactly
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = ARCFACE_TEMPLATE_112 @ rotation.T + shift
    m = arcface_matrix(kps)
    np.testing.assert_allclose(kps @ m[:, :2].T + m[:, 2], ARCFACE_TEMPLATE_112, atol=1e-9)
    np.testing.assert_allclose(arcface_matrix(ARCFACE_TEMPLATE_112), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_a_face_stored_in_wide_pixels_is_cut_out_as_shown():
    """A 16:9 DVD stores its picture squeezed into 720 x 480 pixels of aspect 32:27: the crop of the
    stored picture, told the pixel aspect, is the crop of the picture as shown (the face unsqueezed)."""
    import synthetic_faces as sf

    par = 32 / 27
    shown, (kps,) = sf.scene(256, 160, [("ann", sf.face_matrix((128, 80), 44, 8))])
    stored = cv2.resize(shown, (round(256 / par), 160), interpolation=cv2.INTER_AREA)
    stored_kps = kps * np.array([stored.shape[1] / 256, 1.0])
    expected = warp_to_template(shown, alignment_matrix(kps, 128), 128).astype(float)
    told = warp_to_template(stored, alignment_matrix(stored_kps, 128, pixel_aspect=256 / stored.shape[1]), 128)
    squeezed = warp_to_template(stored, alignment_matrix(stored_kps, 128), 128)
    assert np.abs(told - expected).mean() < 3 and np.abs(squeezed - expected).mean() > 10
    assert np.allclose(alignment_matrix(kps, 128, pixel_aspect=1.0), alignment_matrix(kps, 128))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="pixel_aspect must be a positive number"):
            alignment_matrix(kps, 128, pixel_aspect=bad)
