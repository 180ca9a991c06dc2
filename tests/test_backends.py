"""Backend selection and fallback, bucket/reference padding, LoRA merge, torch.export of the core."""
import logging
import os
from pathlib import Path

import pytest
import torch

from streamrestore import backends
from streamrestore.backends import (
    BackendConfig,
    BackendRestorer,
    FrameCore,
    bucket_for,
    build_backend,
    merge_lora,
    select_backend,
    selection,
)
from streamrestore.errors import ModelError
from streamrestore.model import InstantRestoreNet, InstantRestorer, tiny_config
from streamrestore.model.identity import IdentityRestorer

R = 32


@pytest.fixture(scope="module")
def restorer():
    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config())
    with torch.no_grad():  # non-zero LoRA so merging matters
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return InstantRestorer(net, device="cpu", dtype=torch.float32, name="tiny")


@pytest.fixture(scope="module")
def caches(restorer):
    g = torch.Generator().manual_seed(1)
    return {n: restorer.encode_references(torch.rand(n, 3, R, R, generator=g)) for n in (1, 2, 4)}


def _faces(b, seed=2):
    return torch.rand(b, 3, R, R, generator=torch.Generator().manual_seed(seed))


# -- selection ----------------------------------------------------------------------------------

def test_auto_on_cpu_is_onnxruntime_else_eager_with_one_log_line(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="streamrestore"):
        assert select_backend("auto", "cpu") == "onnxruntime"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streamrestore")]
    assert lines == ["backend: onnxruntime on cpu"]
    caplog.clear()
    missing = {"eager": None, "onnxruntime": "onnxruntime is not installed", "compile": None}
    monkeypatch.setattr(selection, "backend_availability", lambda device: dict(missing))
    with caplog.at_level(logging.INFO, logger="streamrestore"):
        assert select_backend("auto", "cpu") == "eager"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streamrestore")]
    assert lines == ["backend: eager on cpu (onnxruntime: onnxruntime is not installed)"]


def test_an_onnxruntime_installed_but_not_importable_is_not_chosen(monkeypatch, caplog):
    """A wheel built for another CPU or C library (found, but its import fails) was chosen by auto, and the run
    ended in a traceback from its import; auto runs eagerly, saying why, and asked for it is refused in a line."""
    from streamrestore.errors import ModelError
    from streamrestore.faces import detect

    def broken():
        raise ImportError("libstdc++.so.6: version `GLIBCXX_3.4.32' not found")

    monkeypatch.setattr(detect, "onnxruntime_module", broken)  # (find_spec finds it: it is installed)
    with caplog.at_level(logging.INFO, logger="streamrestore"):
        assert select_backend("auto", "cpu") == "eager"
    (line,) = [r.getMessage() for r in caplog.records if r.name.startswith("streamrestore")]
    assert line.startswith("backend: eager on cpu (onnxruntime: onnxruntime cannot be imported (") and \
        "pip install --force-reinstall onnxruntime" in line
    with pytest.raises(ModelError, match="backend 'onnxruntime' cannot run on cpu: onnxruntime cannot be imported"):
        select_backend("onnxruntime", "cpu")


def test_auto_on_cpu_runs_a_model_too_large_for_one_onnx_file_eagerly(caplog):
    with caplog.at_level(logging.INFO, logger="streamrestore"):
        assert select_backend("auto", "cpu", model_bytes=3 << 30) == "eager"
        assert select_backend("auto", "cpu", model_bytes=30 << 20) == "onnxruntime"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streamrestore")]
    assert lines[0] == "backend: eager on cpu (onnxruntime: a 3.0 GiB model is too large to export)"


