"""One default for torch's CPU threads in the CLI, `live`, `bench` and the library:
half the cores; the library sets it only around its own work and gives the caller's back."""
import numpy as np
import pytest
import torch
from media_utils import make_clip

import streamrestore.threads as threads
from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.quality import QualityGateConfig
from streamrestore.types import Face


class FixedFaceDetector:
    """One face at the same place in every frame (no models needed)."""

    name = "fixed"

    def detect(self, image):
        h, w = image.shape[:2]
        s = min(h, w) / 128
        kps = np.float32([[48, 56], [80, 56], [64, 72], [52, 88], [76, 88]]) * s
        return [Face(box=np.float32([32, 32, 96, 108]) * s, kps=kps, score=0.99)]


class ThreadRecorder(IdentityRestorer):
    """The identity restorer, noting torch's thread count whenever it works."""

    def __init__(self):
        super().__init__(64)
        self.seen = []

    def encode_references(self, faces):
        self.seen.append(("encode", torch.get_num_threads()))
        return super().encode_references(faces)

    def restore(self, faces, caches, noise_seeds=None):
        self.seen.append(("restore", torch.get_num_threads()))
        return super().restore(faces, caches)


@pytest.fixture
def caller_threads():
    """The test plays a caller who chose 3 threads; restored afterwards for the other tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def _cgroups(root, own: dict[str, str], files: dict[str, str]):
    """A /proc/self/cgroup of ``own`` (controllers -> group) and cgroup files under ``root``/sys/fs/cgroup."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "cgroup").write_text("".join(f"{i}:{c}:{g}\n" for i, (c, g) in enumerate(own.items())))
    for path, text in files.items():
        (root / "sys" / "fs" / "cgroup" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys" / "fs" / "cgroup" / path).write_text(text)
    return str(root)


def test_a_cpu_quota_limits_the_cores_counted(tmp_path, monkeypatch):
    """``docker --cpus 1`` or a Kubernetes CPU limit leaves every core of the host visible: half of a 32-core
    host's cores were 16 torch threads on one core's worth of time, contending (the module's docstring)."""
    v2 = _cgroups(tmp_path / "v2", {"": "/"}, {"cpu.max": "150000 100000\n"})
    assert threads.cpu_quota_cores(v2) == 2
    own = _cgroups(tmp_path / "own", {"": "/kubepods/pod1"}, {"kubepods/pod1/cpu.max": "100000 100000\n",
                                                                "cpu.max": "max 100000\n"})
    assert threads.cpu_quota_cores(own) == 1
    v1 = _cgroups(tmp_path / "v1", {"cpu,cpuacct": "/docker/abc", "memory": "/docker/abc"},
                  {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us":
                   "100000\n"})
    assert threads.cpu_quota_cores(v1) == 1
    unlimited = _cgroups(tmp_path / "none", {"cpu": "/", "": "/"}, {"cpu.max": "max 100000\n",
                                                                     "cpu/cpu.cfs_quota_us": "-1\n",
                                                                     "cpu/cpu.cfs_period_us": "100000\n"})
    assert threads.cpu_quota_cores(unlimited) is None and threads.cpu_quota_cores(str(tmp_path / "nothing")) is None
    monkeypatch.setattr(threads, "cpu_quota_cores", lambda: 1)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(32)))
    assert threads.usable_cores() == 1 and threads.default_torch_threads() == 1
    monkeypatch.setattr(threads, "cpu_quota_cores", lambda: None)
    assert threads.usable_cores() == 32


@pytest.mark.parametrize("cores,expected", [(1, 1), (2, 1), (3, 1), (8, 4), (16, 8)])
def test_default_is_half_the_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    assert threads.default_torch_threads() == expected
    assert threads.resolve_torch_threads(None) == expected
    assert threads.resolve_torch_threads(5) == 5
    with pytest.raises(ValueError):
        threads.resolve_torch_threads(0)


def test_context_gives_the_callers_setting_back(caller_threads):
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == caller_threads
    with pytest.raises(RuntimeError):
        with threads.torch_threads(2):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == caller_threads


def _one_ref_set():
    from streamrestore.faces.identity import ReferenceSet

    return ReferenceSet(name="anna", crops=np.full((1, 64, 64, 3), 128, np.uint8),
                        embeddings=np.ones((1, 4), np.float32) / 2, files=["anna.png"])


@pytest.mark.parametrize("requested", [None, 2])
def test_face_restorer_works_on_its_threads_and_restores_the_callers(monkeypatch, caller_threads, requested):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)  # default: 1 thread
    recorder = ThreadRecorder()
    # (the gate off: a flat grey face has nothing to restore, and is not given to the restorer)
    fr = FaceRestorer(recorder, FixedFaceDetector(), [_one_ref_set()], torch_threads=requested,
                      config=PipelineConfig(lookahead=0, gate=QualityGateConfig(enabled=False)))
    assert torch.get_num_threads() == caller_threads
    frame = np.full((128, 128, 3), 100, np.uint8)
    for _ in range(3):
        fr.process(frame)
        assert torch.get_num_threads() == caller_threads
    expected = requested or 1
    assert [kind for kind, _ in recorder.seen] == ["encode", "restore", "restore", "restore"]
    assert {n for _, n in recorder.seen} == {expected}


def test_restore_video_uses_the_cli_default(monkeypatch, caller_threads, tmp_path):
    """The library's default is the CLI's (half the cores), not torch's one-per-core."""
    import streamrestore.faces.detect as detect
    from streamrestore.api import restore_video
    from streamrestore.cli.options import set_torch_threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 4)  # default: 2 threads
    monkeypatch.setattr(detect, "create_detector", lambda *a, **k: FixedFaceDetector())
    src = tmp_path / "in.mp4"
    make_clip(src, width=128, height=128, frames=4)
    recorder = ThreadRecorder()
    gate_off = PipelineConfig(gate=QualityGateConfig(enabled=False))  # (a flat face is not given to the restorer)
    stats = restore_video(src, tmp_path / "out.mp4", FaceRestorer.from_options(model=recorder, config=gate_off))
    assert stats.faces_restored == 4
    assert {n for _, n in recorder.seen} == {2}
    assert torch.get_num_threads() == caller_threads
    set_torch_threads(None)  # what the CLI sets for its process
    assert torch.get_num_threads() == 2


def test_every_command_documents_the_same_default():
    from streamrestore.cli import bench, build_parser, live

    def option(parser):
        (action,) = [a for a in parser._actions if "--torch-threads" in a.option_strings]
        return action.default, action.help

    main_option = option(build_parser())
    assert main_option == (None, threads.TORCH_THREADS_HELP)
    assert option(live.build_parser()) == main_option
    assert option(bench.build_parser()) == main_option
    assert "half the cores" in threads.TORCH_THREADS_HELP
