import math

import numpy as np

from streamrestore.types import Face


def _face(x1, y1, x2, y2) -> Face:
    return Face(box=np.array([x1, y1, x2, y2], np.float32), kps=np.zeros((5, 2), np.float32), score=0.9)


def test_face_size_is_one_number_for_any_aspect():
    assert math.isclose(_face(10, 20, 40, 60).size, math.sqrt(30 * 40), rel_tol=1e-6)
    assert _face(0, 0, 16, 16).size == 16.0
    # the same area gives the same size whatever the aspect, and the largest face has the largest size
    assert math.isclose(_face(0, 0, 8, 32).size, 16.0)
    assert max([_face(0, 0, 10, 10), _face(0, 0, 30, 4), _face(0, 0, 12, 12)], key=lambda f: f.size).box[2] == 12
    assert _face(5, 5, 5, 9).size == 0.0 and _face(5, 5, 3, 9).size == 0.0  # empty or inverted box