def test_auto_falls_back_to_eager_when_the_export_fails(restorer, caches, monkeypatch, caplog, tmp_path):
    """A model the exporter cannot take still restores under ``auto``: eagerly, said once; asked
    for by name, the backend's error reaches the caller."""
    from streamrestore.backends import core

    def cannot_export(*args, **kwargs):
        raise ModelError("cannot export the restorer to ONNX (test)")

    monkeypatch.setattr(core, "onnxruntime_engine", cannot_export)
    faces = _faces(2)
    cs = [caches[2], caches[1]]
    auto = build_backend(restorer, "auto", BackendConfig(engine_dir=tmp_path))
    assert auto.backend == "onnxruntime"
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        got = auto.restore(faces, cs, [1, 2])
        again = auto.restore(faces, cs, [1, 2])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running eager from now on" in warnings[0]
    assert auto.backend == "eager" and auto.name.endswith("[eager]")
    expected = restorer.restore(faces, cs, [1, 2])
    assert torch.equal(got, expected) and torch.equal(again, expected)
    named = build_backend(restorer, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path))
    with pytest.raises(ModelError, match="cannot export"):
        named.restore(faces, cs, [1, 2])


def test_auto_on_cuda_falls_back_in_order(monkeypatch, caplog):
    avail = {"eager": None, "compile": None, "tensorrt": "torch_tensorrt is not installed"}
    monkeypatch.setattr(selection, "backend_availability", lambda device: dict(avail))
    with caplog.at_level(logging.INFO, logger="streamrestore"):
        assert select_backend("auto", "cuda") == "compile"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streamrestore")]
    assert len(lines) == 1 and "compile" in lines[0] and "torch_tensorrt is not installed" in lines[0]

    avail["compile"] = "no triton"
    assert select_backend("auto", "cuda") == "eager"
    avail["tensorrt"] = None
    assert select_backend("auto", "cuda") == "tensorrt"


def test_unavailable_explicit_backend_is_a_user_error():
    with pytest.raises(ModelError, match="tensorrt.*CUDA"):
        select_backend("tensorrt", "cpu")
    with pytest.raises(ValueError, match="backend"):
        select_backend("onnx", "cpu")
    with pytest.raises(ModelError, match="onnxruntime.*CPU only"):
        select_backend("onnxruntime", "cuda")


def test_availability_on_cpu():
    avail = backends.backend_availability("cpu")
    assert avail["eager"] is None
    assert avail["tensorrt"] is not None
    assert avail["onnxruntime"] is None
    assert backends.available_backends("cpu")[:2] == ["eager", "onnxruntime"]


def test_config_validation():
    with pytest.raises(ValueError, match="backend"):
        BackendConfig(backend="fast")
    with pytest.raises(ValueError, match="buckets"):
        BackendConfig(buckets=(4, 2))
    with pytest.raises(ValueError, match="buckets"):
        BackendConfig(buckets=())
    with pytest.raises(ValueError, match="reference_slots"):
        BackendConfig(reference_slots=0)


def test_bucket_for():
    assert [bucket_for(b, (1, 2, 4, 8)) for b in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 8]
    with pytest.raises(ValueError):
        bucket_for(0, (1, 2))


def test_restorers_without_a_network_pass_through():
    ident = IdentityRestorer(64)
    assert build_backend(ident, "auto") is ident


# -- padding --------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts", [(2, 1, 0), (4, 2), (0, 0)])
def test_padded_core_equals_unpadded_restore(restorer, caches, counts):
    """Bucket + reference-slot padding (and the merged-LoRA copy) give the restorer's own output."""
    b = len(counts)
    faces = _faces(b)
    cs = [caches[n] if n else None for n in counts]
    seeds = list(range(10, 10 + b))
    want = restorer.restore(faces, cs, seeds)
    backend = BackendRestorer(restorer, "compile")  # nothing compiles: the core runs eagerly here
    key, args = backend.padded_inputs(faces, cs, seeds)
    bucket, slots, with_refs, with_input = key
    assert bucket == bucket_for(b, (1, 2, 4, 8)) and slots == 4
    assert with_refs == any(counts) and with_input == (any(counts) and not all(counts))
    assert args[0].shape[0] == bucket
    if with_refs:
        assert args[2][0].shape[:2] == (bucket, 4)
    with torch.inference_mode():
        got = FrameCore(backend.net, with_refs, with_input)(*args)[:b]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


def test_merge_lora_leaves_the_reference_network_alone(restorer, caches):
    before = restorer.encode_references(_faces(2, seed=5))
    merged = merge_lora(restorer.net)
    after = restorer.encode_references(_faces(2, seed=5))
    for a, b in zip(before.keys, after.keys):
        assert torch.equal(a, b)
    from peft.tuners.lora import LoraLayer

    layers = [m for m in merged.unet.modules() if isinstance(m, LoraLayer)]
    assert layers and all(m.merged for m in layers)
    assert not any(m.merged for m in restorer.net.unet.modules() if isinstance(m, LoraLayer))
    assert merged.ref_unet is None


