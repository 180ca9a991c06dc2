"""constraints.txt against the torch it pins: the README's install command must resolve.

``pip install torch==X -c constraints.txt -e .`` resolves on plain PyPI only if every pin in
constraints.txt satisfies what torch X itself requires. PyPI's torch for Linux is the CUDA
build, which pins triton exactly; a CPU build (PyTorch's CPU index, or this machine's wheel)
requires no triton at all, so the installed torch alone cannot catch a wrong triton pin. Hence
two checks: the installed torch's own ``Requires-Dist`` (whatever build it is), and a table of
the CUDA build's requirements as published on PyPI.
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]

#: ``Requires-Dist`` of torch's Linux x86_64 wheels on PyPI (the CUDA builds), per version, less extras.
#: When torch is upgraded, add its line: e.g. ``pip install --dry-run --isolated --ignore-installed
#: --report r.json torch==X`` and read ``requires_dist`` of torch in r.json (PIP_CONFIG_FILE=/dev/null
#: so that no local CPU wheel is picked). We pin no nvidia-*/cuda-* package; they are listed as published.
TORCH_CUDA_REQUIRES = {
    "2.13.0": [
        "filelock",
        "typing-extensions>=4.10.0",
        "setuptools>=77.0.3",
        "sympy>=1.13.3",
        "networkx>=2.5.1",
        "jinja2",
        "fsspec>=0.8.5",
        'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3; platform_system == "Linux"',
        'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
        'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
        'nvidia-cusparselt-cu13==0.8.1; platform_system == "Linux"',
        'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
        'nvidia-nvshmem-cu13==3.4.5; platform_system == "Linux"',
        'triton==3.7.1; platform_system == "Linux" and python_version < "3.15"',
    ],
}

#: Environments the README command is meant for: a Linux x86_64 machine with each Python we support.
LINUX = [
    {**default_environment(), "platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
     "python_version": v, "python_full_version": f"{v}.0"}
    for v in ("3.10", "3.11", "3.12", "3.13")
]


def read_constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # every line is NAME==VERSION
        assert spec.operator == "==", line
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def conflicts(requirements: list[str], pins: dict[str, Version], environments: list[dict]) -> list[str]:
    """The requirements (applying in any of ``environments``) that a pin does not satisfy."""
    bad = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": ""}) for env in environments):
            continue
        pin = pins.get(canonicalize_name(req.name))
        if pin is not None and not req.specifier.contains(pin, prereleases=True):
            bad.append(f"{text} (constraints.txt pins {req.name}=={pin})")
    return bad


def test_constraints_satisfy_the_cuda_build_of_the_pinned_torch():
    pins = read_constraints()
    torch_pin = str(pins["torch"])
    assert torch_pin in TORCH_CUDA_REQUIRES, (
        f"constraints.txt pins torch=={torch_pin}; add its CUDA build's Requires-Dist to TORCH_CUDA_REQUIRES"
    )
    assert conflicts(TORCH_CUDA_REQUIRES[torch_pin], pins, LINUX) == []


def test_triton_pin_is_the_one_torch_requires():
    """The kernel tests (dev extra) install triton; it must be the version torch's CUDA build pins."""
    pins = read_constraints()
    (triton,) = [Requirement(r) for r in TORCH_CUDA_REQUIRES[str(pins["torch"])] if r.startswith("triton")]
    assert pins["triton"] in triton.specifier


def test_conflicts_catches_a_wrong_triton_pin():
    """What the README command hit on PyPI: triton==3.9.0 against torch 2.13.0's triton==3.7.1."""
    pins = {**read_constraints(), "triton": Version("3.9.0")}
    assert len(conflicts(TORCH_CUDA_REQUIRES["2.13.0"], pins, LINUX)) == 1


def test_constraints_satisfy_the_installed_torch():
    """Whatever build is installed (CPU here, CUDA on a GPU machine), its own requirements hold."""
    pins = read_constraints()
    dist = importlib.metadata.distribution("torch")
    installed = Version(dist.version)
    if installed.public != str(pins["torch"]):
        pytest.skip(f"torch {dist.version} installed, constraints.txt pins {pins['torch']}")
    here = {**default_environment()}
    assert conflicts(dist.requires or [], pins, [here]) == []


def test_constraints_satisfy_our_own_requirements():
    """pyproject's dependencies and extras accept every pinned version."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    assert conflicts(requirements, read_constraints(), LINUX) == []


def test_install_commands_pin_the_same_torch():
    """README and CI install the torch that constraints.txt pins."""
    torch_pin = str(read_constraints()["torch"])
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for text, where in ((readme, "README.md"), (ci, ".ci/run")):
        versions = set(re.findall(r"\btorch==([0-9][0-9.]*[0-9])", text))
        assert versions == {torch_pin}, f"{where} installs torch {versions}, constraints.txt pins {torch_pin}"
    assert "-c constraints.txt" in ci
    assert "download.pytorch.org/whl/cpu" in readme  # how a CPU-only machine gets a CPU torch



def test_gitignore_keeps_a_virtualenv_out():
    """`python -m venv .venv` in the checkout, as the README's install invites, adds no files to git."""
    lines = (REPO / ".gitignore").read_text().splitlines()
    assert ".venv/" in lines


def test_the_source_distribution_holds_what_its_tests_and_readme_use(tmp_path):
    """The sdist had the tests' test_*.py files only: conftest.py, their helpers and fixtures, constraints.txt (the
    README's install command), configs and examples were missing, and no licence text was anywhere."""
    import subprocess
    import sys
    import tarfile

    setuptools = pytest.importorskip("setuptools")
    if Version(setuptools.__version__) < Version("77"):
        pytest.skip(f"setuptools {setuptools.__version__} cannot build this project (77 or later)")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip("not a git checkout")
    source = tmp_path / "source"
    for name in tracked.stdout.splitlines():  # (a clean tree: what a release is built from)
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp_path)!r})"],
                   cwd=source, check=True, capture_output=True)
    (sdist,) = tmp_path.glob("streamrestore-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wanted = {"LICENSE", "constraints.txt", "README.md", "tests/conftest.py", "tests/media_utils.py",
              "tests/synthetic_faces.py", "tests/fixtures/official_parity.npz", "configs/lite.toml",
              "examples/restore_file.py", "streamrestore/weights/lite.safetensors"}
    assert wanted <= names, sorted(wanted - names)
    assert not any(name.startswith(("runs/", ".git/")) or "__pycache__" in name for name in names)


def test_the_model_card_gives_the_shipped_files_sha256():
    """A user's --json records the model file's sha256; the card is what it is compared with (support F6: it was
    published nowhere)."""
    import hashlib
    import re

    weights = Path(__file__).resolve().parents[1] / "streamrestore" / "weights"
    card = (weights / "MODEL_CARD.md").read_text(encoding="utf-8")
    given = re.search(r"`lite\.safetensors`, sha256 `([0-9a-f]{64})`", card)
    assert given is not None
    assert given.group(1) == hashlib.sha256((weights / "lite.safetensors").read_bytes()).hexdigest()
