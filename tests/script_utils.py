"""Loading the repository's scripts (benchmarks/, tools/) as modules, for their tests."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """The script at ``relative`` (to the repository root, e.g. ``benchmarks/compare_models.py``),
    imported as a module under its file name."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