def test_compiled_backend_static_shapes_do_not_recompile(restorer, caches):
    """torch.compile with dynamo only (no code generation, seconds): one graph per bucket and
    structure, built by warmup; later frames with other reference counts reuse it, and more
    faces than the largest bucket run in chunks of it."""
    from torch._dynamo.utils import counters

    backend = BackendRestorer(restorer, "compile", BackendConfig(buckets=(1,), compiler="eager"))
    backend.warmup(with_references=True)
    graphs = counters["stats"]["unique_graphs"]
    for counts in [(4,), (1, 2)]:
        cs = [caches[n] for n in counts]
        got = backend.restore(_faces(len(counts), seed=7), cs, [3] * len(counts))
        want = restorer.restore(_faces(len(counts), seed=7), cs, [3] * len(counts))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)
    assert counters["stats"]["unique_graphs"] == graphs, "a shape seen after warm-up recompiled"


def test_more_references_than_slots_grow_the_slots_at_encode_time(restorer):
    backend = BackendRestorer(restorer, "compile", BackendConfig(reference_slots=2))
    cache = backend.encode_references(_faces(3, seed=9))
    assert backend.reference_slots == 3
    key, _ = backend.padded_inputs(_faces(1), [cache], [0])
    assert key[1] == 3
    with pytest.raises(ValueError, match="slots"):
        BackendRestorer(restorer, "compile", BackendConfig(reference_slots=2)).padded_inputs(_faces(1), [cache], [0])


def test_eager_backend_is_the_restorer(restorer, caches):
    backend = build_backend(restorer, "eager")
    assert isinstance(backend, BackendRestorer) and backend.backend == "eager"
    cs = [caches[2], None]
    assert torch.equal(backend.restore(_faces(2), cs), restorer.restore(_faces(2), cs))


# -- export ---------------------------------------------------------------------------------------

def test_torch_export_of_the_padded_core(restorer, caches):
    """What the TensorRT path exports: the merged core at bucket/slot shapes, masks as inputs."""
    cs = [caches[2], None]  # the richest structure: reference slots, masks and own tokens
    backend = BackendRestorer(restorer, "compile")
    key, args = backend.padded_inputs(_faces(2), cs, [0, 1])
    _, _, with_refs, with_input = key
    core = FrameCore(backend.net, with_refs, with_input).eval()
    x, noise, keys, values, means, stds, ref_mask, input_mask, reference_faces = args
    assert reference_faces is None  # this model's head (none) takes no references
    kwargs = {"input_mask": input_mask} if input_mask is not None else {}
    with torch.no_grad():
        exported = torch.export.export(core, (x, noise, keys, values, means, stds, ref_mask), kwargs=kwargs)
        got = exported.module()(x, noise, keys, values, means, stds, ref_mask, **kwargs)
    torch.testing.assert_close(got[:2], restorer.restore(_faces(2), cs, [0, 1]), rtol=1e-5, atol=2e-6)


def test_engine_path_is_keyed_by_model_shapes_and_dtype(restorer, tmp_path, monkeypatch):
    backend = BackendRestorer(restorer, "eager", BackendConfig(engine_dir=tmp_path))
    a = backend.engine_path((1, 4, True, False))
    assert a.parent == tmp_path and a == backend.engine_path((1, 4, True, False))
    assert len({a, backend.engine_path((2, 4, True, False)), backend.engine_path((1, 4, True, True)),
                backend.engine_path((1, 3, True, False))}) == 4
    monkeypatch.setattr(restorer, "_fingerprint", "another model")
    assert backend.engine_path((1, 4, True, False)) != a


