"""Benchmark: per-stage milliseconds per frame and end-to-end fps, backends side by side.

:func:`run_bench` loads the model, the face models and the references once, then for each
backend runs the whole pipeline (decode → detect → track → align → restore → smooth → paste →
encode, with the reader and writer threads of a real run) over the clip, after an untimed
warm-up on its first frames so compiling is not counted. It also times a plain decode+encode
of the same frames, the floor any pipeline sits on. Stages overlap (decode and encode run on
their own threads), so per-stage figures add up to more than the end-to-end time.

The same call on a CPU-only machine is the CPU benchmark.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from streamrestore.errors import InputError

log = logging.getLogger(__name__)

#: stage order in tables (others follow alphabetically)
STAGE_ORDER = ("decode", "detect", "track", "identity", "align", "restore", "reference_detail", "identity_gate", "temporal",
               "paste", "encode", "end to end")


@dataclass(frozen=True)
class BenchRow:
    """One stage of one backend: ``ms_per_frame`` averaged over the timed frames."""

    stage: str
    backend: str
    ms_per_frame: float


@dataclass
class BenchResult:
    """What :func:`run_bench` measured. ``fps`` is the best backend's end-to-end frame rate."""

    fps: float
    device: str
    backend: str
    rows: list[BenchRow]
    clip: str = ""
    model: str = ""
    frames: int = 0
    faces_per_frame: float = 0.0
    #: per backend: seconds to build it (LoRA merge, compile during warm-up) and to encode references
    startup_s: dict = field(default_factory=dict)
    #: end-to-end fps per backend, and of decode+encode alone
    fps_by_backend: dict = field(default_factory=dict)
    decode_encode_fps: float = 0.0
    #: flicker: E_warp x 1e3 (``streamrestore.eval.flicker_metric``) of each backend's output,
    #: with the flow of the input, over the timed frames; and the input's own
    flicker_by_backend: dict = field(default_factory=dict)
    input_flicker: float | None = None
    #: the same for the clip only decoded and encoded again (no face touched): what the encoder
    #: alone adds (a clean 720p clip: 1.17x its input's), the floor for the backends' outputs
    reencoded_flicker: float | None = None
    #: the temporal fusion's settings of the run (``TemporalConfig`` as a dict)
    temporal: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["rows"] = [asdict(r) for r in self.rows]
        return data

    def table(self) -> str:
        """Stages down, backends across, ms/frame; then fps lines."""
        backends = list(dict.fromkeys(r.backend for r in self.rows))
        stages = list(dict.fromkeys(r.stage for r in self.rows))
        stages.sort(key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
        values = {(r.stage, r.backend): r.ms_per_frame for r in self.rows}
        width = max([len(s) for s in stages] + [10])
        cols = [max(len(b), 9) for b in backends]
        lines = [f"clip: {self.clip}  frames: {self.frames}  faces/frame: {self.faces_per_frame:.2f}  "
                 f"model: {self.model}  device: {self.device}",
                 "ms/frame".ljust(width) + "".join(f"  {b:>{c}}" for b, c in zip(backends, cols))]
        for s in stages:
            cells = [values.get((s, b)) for b in backends]
            lines.append(s.ljust(width) + "".join(
                f"  {'-' if v is None else f'{v:.2f}':>{c}}" for v, c in zip(cells, cols)))
        lines.append("fps".ljust(width) + "".join(
            f"  {self.fps_by_backend.get(b, 0.0):>{c}.1f}" for b, c in zip(backends, cols)))
        if self.flicker_by_backend:
            lines.append("flicker".ljust(width) + "".join(
                f"  {'-' if b not in self.flicker_by_backend else f'{self.flicker_by_backend[b]:.3f}':>{c}}"
                for b, c in zip(backends, cols)))
            ratios = ", ".join(f"{b} {v / self.input_flicker:.2f}x" for b, v in self.flicker_by_backend.items()
                               if self.input_flicker)
            reencoded = (f", decoded and encoded again without restoring {self.reencoded_flicker:.3f}"
                         if self.reencoded_flicker is not None else "")
            lines.append(f"flicker: E_warp x1e3 of the output, flow from the input; the input's own "
                         f"{self.input_flicker:.3f}{reencoded} (output/input: {ratios}); temporal strength "
                         f"{self.temporal.get('strength', '?')}")
        if self.decode_encode_fps:
            ratio = self.decode_encode_fps / self.fps if self.fps else float("inf")
            lines.append(f"decode+encode alone: {self.decode_encode_fps:.1f} fps; best ({self.backend}): "
                         f"{self.fps:.1f} fps, {ratio:.2f}x the decode+encode time")
        return "\n".join(lines)


def describe_device(device: torch.device, threads: int | None = None) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    threads = threads or torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


#: the compute dtypes benchmarks take by name
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA runs asynchronously; timings must not)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, iters: int, warmup: int) -> float:
    """Median wall seconds of ``fn()`` over ``iters`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def _limited(frames, limit: int | None, timer: list[float] | None = None, convert=None):
    """``frames`` cut to ``limit`` and mapped by ``convert``; with ``timer``, the seconds spent
    decoding (and converting) go into timer[0]."""
    it = iter(frames)
    count = 0
    while limit is None or count < limit:
        t0 = time.perf_counter()
        try:
            frame = next(it)
        except StopIteration:
            return
        if convert is not None:
            frame = convert(frame)
        if timer is not None:
            timer[0] += time.perf_counter() - t0
        count += 1
        yield frame


def _transcode(clip: Path, dst: Path, frames: int | None) -> tuple[float, int]:
    """Seconds and frame count of decode+encode alone, on the same threads as a real run."""
    from streamrestore.run import restore_frames
    from streamrestore.video.reader import VideoReader
    from streamrestore.video.writer import EncoderSettings, VideoWriter

    count = [0]

    def counted() -> None:
        count[0] += 1

    t0 = time.perf_counter()
    with VideoReader(clip) as reader, VideoWriter(dst, reader.info, EncoderSettings(), force=True) as writer:
        restore_frames(_limited(reader.frames(), frames), writer, on_frame=counted)
    return time.perf_counter() - t0, count[0]


def _pipeline_run(clip: Path, dst: Path, frames: int | None, face_restorer, device) -> tuple[float, dict, int, int]:
    """One timed run: (wall seconds, stage seconds, frames, faces restored)."""
    from streamrestore.run import restore_frames
    from streamrestore.video.reader import VideoReader
    from streamrestore.video.writer import EncoderSettings, VideoWriter

    face_restorer.stats.stage_seconds.clear()
    decode = [0.0]
    start_frames, start_faces = face_restorer.stats.frames, face_restorer.stats.faces_restored
    sync(device)
    t0 = time.perf_counter()
    with VideoReader(clip) as reader, VideoWriter(dst, reader.info, EncoderSettings(), force=True) as writer:
        # The loop of restore_video: detection and tracking on the reader thread (the "detect" and
        # "track" rows), the reference detail beside the restore: stage rows add up to more than the frame.
        encode = restore_frames(_limited(reader.frames(), frames, decode), writer, face_restorer)
    sync(device)
    wall = time.perf_counter() - t0
    stages = dict(face_restorer.stats.stage_seconds)
    stages.pop("references", None)  # per identity, once: not a per-frame cost
    stages["decode"] = decode[0]
    stages["encode"] = encode
    return (wall, stages, face_restorer.stats.frames - start_frames,
            face_restorer.stats.faces_restored - start_faces)


def _fresh(face_restorer_template, restorer, fps: float):
    """A new FaceRestorer (fresh tracker and smoother) sharing the loaded face models and references."""
    from streamrestore.pipeline import FaceRestorer

    t = face_restorer_template
    return FaceRestorer(restorer, t.detector, t.reference_sets, embedder=t.embedder, config=t.config,
                        channel_order=t.channel_order, fps=fps, torch_threads=t.torch_threads)


def run_bench(
    clip: str | Path,
    refs: Sequence = (),
    *,
    model="lite",
    device: str = "auto",
    backends: Sequence[str] | None = None,
    frames: int | None = None,
    warmup_frames: int = 8,
    detector: str = "auto",
    face_models: str | Path | None = None,
    dtype: torch.dtype | None = None,
    resolution: int | None = None,
    fast_vae: str | Path | None = None,
    torch_threads: int | None = None,
    temporal=None,
    flicker: bool = True,
    identity_gate=None,
    crop_resolution: int | str | None = "auto",
    detect_every: int = 3,
    max_faces: int | None = None,
    reference_detail=None,
) -> BenchResult:
    """Benchmark ``model`` on ``clip`` with each backend in ``backends``.

    Args:
        clip: input video.
        refs: reference folders/specs, as for :func:`~streamrestore.pipeline.build_face_restorer`.
        model: a model name/path (``lite``, ``instantrestore``, ``identity``, a file) or a
            ready restorer object.
        device: ``auto``, ``cpu`` or ``cuda``.
        backends: backends to compare (default None: every backend available on the device;
            ``["auto"]`` runs the one ``auto`` picks). Restorers without a network (identity)
            run once, as ``eager``.
        frames: time only the first N frames (default None: the whole clip).
        warmup_frames: untimed frames run first through each backend (default 8: compiles
            the shapes of the clip's first faces and fills caches; 0 to skip).
        detector, face_models: face detection, as for :func:`~streamrestore.pipeline.build_face_restorer`.
        dtype: compute dtype of a loaded model (default None: fp16 on CUDA, fp32 on CPU).
        resolution: crop size of the ``identity`` model (default 512).
        fast_vae: TAESD folder or decoder file to decode with instead of the model's VAE
            (default None: the VAE); see :class:`~streamrestore.model.restorer.InstantRestorer`.
        torch_threads: CPU threads for the restorer (default None: half the cores, as every
            command; see :mod:`streamrestore.threads`).
        temporal: the temporal fusion's :class:`~streamrestore.temporal.TemporalConfig`
            (default None: its defaults; ``TemporalConfig.off()`` times the run without it).
            Its cost is the ``temporal`` stage.
        flicker: also measure each backend's output flicker (E_warp x 1e3 with the input's flow,
            over the timed frames of the encoded output; untimed, after each run). Default True.
        identity_gate: the identity gate's :class:`~streamrestore.quality.IdentityGateConfig`
            (default None: its defaults). Its cost is the ``identity_gate`` stage.
        crop_resolution: ``PipelineConfig.crop_resolution`` (default ``"auto"``: per face by its size).
        detect_every, max_faces: as ``PipelineConfig``'s (defaults 3 and None: every face), which
            change the detection and restore costs.
        reference_detail: the reference detail stage's
            :class:`~streamrestore.reference_detail.ReferenceDetailConfig` (default None: its defaults).
    """
    from streamrestore.api import build_face_restorer
    from streamrestore.backends import BACKENDS, BackendConfig, BackendRestorer, available_backends, select_backend
    from streamrestore.video.reader import probe

    clip = Path(clip)
    if not clip.is_file():
        raise InputError(f"{clip} does not exist; give a video file to benchmark on")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1 or None, got {frames}")
    if warmup_frames < 0:
        raise ValueError(f"warmup_frames must be >= 0, got {warmup_frames}")
    info = probe(clip)
    fps_in = float(info.frame_rate) if info.frame_rate else 30.0

    t0 = time.perf_counter()
    restorer = _load(model, device, dtype, resolution, fast_vae)
    load_s = time.perf_counter() - t0
    run_device = getattr(restorer, "device", torch.device("cpu"))
    if hasattr(restorer, "net"):
        if backends is None:
            names = available_backends(run_device)
        else:
            names = []
            for b in backends:
                if b not in BACKENDS:
                    raise ValueError(f"backend must be one of {BACKENDS}, got {b!r}")
                names.append(select_backend(b, run_device))
            names = list(dict.fromkeys(names))
    else:
        names = ["eager"]  # nothing to compile

    # Face models and references load once; every backend gets its own tracker and smoother.
    from streamrestore.pipeline import PipelineConfig
    from streamrestore.quality import IdentityGateConfig, QualityGateConfig
    from streamrestore.temporal import TemporalConfig

    temporal = temporal if temporal is not None else TemporalConfig()
    # the model runs on every face, clean ones too: a clean clip would otherwise time no model at all
    config = PipelineConfig(temporal=temporal, identity_gate=identity_gate or IdentityGateConfig(),
                            gate=QualityGateConfig(skip_clean_faces=False),
                            crop_resolution=crop_resolution, detect_every=detect_every, max_faces=max_faces)
    if reference_detail is not None:
        config = dataclasses.replace(config, reference_detail=reference_detail)
    template = build_face_restorer(refs, model=restorer, detector=detector, face_models=face_models, fps=fps_in,
                                   config=config, torch_threads=torch_threads)
    rows: list[BenchRow] = []
    startup: dict = {"load_model": round(load_s, 3)}
    fps_by: dict = {}
    flicker_by: dict = {}
    input_flicker = None
    faces_seen = 0.0
    timed_frames = 0
    with tempfile.TemporaryDirectory(prefix="streamrestore-bench-") as tmp:
        out = Path(tmp) / f"out{clip.suffix or '.mp4'}"
        # a line as each step starts: a backend's build and warm-up (compiling) and the flicker pass
        # take tens of seconds each, and the results come only at the end
        log.info("bench: decoding and encoding the clip as it is (the baseline)")
        plain_s, plain_n = _transcode(clip, out, frames)
        reencoded_flicker = None
        if flicker:
            from streamrestore.eval.flicker_metric import e_warp_files

            reencoded_flicker = round(e_warp_files(clip, out, max_frames=plain_n)[1], 4)
        for name in names:
            compiling = {"compile": " (compiling: tens of seconds)", "onnxruntime": " (exporting to ONNX: tens of "
                         "seconds)", "tensorrt": " (building the engine: minutes)"}.get(name, "")
            log.info("bench: %s: building and warming up on %d frames%s", name, warmup_frames, compiling)
            t0 = time.perf_counter()
            runner = restorer if not hasattr(restorer, "net") else BackendRestorer(restorer, name, BackendConfig(backend=name))
            fr = _fresh(template, runner, fps_in)
            build_s = time.perf_counter() - t0
            references_s = fr.stats.stage_seconds.get("references", 0.0)
            if warmup_frames:
                t0 = time.perf_counter()
                _pipeline_run(clip, out, warmup_frames, fr, run_device)
                build_s += time.perf_counter() - t0
            startup[name] = {"build_and_warmup_s": round(build_s, 3), "references_s": round(references_s, 3)}
            fr = _fresh(template, runner, fps_in)
            log.info("bench: %s: timing %s", name, f"{frames} frames" if frames else "the whole clip")
            wall, stages, n, faces = _pipeline_run(clip, out, frames, fr, run_device)
            n = max(n, 1)
            for stage, secs in stages.items():
                rows.append(BenchRow(stage, name, round(1000.0 * secs / n, 3)))
            rows.append(BenchRow("end to end", name, round(1000.0 * wall / n, 3)))
            fps_by[name] = round(n / wall, 3) if wall > 0 else 0.0
            faces_seen, timed_frames = faces / n, n
            log.info("bench: %s %.1f fps over %d frames", name, fps_by[name], n)
            if flicker:
                log.info("bench: %s: measuring the output's flicker (optical flow over %d frames)", name, n)
                input_flicker, flicker_by[name], _ = e_warp_files(clip, out, max_frames=n)
                input_flicker, flicker_by[name] = round(input_flicker, 4), round(flicker_by[name], 4)
    best = max(fps_by, key=fps_by.get)
    return BenchResult(
        fps=fps_by[best], device=describe_device(run_device, template.torch_threads), backend=best, rows=rows, clip=str(clip),
        model=getattr(restorer, "name", str(model)), frames=timed_frames, faces_per_frame=round(faces_seen, 3),
        startup_s=startup, fps_by_backend=fps_by,
        decode_encode_fps=round(plain_n / plain_s, 3) if plain_s > 0 else 0.0,
        flicker_by_backend=flicker_by, input_flicker=input_flicker, reencoded_flicker=reencoded_flicker,
        temporal=asdict(temporal),
    )


def _load(model, device: str, dtype, resolution, fast_vae=None):
    if not isinstance(model, (str, Path)):
        return model
    if str(model) == "identity":
        from streamrestore.model.identity import IdentityRestorer

        if fast_vae is not None:
            log.warning("--fast-vae ignored: the identity model has no decoder")
        return IdentityRestorer(resolution or 512)
    from streamrestore.model.registry import load_model

    if dtype in (torch.float16, torch.bfloat16) and (device == "cpu" or not torch.cuda.is_available()):
        log.warning("--dtype %s on a CPU: half precision runs there tens of times slower than fp32 (it is for "
                    "GPUs); these timings are not what the CPU can do", str(dtype).removeprefix("torch."))
    return load_model(str(model), device=device, dtype=dtype, fast_vae=fast_vae)


def write_bench_json(result: BenchResult, path: str | Path) -> Path:
    """Write ``result`` as JSON (top level ``fps``, ``device``, ``backend``, ``rows``, and the rest)."""
    from streamrestore.output_file import write_text_file

    return write_text_file(Path(path), json.dumps(result.to_json(), indent=2) + "\n")
