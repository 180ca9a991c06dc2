"""``python tests/synthetic_cli.py ARGS``: the streamrestore program as ``python -m
streamrestore.cli ARGS`` runs it (run from the repository root), with the drawn-face detector and
embedder of tests/synthetic_faces.py in place of the model-pack ones: for tests that run the
program in a subprocess without the shared models.

``SYNTHETIC_DETECT_SECONDS``: each detection also waits that long (a run long enough to be
stopped half way, on any machine).
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's package, as -m from the root

import synthetic_faces  # noqa: E402

synthetic_faces.install()
_delay = float(os.environ.get("SYNTHETIC_DETECT_SECONDS", "0"))
if _delay > 0:
    _detect = synthetic_faces.SyntheticFaceDetector.detect

    def _slow_detect(self, image):
        time.sleep(_delay)
        return _detect(self, image)

    synthetic_faces.SyntheticFaceDetector.detect = _slow_detect

from streamrestore.cli.app import entry  # noqa: E402

if __name__ == "__main__":
    entry()