def test_another_checkpoint_of_one_base_model_gets_its_own_engine(restorer, tmp_path):
    """A LoRA checkpoint's reference network is its base model's: checkpoints that differ only in their
    LoRA and conv_in (another official variant, a user's retrained one) had the same engine key, and
    the second ran the first one's cached program. The restoring weights are in the key now."""
    from streamrestore.backends.engine_files import engine_path

    key = (1, 4, True, False)
    same = InstantRestoreNet(tiny_config())
    same.load_state_dict(restorer.net.state_dict())
    twin = InstantRestorer(same, device="cpu", dtype=torch.float32, name="tiny")
    assert engine_path(twin, key, tmp_path, "onnxruntime") == engine_path(restorer, key, tmp_path, "onnxruntime")
    other = InstantRestoreNet(tiny_config())
    other.load_state_dict(restorer.net.state_dict())
    with torch.no_grad():
        changed = 0
        for name, p in other.named_parameters():
            if "lora_" in name or name.startswith("unet.conv_in."):
                p.add_(0.01)
                changed += 1
    assert changed
    retrained = InstantRestorer(other, device="cpu", dtype=torch.float32, name="tiny")
    assert retrained.fingerprint == restorer.fingerprint  # (its reference network: the same base)
    assert engine_path(retrained, key, tmp_path, "onnxruntime") != engine_path(restorer, key, tmp_path, "onnxruntime")


def test_engine_paths_of_onnxruntime_and_tensorrt_differ(restorer, tmp_path):
    from streamrestore.backends.engine_files import engine_path

    key = (1, 4, True, False)
    ort = BackendRestorer(restorer, "onnxruntime", BackendConfig(engine_dir=tmp_path)).engine_path(key)
    trt = engine_path(restorer, key, tmp_path, "tensorrt")
    assert (ort.suffix, trt.suffix) == (".onnx", ".ep")
    assert ort.with_suffix("") != trt.with_suffix("")  # keyed by the runtime's version too


@pytest.mark.parametrize("counts", [(2, 1, 0), (4, 2), (0, 0), (1,)])
def test_onnxruntime_backend_matches_the_restorer(restorer, caches, counts, tmp_path):
    """Every engine structure (references or not, own tokens for faces without) and bucket padding."""
    cs = [caches[n] if n else None for n in counts]
    seeds = list(range(3, 3 + len(counts)))
    faces = _faces(len(counts), seed=7)
    backend = build_backend(restorer, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path))
    got = backend.restore(faces, cs, seeds)
    torch.testing.assert_close(got, restorer.restore(faces, cs, seeds), rtol=1e-4, atol=2e-5)
    assert [p.suffix for p in tmp_path.iterdir()] == [".onnx"]  # one exported program, cached
    # exactly the faces there are: three faces are not padded to a bucket of four
    (bucket, *_), args = backend.padded_inputs(faces, cs, seeds)
    assert bucket == len(counts) and args[0].shape[0] == len(counts)


def test_a_cache_folder_that_cannot_be_written_costs_the_cache_not_the_run(restorer, caches, tmp_path, caplog):
    """A read-only or full cache folder (a sandboxed HOME) ended the run with a traceback once the models
    had loaded. The program is exported into a temporary folder instead, used, removed, and the run is
    told why it will be exported again next time."""
    import tempfile

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go (as a read-only disk refuses it)")
    before = set(Path(tempfile.gettempdir()).glob("streamrestore-onnx-*"))
    backend = build_backend(restorer, "onnxruntime", BackendConfig(backend="onnxruntime",
                                                                   engine_dir=blocker / "engines"))
    faces, cs = _faces(2, seed=3), [caches[2], None]
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        got = backend.restore(faces, cs, [1, 2])
    torch.testing.assert_close(got, restorer.restore(faces, cs, [1, 2]), rtol=1e-4, atol=2e-5)
    assert backend.backend == "onnxruntime"  # not the eager fallback
    assert f"cannot keep the exported restorer in {blocker / 'engines'}" in caplog.text
    assert set(Path(tempfile.gettempdir()).glob("streamrestore-onnx-*")) == before


def test_a_program_is_not_kept_on_a_nearly_full_disk(restorer, caches, tmp_path, caplog, monkeypatch):
    """On a small disk (a VM's, an SD card's) the program the run kept in the cache took the room the output then
    needed, and every rerun failed the same way: where its disk would keep less than
    KEEP_PROGRAMS_FREE_BYTES free, the program serves the run from a temporary folder and is not kept, said."""
    import tempfile

    from streamrestore.backends import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "_free_bytes", lambda folder: 100 << 20)  # (a disk with 100 MB free)
    before = set(Path(tempfile.gettempdir()).glob("streamrestore-onnx-*"))
    backend = build_backend(restorer, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path / "e"))
    faces, cs = _faces(1, seed=4), [caches[1]]
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        got = backend.restore(faces, cs, [1])
    torch.testing.assert_close(got, restorer.restore(faces, cs, [1]), rtol=1e-4, atol=2e-5)
    assert backend.backend == "onnxruntime" and "has 105 MB free: the exported restorer is not kept in" in caplog.text
    assert not list(tmp_path.rglob("*.onnx")) and set(Path(tempfile.gettempdir()).glob("streamrestore-onnx-*")) == before
    monkeypatch.setattr(onnx_runtime, "_free_bytes", lambda folder: 600 << 20)  # room enough: kept
    build_backend(restorer, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path / "e")).restore(
        faces, cs, [1])
    assert len(list((tmp_path / "e").rglob("*.onnx"))) == 1


def test_exporting_a_program_again_removes_what_a_killed_export_of_it_left(restorer, caches, tmp_path):
    """A run killed mid-export left its temporary file; the next export of the same program left it beside its
    own, for an hour."""
    import os
    import subprocess
    import sys
    import time

    from streamrestore.cache_dir import WRITER_GONE_AGE_S

    config = BackendConfig(backend="onnxruntime", engine_dir=tmp_path)
    faces, cs = _faces(1, seed=5), [caches[1]]
    BackendRestorer(restorer, "onnxruntime", config).restore(faces, cs, [1])
    (program,) = tmp_path.rglob("*.onnx")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    left, young = program.with_name(f"{program.name}.{gone}.a1b2c3.tmp"), program.with_name(f"{program.name}.{gone}.d4.tmp")
    for path, age in ((left, WRITER_GONE_AGE_S + 10), (young, 5)):
        path.write_bytes(b"x" * 100)
        os.utime(path, (time.time() - age,) * 2)
    program.unlink()
    BackendRestorer(restorer, "onnxruntime", config).restore(faces, cs, [1])
    assert program.is_file() and not left.exists() and young.exists()


def test_a_long_lived_backend_keeps_a_few_onnx_sessions_open_not_one_per_face_count(restorer, caches, tmp_path,
                                                                                     monkeypatch):
    """A session per face count met (55-250 MB each with lite): a notebook restoring group photos of 1 to
    29 faces grew to 2.5 GB. Beyond a few, sessions unused for a while are closed; one closed is reopened
    from its cached file, not exported again. Sessions in use (a video whose restored face count changes
    every few frames) are all kept: closing them would reopen one nearly every frame."""
    import streamrestore.backends.core as core

    backend = build_backend(restorer, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path))
    counts = range(1, core.ONNX_SESSIONS_KEPT + 3)

    def restore(n):
        return backend.restore(_faces(n, seed=n), [caches[2]] * n, list(range(n)))

    first = [restore(n) for n in counts][0]
    assert len(backend._engines) == len(counts)  # all used just now: kept
    programs = sorted(tmp_path.glob("*.onnx"))
    assert len(programs) == len(counts)  # each exported once
    monkeypatch.setattr(core, "ONNX_SESSION_IDLE_SECONDS", 0.0)  # (as if a minute had passed)
    restore(2)
    assert len(backend._engines) == core.ONNX_SESSIONS_KEPT
    assert (1, 2, True, False) not in backend._engines  # the least recently used went first
    torch.testing.assert_close(restore(1), first)  # reopened from its file
    assert sorted(tmp_path.glob("*.onnx")) == programs


def test_memory_running_out_in_onnxruntime_is_said_as_memory(restorer, caches, tmp_path, monkeypatch, caplog):
    """Under a memory limit onnxruntime's std::bad_alloc read as a damaged program ("exporting it again"), and the
    export's MemoryError as the backend being unavailable: memory is raised as memory (the command says it)."""
    import onnxruntime

    config = BackendConfig(backend="onnxruntime", engine_dir=tmp_path)
    faces, cs = _faces(1, seed=8), [caches[2]]
    BackendRestorer(restorer, "onnxruntime", config).restore(faces, cs, [1])  # (the program exported and kept)

    def no_memory(*args, **kwargs):
        raise RuntimeError("std::bad_alloc")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_memory)
    with pytest.raises(MemoryError, match="bad_alloc"):
        BackendRestorer(restorer, "onnxruntime", config).restore(faces, cs, [1])
    # chosen by auto (not asked for), it runs eagerly from then on, which needs less memory (a 1-2 GB machine:
    # the session failed where eager ran), and says so
    chosen = BackendRestorer(restorer, "onnxruntime", config, fallback="eager")
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        out = chosen.restore(faces, cs, [1])
    torch.testing.assert_close(out, restorer.restore(faces, cs, [1]), rtol=1e-4, atol=2e-5)
    assert chosen.backend == "eager" and chosen.net is restorer.net
    assert any("onnxruntime ran out of memory" in r.getMessage() for r in caplog.records)

    # running out in a run (a frame of more faces), not in the opening: its arena's error is its own Fail, not a
    # MemoryError, and it ended the run; two threads of a service running out together both go on eagerly
    import threading

    real = onnxruntime.InferenceSession
    both = threading.Barrier(2, timeout=60)

    class RunsOut:
        def __init__(self, *args, **kwargs):
            self._session = real(*args, **kwargs)

        def get_inputs(self):
            return self._session.get_inputs()

        def run(self, *args, **kwargs):
            both.wait()
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : BFCArena::AllocateRawInternal Failed to allocate "
                               "memory for requested buffer of size 2097152")

    monkeypatch.setattr(onnxruntime, "InferenceSession", RunsOut)
    shared = BackendRestorer(restorer, "onnxruntime", config, fallback="eager")
    results: dict = {}

    def restore(name):
        try:
            results[name] = shared.restore(faces, cs, [1])
        except Exception as exc:  # noqa: BLE001  (the test reports it)
            results[name] = exc

    threads = [threading.Thread(target=restore, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    want = restorer.restore(faces, cs, [1])
    for name in "ab":
        assert isinstance(results[name], torch.Tensor), results[name]
        torch.testing.assert_close(results[name], want, rtol=1e-4, atol=2e-5)
    assert shared.backend == "eager"


def test_onnxruntime_programs_are_cached_and_a_damaged_one_is_exported_again(restorer, caches, tmp_path):
    config = BackendConfig(backend="onnxruntime", engine_dir=tmp_path)
    faces, cs = _faces(1, seed=8), [caches[2]]
    first = BackendRestorer(restorer, "onnxruntime", config)
    want = first.restore(faces, cs, [1])
    (path,) = tmp_path.iterdir()
    inode = path.stat().st_ino  # an export writes a new file and renames it over the old one
    again = BackendRestorer(restorer, "onnxruntime", config).restore(faces, cs, [1])
    assert torch.equal(again, want) and path.stat().st_ino == inode  # loaded, not exported
    path.write_bytes(b"not an onnx file")
    repaired = BackendRestorer(restorer, "onnxruntime", config).restore(faces, cs, [1])
    assert torch.equal(repaired, want) and path.stat().st_size > 1000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensorrt_backend_matches_eager_on_gpu(tmp_path):
    pytest.importorskip("torch_tensorrt")
    torch.manual_seed(0)
    net = InstantRestoreNet(tiny_config())
    r = InstantRestorer(net, device="cuda", dtype=torch.float16, name="tiny")
    g = torch.Generator().manual_seed(1)
    cache = r.encode_references(torch.rand(2, 3, R, R, generator=g))
    faces = torch.rand(1, 3, R, R, generator=g)
    backend = BackendRestorer(r, "tensorrt", BackendConfig(engine_dir=tmp_path))
    got = backend.restore(faces, [cache])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, r.restore(faces, [cache]), rtol=0, atol=2e-2)
    assert any(tmp_path.iterdir()), "the engine was not cached"


def test_a_tensorrt_engine_that_cannot_be_saved_leaves_no_half_file(tmp_path, monkeypatch, caplog):
    """The engine is saved under a name of this process's own (two processes building one engine wrote
    one ``.ep.tmp`` together) and a save that fails midway leaves nothing behind (it had left its half
    file). Torch-TensorRT itself is not installed here: a stand-in saves half a file and fails."""
    import sys
    import types

    from streamrestore.backends.tensorrt import tensorrt_engine

    written = []

    def save(program, name, inputs):
        written.append(Path(name))
        Path(name).write_bytes(b"half an engine")
        raise OSError(28, "No space left on device")

    stand_in = types.ModuleType("torch_tensorrt")
    stand_in.save = save  # type: ignore[attr-defined]
    stand_in.dynamo = types.SimpleNamespace(compile=lambda exported, inputs, **options: "program")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_tensorrt", stand_in)
    monkeypatch.setattr(torch.export, "export", lambda core, args, kwargs: "exported")
    path = tmp_path / "unet.ep"
    t = torch.zeros(1)
    with caplog.at_level(logging.WARNING):
        assert tensorrt_engine(None, (t, t, [t], [t], [t], [t], t, None, None), torch.float16, path) == "program"
    (tmp,) = written
    assert tmp.parent == tmp_path and tmp.name.startswith(f"unet.ep.{os.getpid()}.") and tmp.suffix == ".tmp"
    assert list(tmp_path.iterdir()) == []
    assert "could not cache the TensorRT engine" in caplog.text


@pytest.mark.parametrize("second", ["none", "two"])
def test_onnxruntime_runs_the_shipped_model_as_eager_does(tmp_path, second):
    """lite itself (position prior on reference keys, 128 px, 4 references) through the ONNX export:
    a face without references beside one with (full attention), and faces with 4 and 2 references
    (the windowed reference attention, a padded slot masked)."""
    from streamrestore.pipeline import load_restorer

    lite = load_restorer("lite", device="cpu", backend=None)
    g = torch.Generator().manual_seed(3)
    photos = torch.rand(4, 3, 128, 128, generator=g)
    cache = lite.encode_references(photos)
    other = lite.encode_references(photos[:2]) if second == "two" else None
    faces = torch.rand(2, 3, 128, 128, generator=g)
    backend = build_backend(lite, "onnxruntime", BackendConfig(backend="onnxruntime", engine_dir=tmp_path))
    got = backend.restore(faces, [cache, other], [5, 6])
    torch.testing.assert_close(got, lite.restore(faces, [cache, other], [5, 6]), rtol=1e-4, atol=2e-5)


def test_onnxruntime_takes_exactly_the_references_there_are(restorer, caches, tmp_path):
    """No padded slots (they cost attention time): sized by the identities encoded through it, and
    grown for references encoded elsewhere (a cache read from disk) instead of refusing them."""
    config = BackendConfig(backend="onnxruntime", engine_dir=tmp_path)
    backend = BackendRestorer(restorer, "onnxruntime", config)
    assert backend.reference_slots == 1
    cache = backend.encode_references(_faces(2, seed=9))
    key, _ = backend.padded_inputs(_faces(1), [cache], [0])
    assert key[1] == 2
    key, _ = backend.padded_inputs(_faces(2), [caches[4], cache], [0, 1])  # encoded by the restorer itself
    assert key[1] == 4 and backend.reference_slots == 4
    torch.testing.assert_close(backend.restore(_faces(1), [caches[4]], [2]),
                               restorer.restore(_faces(1), [caches[4]], [2]), rtol=1e-4, atol=2e-5)


def test_onnxruntime_export_failure_is_a_model_error_naming_the_way_out(restorer, caches, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter gone")

    monkeypatch.setattr(torch.onnx, "export", broken)
    backend = BackendRestorer(restorer, "onnxruntime", BackendConfig(engine_dir=tmp_path))
    with pytest.raises(ModelError, match="exporter gone.*--backend eager"):
        backend.restore(_faces(1), [caches[1]], [0])
    assert not list(tmp_path.iterdir())  # no half-written program left to load next time


@pytest.mark.parametrize("command", ["restore", "live", "eval", "bench"])
def test_every_command_offers_every_backend(command):
    """The commands list the backends literally (their parsers must not import torch); they stay
    in step with BACKENDS."""
    import importlib

    parser = importlib.import_module(f"streamrestore.cli.{command}").build_parser()
    (action,) = [a for a in parser._actions if a.dest == "backend"]
    assert tuple(action.choices) == backends.BACKENDS


def test_prune_engines_deletes_the_least_recently_used_programs_only(tmp_path):
    from streamrestore.backends.engine_files import mark_used, prune_engines

    files = {}
    for age, name in enumerate(["new.onnx", "mid.ep", "old.onnx", "oldest.onnx"]):
        files[name] = tmp_path / name
        files[name].write_bytes(b"x" * 100)
        os.utime(files[name], (1000 - age * 10, 1000 - age * 10))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"y" * 1000)  # not an engine: never deleted, never counted
    mark_used(files["oldest.onnx"])  # loaded just now: the most recent
    deleted = prune_engines(tmp_path, budget_bytes=250, keep=files["old.onnx"])
    assert sorted(p.name for p in deleted) == ["mid.ep", "new.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old.onnx", "oldest.onnx"]
    assert prune_engines(tmp_path, budget_bytes=250) == []


def test_engine_cache_stays_under_its_limit_and_a_pruned_program_is_exported_again(restorer, caches, tmp_path):
    with pytest.raises(ValueError, match="engine_cache_mb"):
        BackendConfig(engine_cache_mb=0)
    config = BackendConfig(backend="onnxruntime", engine_dir=tmp_path, engine_cache_mb=1e-6)  # room for none
    backend = build_backend(restorer, "onnxruntime", config)
    one = backend.restore(_faces(1), [caches[2]], [1])
    first = sorted(tmp_path.iterdir())
    two = backend.restore(_faces(2), [caches[2], caches[2]], [1, 2])  # a second shape: a second program
    second = sorted(tmp_path.iterdir())
    assert len(first) == 1 and len(second) == 1 and first != second  # the older one went
    again = build_backend(restorer, "onnxruntime", config).restore(_faces(1), [caches[2]], [1])
    torch.testing.assert_close(again, one, rtol=0, atol=1e-6)
    assert len(two) == 2 and len(list(tmp_path.iterdir())) == 1


def test_the_engine_cache_limit_is_set_by_a_variable(monkeypatch):
    """Nothing but the library's BackendConfig reached the 2 GiB limit: a class's home folders under a quota (214 MB
    after ten short runs) and small disks had no way to lower it."""
    from streamrestore.backends.selection import ENGINE_CACHE_VARIABLE
    from streamrestore.errors import UserError

    monkeypatch.delenv(ENGINE_CACHE_VARIABLE, raising=False)
    assert BackendConfig().engine_cache_mb == 2048
    monkeypatch.setenv(ENGINE_CACHE_VARIABLE, "300")
    assert BackendConfig().engine_cache_mb == 300 and BackendConfig(engine_cache_mb=None).engine_cache_mb is None
    monkeypatch.setenv(ENGINE_CACHE_VARIABLE, "none")
    assert BackendConfig().engine_cache_mb is None
    for bad in ("0", "-5", "lots", "inf", "nan", "1_5", "1e999"):
        monkeypatch.setenv(ENGINE_CACHE_VARIABLE, bad)
        with pytest.raises(UserError, match=f"STREAMRESTORE_ENGINE_CACHE_MB='{bad}': give the most"):
            BackendConfig()


def test_programs_of_an_older_core_are_not_loaded(restorer, tmp_path, monkeypatch):
    """The core's version is part of every engine's key: a program exported by older code (an
    older graph for the same model) is exported again, not loaded."""
    from streamrestore.backends import engine_files

    key = (1, 2, True, False)
    now = engine_files.engine_path(restorer, key, tmp_path, "onnxruntime")
    monkeypatch.setattr(engine_files, "CORE_VERSION", engine_files.CORE_VERSION - 1)
    assert engine_files.engine_path(restorer, key, tmp_path, "onnxruntime") != now


def test_eager_asked_for_loads_no_onnxruntime():
    """``--backend eager`` is the advice where memory is short: choosing it imported onnxruntime (~64 MB) only to
    see whether another backend could run."""
    import os
    import subprocess
    import sys

    script = ("import sys\nfrom streamrestore.backends.selection import select_backend\n"
              "assert select_backend('eager', 'cpu') == 'eager'\nprint('onnxruntime' in sys.modules)\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "False"
