"""``streamrestore batch``: many videos (and long videos in chunks) and photos on a pool of Ray workers.

    streamrestore.batch.run(inputs, refs=..., out_dir=..., ray="local", workers=2, ...)

What happens:

* Every input is *planned* on the driver: its video packets are demuxed (not decoded) to get
  each frame's pts and duration and the keyframes. A video longer than ``chunk_seconds`` is
  split at keyframes into chunks of about that length; a shorter one is one piece.
* A pool of Ray actors (:class:`BatchWorker`) each load the model and the reference photos
  once (:func:`streamrestore.api.build_face_restorer`) and keep them, and the encoded
  references, for every file and chunk they get; each new stream gets a fresh tracker
  (:meth:`FaceRestorer.fresh`).
* A one-piece input is restored by :func:`streamrestore.api.restore_video` itself: the output
  is exactly what the main command writes. A photo is one piece of one frame, restored by
  :func:`streamrestore.api.restore_photo`, as the main command restores it.
* A chunk is decoded from the keyframe before it, with :data:`OVERLAP_FRAMES` frames of
  warm-up before and after (tracking, lookahead and temporal fusion settle; those frames are
  restored and dropped). Its kept frames are converted to the encoder's pixel format exactly
  as :class:`~streamrestore.video.writer.VideoWriter` would, and stored losslessly (FFV1).
  When all chunks of an input are done, one *join* pass reads them in order, gives every
  frame the pts and duration of the input's frame at that position (from the plan, so no
  intermediate container's timestamp rounding can move a frame), and encodes them with one
  ``VideoWriter``, which remuxes the input's audio once. The encoder therefore sees the same
  pixels, in the same format, at the same timestamps as in the main command: frame count,
  pts, durations and audio packets are those of the input.
* Identity matching is by reference set *name*, so a person maps to the same references in
  every chunk; track ids restart in each chunk (only the noise seed of a track depends on
  them).

Resume/retry: ``OUTDIR/batch-manifest.jsonl`` gets one JSON line per state change of an input
or chunk (state, attempts, error, output, frames, sha256, the reference sets matched); the last
line per key wins. A rerun skips inputs whose output exists with the recorded frame count (and
chunks whose part file is there with its checksum and frame count). A failed chunk or input is
tried again up to ``retries`` times, also when its worker actor died (a new actor with the same
arguments takes its place); an input that cannot be read (not a video) is recorded as failed and
the batch goes on.

Without Ray installed the inputs are restored one after the other in this process (no
chunks), with one line saying how to install it (``pip install "streamrestore[batch]"``).
"""
from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

from streamrestore.errors import InputError, OutputError, TemporaryError, UserError, one_line
from streamrestore.output_file import sha256_of

log = logging.getLogger(__name__)

#: frames restored and dropped on each side of a chunk (tracker warm-up and lookahead, temporal fusion)
OVERLAP_FRAMES = 8
DEFAULT_CHUNK_SECONDS = 60.0
#: seconds between the lines that say how far the pieces under way have come: a piece (a whole
#: file without Ray, a 60 s chunk on a CPU, a long join) takes minutes, and said nothing until done
UNDER_WAY_LINE_SECONDS = 30.0
MANIFEST_NAME = "batch-manifest.jsonl"
#: object store of a Ray started by ``ray="local"`` (MiB; ``ray_init={"object_store_memory": ...}`` overrides)
LOCAL_OBJECT_STORE_MB = 200
PARTS_DIR = ".streamrestore-parts"
#: a chunk part's size per frame as a share of its raw 4:2:0 picture: lossless FFV1 measured 0.14 on a
#: 640x360 talking head and 0.17 on 1080p street footage (noisier footage keeps more); 10-40 times the
#: input's own size, kept until the video is joined
PART_BYTES_SHARE = 0.2
#: test/ops hook: "NAME:CHUNK[,NAME:CHUNK...]" (file name, chunk index or "*"): that piece's first attempt raises
FAIL_ENV = "STREAMRESTORE_BATCH_FAIL_ONCE"
#: test/ops hook, same syntax: that piece's worker process exits (``os._exit(1)``) after its first
#: kept frame, once per output folder (a marker file in it makes "once" hold across the new actor)
DIE_ENV = "STREAMRESTORE_BATCH_DIE_ONCE"
ADAPTING = "adapting the model to the references' people first (about a minute per person on a CPU; once: cached)"
INSTALL_HINT = 'ray is not installed: restoring the inputs one after another in this process; for parallel ' \
               'workers and chunks install the extra: pip install "streamrestore[batch]"'


# --- inputs and plans -------------------------------------------------------------------------


def _list_lines(list_file: Path) -> list[str]:
    """The lines of a ``--list`` file: UTF-8 (a byte-order mark, as Windows' Notepad writes, dropped) or UTF-16
    with its mark. UserError for any other text: a Latin-1 list gave a traceback, and a mark was read as part
    of the first name ("input not found: \ufeffa.mp4")."""
    try:
        data = list_file.read_bytes()
    except OSError as exc:
        raise UserError(f"--list {list_file}: cannot read it ({exc.strerror or exc})") from None
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding).splitlines()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"--list {list_file} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save "
                        "it as UTF-8") from None


def expand_inputs(paths=(), list_file: str | os.PathLike | None = None, recursive: bool = False) -> list[Path]:
    """The input files: each path as given, a folder's videos and photos (by extension, sorted; with
    ``recursive`` its subfolders' too, a camera card's ``DCIM/100CANON``), and the lines of ``list_file``
    (blank lines and ``#`` comments skipped).

    A folder's hidden files and folders (macOS's ``._name`` copies among them) and this tool's own outputs
    (``name.restored.ext``: a folder batched into itself would restore them again on a rerun; with
    ``recursive``, a folder holding a batch's manifest) are left out; its subfolders (not ``recursive``) and
    files of other kinds are left out and said, once per folder."""
    items: list[Path] = []
    if list_file is not None:
        lf = Path(list_file)
        if not lf.is_file():
            raise UserError(f"--list {lf}: no such file")
        for line in _list_lines(lf):
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                items.append(p if p.is_absolute() else lf.parent / p)
    given = list(map(Path, paths))
    for p in given:
        if not p.is_dir():
            items.append(p)
            continue
        for folder in _folders_under(p) if recursive else [p]:
            items.extend(_folder_inputs(folder, say_subfolders=not recursive))
    if not items and (given or list_file is not None):  # (said as what was given, not "no input files given")
        said = [f"folder {p} holds no videos or photos" for p in given] + \
            ([f"--list {list_file} names no files"] if list_file is not None else [])
        raise UserError("; ".join(said))
    seen, unique = set(), []
    for p in items:
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


@dataclass
class Plan:
    """Where an input's frames are and how it is cut (see the module docstring)."""

    src: str
    pts: list[int]  # every frame's pts, presentation order (made up one frame apart where the file has none)
    durations: list[int]  # each frame's packet duration (0: unknown)
    time_base: Fraction
    origin: float  # seconds of the container's first timestamp (VideoReader windows count from it)
    fps: float
    chunks: list[tuple[int, int]] = field(default_factory=list)  # [first, end) frame indices
    pix_fmt: str | None = None  # the stream's pixel format (it picks the default encoder: settings_of)

    @property
    def frames(self) -> int:
        return len(self.pts)

    def seconds(self, index: int) -> float:
        """Seconds of frame ``index`` from the file's start as VideoReader counts (``origin``)."""
        return float(self.pts[index] * self.time_base) - self.origin


def plan_input(src: str | os.PathLike, chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> Plan:
    """Demuxes the video packets of ``src`` (no decoding) and cuts it at keyframes into chunks of
    about ``chunk_seconds`` (a last piece shorter than half of it joins the one before). A photo
    is one piece of one frame. InputError when ``src`` is not a readable video or photo."""
    import av

    from streamrestore.images import is_image, read_photo_header
    from streamrestore.video.reader import frame_ticks, open_input, pick_video_stream, stream_frame_rate

    if is_image(src):
        read_photo_header(src)
        plan = Plan(str(src), [0], [1], Fraction(1, 30), 0.0, 30.0)
        plan.chunks = [(0, 1)]
        return plan

    container = open_input(src)
    try:
        stream = pick_video_stream(container, src)
        tb = Fraction(stream.time_base)
        origin = container.start_time / av.time_base if container.start_time else 0.0
        rows, keys = [], set()
        untimed = 0  # packets without a pts (a raw stream)
        try:
            for packet in container.demux(stream):
                if packet.size and not packet.is_discard:
                    if packet.pts is None:
                        untimed += 1
                        continue
                    rows.append((packet.pts, packet.duration or 0))
                    if packet.is_keyframe:
                        keys.add(packet.pts)
        except av.error.FFmpegError as exc:
            if not rows:
                raise InputError(f"cannot read {src} as a video ({exc}); it may be damaged or not a video") from None
        rate = stream_frame_rate(stream)
        pix_fmt = stream.codec_context.pix_fmt
    finally:
        container.close()
    fps = float(rate) if rate else 30.0
    if untimed or len({pts for pts, _ in rows}) < len(rows):
        # no timestamps to cut and join by (a raw stream, a broken mux): one piece, restored by the main
        # command's path, whose reader places such frames (streamrestore.video.reader.VideoReader.frames)
        step = frame_ticks(fps, tb)
        count = untimed + len(rows)
        plan = Plan(str(src), [i * step for i in range(count)], [step] * count, tb, origin, fps, pix_fmt=pix_fmt)
        plan.chunks = [(0, count)]
        return plan
    if not rows:
        raise InputError(f"{src} has no video frames")
    rows.sort()
    plan = Plan(str(src), [r[0] for r in rows], [r[1] for r in rows], tb, origin, fps, pix_fmt=pix_fmt)
    plan.chunks = _cut(plan, {i for i, p in enumerate(plan.pts) if p in keys}, chunk_seconds)
    return plan


def _folders_under(root: Path) -> list[Path]:
    """``root`` and the folders under it, sorted, but hidden ones and a batch's output folder (it holds a
    manifest: its outputs are this tool's) with what they hold."""
    found, linked, unread = [], [], []
    for folder, subfolders, files in os.walk(root, onerror=lambda exc: unread.append(exc.filename)):
        linked += [str(Path(folder, name).relative_to(root)) for name in subfolders
                   if (Path(folder) / name).is_symlink() and not name.startswith(".")]
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".")
                               and not (Path(folder) / name).is_symlink()
                               and not (Path(folder) / name / MANIFEST_NAME).exists())
        found.append(Path(folder))
    if linked:  # (os.walk follows none: a link back up would never end)
        log.warning("batch: %s: leaving out %d linked folder(s) (%s): links are not followed; name them as inputs "
                    "too", root, len(linked), ", ".join(sorted(linked)[:3]) + (" ..." if len(linked) > 3 else ""))
    if unread:
        log.warning("batch: %s: cannot read %d folder(s) (%s): left out", root, len(unread),
                    ", ".join(map(str, unread[:3])) + (" ..." if len(unread) > 3 else ""))
    return found


def output_subfolders(paths, inputs: list[Path]) -> dict[Path, Path]:
    """For a recursive batch, each input's folder under the folder given it was found in (its place in
    OUTDIR; with several folders given, under the folder's own name: two cards' ``C0001.MP4``), by input."""
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    where = {}
    for src in inputs:
        for root in roots:
            try:
                below = src.parent.relative_to(root)
            except ValueError:
                continue
            where[src] = Path(root.resolve().name) / below if len(roots) > 1 else below
            break
    return where


def _folder_inputs(folder: Path, say_subfolders: bool = True) -> list[Path]:
    """The videos and photos of ``folder`` (see :func:`expand_inputs`), what else it holds said (its
    subfolders where ``say_subfolders``)."""
    from streamrestore.images import is_image
    from streamrestore.video.reader import VIDEO_SUFFIXES

    taken, folders, others, outputs = [], [], [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == MANIFEST_NAME:  # (an earlier batch's record: its own)
            continue
        if entry.is_dir():
            folders.append(entry.name + "/")
        elif ".restored" in entry.suffixes:
            outputs.append(entry.name)
        elif entry.suffix.lower() in VIDEO_SUFFIXES or is_image(entry):
            taken.append(entry)
        else:
            others.append(entry.name)

    def listed(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    left = []
    if folders and say_subfolders:
        left.append(f"{len(folders)} subfolder{'s' if len(folders) > 1 else ''} ({listed(folders)}: batch does not "
                    f"look inside; name {'them' if len(folders) > 1 else 'it'} as inputs too, or give --recursive)")
    if others:
        left.append(f"{len(others)} file{'s' if len(others) > 1 else ''} neither a video nor a photo ({listed(others)})")
    if outputs:
        left.append(f"{len(outputs)} restored output{'s' if len(outputs) > 1 else ''} ({listed(outputs)})")
    if left:
        log.warning("batch: %s: leaving out %s", folder, "; ".join(left))
    return taken


def _cut(plan: Plan, keyframes: set[int], chunk_seconds: float) -> list[tuple[int, int]]:
    n = plan.frames
    end_time = plan.seconds(n - 1)
    starts = [0]
    for k in sorted(keyframes):
        if k == 0:
            continue
        if plan.seconds(k) - plan.seconds(starts[-1]) >= chunk_seconds and end_time - plan.seconds(k) >= chunk_seconds / 2:
            starts.append(k)
    return [(a, b) for a, b in zip(starts, starts[1:] + [n])]


# --- files ----------------------------------------------------------------------------------


def count_frames(path: str | os.PathLike) -> int:
    """Video packets in ``path`` (demuxed, not decoded), 1 for a photo; -1 when it cannot be read."""
    import av

    from streamrestore.images import is_image, read_photo_header
    from streamrestore.video.reader import open_local_media

    if is_image(path):
        try:
            read_photo_header(path)
            return 1
        except InputError:
            return -1

    try:
        with open_local_media(path) as c:
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except (av.error.FFmpegError, IndexError, OSError):
        return -1


def output_path(out_dir: Path, src: Path, subfolder: Path | None = None) -> Path:
    """Where ``src``'s output goes: ``out_dir`` (in ``subfolder`` of it: a recursive batch's), named as the
    main command names it."""
    from streamrestore.images import default_photo_output, is_image
    from streamrestore.video.writer import default_output_path

    folder = out_dir / subfolder if subfolder is not None else out_dir
    return folder / (default_photo_output(src) if is_image(src) else default_output_path(src)).name


class Manifest:
    """``OUTDIR/batch-manifest.jsonl``: one JSON object a line, appended on every change; the
    last line per ``key`` is the record's state."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        self._torn = False  # the file ends in a line cut by a crash: the next record starts a new line
        if path.exists():
            text = path.read_text()
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec

    def get(self, key: str) -> dict:
        return self.records.get(key, {})

    def update(self, key: str, **fields) -> dict:
        rec = dict(self.records.get(key, {}), key=key, **fields, time=round(time.time(), 3))
        self.records[key] = rec
        try:
            with open(self.path, "a") as f:
                f.write(("\n" if self._torn else "") + json.dumps(rec, sort_keys=True) + "\n")
        except OSError as exc:
            from streamrestore.output_file import SPACE_ERRNOS

            why = ""
            if exc.errno in SPACE_ERRNOS:  # (the first write to fail, not what filled the disk)
                parts = _folder_bytes(self.path.parent / PARTS_DIR)
                why = f" (the long videos' chunk parts in {self.path.parent / PARTS_DIR} take {_gb(parts)})" if parts \
                    else ""
            raise OutputError(f"cannot write the batch's record {self.path}: {exc.strerror or exc}{why}; the outputs "
                              "finished are kept, and a rerun resumes") from None
        self._torn = False
        return rec

    def output_of(self, dst: Path, key: str) -> str | None:
        """Whose output ``dst`` is: ``key`` where its record names it, else the key of the latest
        record that names it (a deleted output written again for another input), or None."""
        named = [(rec.get("time", 0), k) for k, rec in self.records.items() if rec.get("output") == str(dst)]
        if any(k == key for _, k in named):
            return key
        return max(named)[1] if named else None


def _types_path(part: Path) -> Path:
    """The sidecar of a chunk's part file: its frames' picture types (JSON list)."""
    return part.with_suffix(".types.json")


# --- the worker -----------------------------------------------------------------------------


class _PartSink:
    """A chunk's part file (a :class:`~streamrestore.types.FrameSink`): the kept frames of a
    chunk, converted to the encoder's pixel format exactly as
    :class:`~streamrestore.video.writer.VideoWriter` would, stored losslessly (FFV1 in Matroska)
    at pts 0, 1, 2, ... (the join gives them the input's timestamps back).

    Args:
        path: the file to write.
        width, height, pix_fmt, matrix, color_range: the final encoder's picture format
            (:func:`~streamrestore.video.writer.encoder_format`).
        keep: ``(first, end)`` pts of the frames to keep (``end`` None: to the last); the
            overlap outside is restored for warm-up only and dropped here.
        die: the :data:`DIE_ENV` test hook's marker, or None.
        on_kept: called after each kept frame (the worker's count of the chunk's frames done).
    """

    def __init__(self, path: Path, width: int, height: int, pix_fmt: str, matrix: int | None,
                 color_range: int | None, *, keep: tuple[int, int | None], die: str | None = None,
                 on_kept: Callable[[], None] | None = None):
        import av

        self.pix_fmt, self.matrix, self.color_range = pix_fmt, matrix, color_range
        self.keep, self.die, self.on_kept = keep, die, on_kept
        self.kept = 0
        # Each frame's picture type (I/P/B) as decoded: libx264 follows it (an I frame becomes a
        # keyframe), so the join hands it on as the main command's writer does.
        self.types: list[int] = []
        self._out = av.open(str(path), "w")
        self._stream = self._out.add_stream("ffv1", rate=25)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._stream.time_base = self._stream.codec_context.time_base = Fraction(1, 25)

    def write(self, frame) -> None:
        from streamrestore.video.writer import to_encoder_format

        first, end = self.keep
        if frame.pts < first or (end is not None and frame.pts >= end):
            return  # overlap: restored for warm-up only
        self.types.append(int(frame.pict_type))
        # (the frame is not used after this: its pts may change)
        converted = to_encoder_format(frame, self.pix_fmt, self.matrix, self.color_range)
        converted.pts, converted.time_base = self.kept, Fraction(1, 25)
        self._out.mux(self._stream.encode(converted))
        self.kept += 1
        if self.on_kept is not None:
            self.on_kept()
        _die_once(self.die)  # (test hook: mid-task, a partial part file written)

    def close(self) -> None:
        """Flushes the encoder and closes the file: the part is complete."""
        try:
            self._out.mux(self._stream.encode(None))
        finally:
            self.abort()

    def abort(self) -> None:
        """Closes the file without flushing the encoder (a failed run; the caller drops it)."""
        if self._out is not None:
            out, self._out = self._out, None
            out.close()


class BatchWorker:
    """Loads the model, face models and references once; restores whole files, chunks, and
    joins chunks. Used as a Ray actor (``ray.remote(BatchWorker)``) or in-process."""

    def __init__(self, refs=(), options: dict | None = None, encoder: dict | None = None,
                 torch_threads: int | None = 1, own_process: bool = False, adapted: dict | None = None,
                 deinterlace: bool = True):
        """``options``: :func:`~streamrestore.api.build_face_restorer`'s keywords (``config`` as the
        fields of a ``PipelineConfig``; ``adapt``: an ``AdaptConfig``). ``adapted``: fine-tunes
        another worker made (:meth:`adaptation`), put into this worker's cache folder first so that
        it loads them instead of adapting again. ``deinterlace``: as
        :func:`~streamrestore.api.restore_video`'s, for whole files, chunks and joins alike."""
        import torch

        from streamrestore.api import build_face_restorer
        from streamrestore.pipeline import PipelineConfig

        options = dict(options or {})
        if torch_threads and own_process:  # a Ray actor owns its process (in-process: only around our work)
            torch.set_num_threads(torch_threads)
        config = PipelineConfig(**options.pop("config", {}))
        self.encoder = dict(encoder or {})
        self.deinterlace = deinterlace
        #: the piece under way (the file it writes) and its frames done so far (restored and kept; a
        #: join: encoded), read by :meth:`progress` from another thread (a Ray actor's second one)
        self.piece_now: str | None = None
        self.frames_now = 0
        #: in this process, the driver's function called after each of those frames (its lines)
        self.report: Callable[[], None] | None = None
        #: a usage mistake found while loading (a model that is not there, offline downloads, no GPU on
        #: this node): kept for :meth:`load` in a Ray actor, whose raising here would only read
        #: as "the worker died", again for every retry; raised at once in this process
        self._setup_error: UserError | None = None
        self.template = None

        def load() -> None:
            if adapted and options.get("adapt") is not None:
                from streamrestore.model.adapt import store_adapted_weights

                store_adapted_weights(adapted, options["adapt"])
            self.template = build_face_restorer(refs, config=config, torch_threads=torch_threads, **options)

        # (an actor loads in load(), after Ray has placed it: placed() then answers at once, so the driver tells
        # a worker Ray cannot place from one loading a model for minutes, or adapting it)
        self._load: Callable[[], None] | None = load
        if not own_process:
            self._load = None
            load()

    def placed(self) -> bool:
        """True, as soon as the actor runs (Ray has placed it; its models may be loading)."""
        return True

    def load(self) -> UserError | None:
        """Loads the models (once); the usage mistake that stopped it, or None."""
        if self._load is not None:
            load, self._load = self._load, None
            try:
                load()
            except UserError as exc:
                self._setup_error = exc
        return self._setup_error

    def _loaded(self):
        """The worker's FaceRestorer template (loaded first where it is not yet); its set-up mistake raised again
        when it has none."""
        self.load()
        if self._setup_error is not None:
            raise self._setup_error
        return self.template

    def progress(self) -> tuple[str | None, int]:
        """The piece under way (the file it writes: a piece given but not begun yet is still the
        last one's) and its frames done so far (those it keeps: a chunk's warm-up frames are not
        counted; a join counts the frames it has encoded)."""
        return self.piece_now, self.frames_now

    def _begin(self, writes: str) -> None:
        self.piece_now, self.frames_now = str(writes), 0

    def _frame_done(self) -> None:
        self.frames_now += 1
        if self.report is not None:
            self.report()

    def adaptation(self) -> dict:
        """What adapting to the references did here: ``weights`` (the fine-tunes by key, for
        :func:`~streamrestore.model.adapt.store_adapted_weights` on other workers) and ``people``
        (name -> seconds spent adapting, 0 when loaded from the cache, None when not adapted: too
        few photos). Empty without ``adapt``."""
        restorer = self._loaded().restorer
        if not hasattr(restorer, "adapted_weights"):
            return {"weights": {}, "people": {}}
        people = {}
        for name, cache in self.template.caches.items():
            key = restorer.key_of(cache)
            people[name] = None if key is None else restorer.adapt_seconds.get(key, 0.0)
        return {"weights": restorer.adapted_weights(), "people": people}

    def _settings(self):
        from streamrestore.video.writer import EncoderSettings

        return EncoderSettings(**self.encoder)

    def restore_whole(self, src: str, dst: str, fail: bool = False, die: str | None = None) -> dict:
        """``src`` into ``dst`` with :func:`restore_video` (the main command's own path; a photo:
        :func:`restore_photo`)."""
        from streamrestore.api import restore_photo, restore_video
        from streamrestore.images import is_image
        from streamrestore.video.reader import probe

        t0 = time.perf_counter()
        self._begin(dst)
        if fail:
            raise RuntimeError(f"injected failure ({FAIL_ENV})")
        _die_once(die)
        if is_image(src):
            stats = restore_photo(src, dst, self._loaded().fresh(), force=True,
                                  strip_metadata=bool(self.encoder.get("strip_metadata")))
        else:
            info = probe(src)
            fps = float(info.frame_rate) if info.frame_rate else 30.0
            face_restorer = self._loaded().fresh(fps)
            # (a worker's line would not name the input: its done line counts the warning, the summary says it)
            face_restorer.say_unlike_early = False
            stats = restore_video(src, dst, face_restorer, encoder=self._settings(), force=True,
                                  deinterlace=self.deinterlace, on_frame=self._frame_done)
        return {"frames": stats.frames, "seconds": time.perf_counter() - t0, "warnings": stats.warnings(),
                "faces": stats.faces_restored, "clean": stats.faces_left_clean, "dim": stats.faces_left_dim,
                "tinted": stats.faces_left_tinted, "grainy": stats.faces_left_grainy, "strength": stats.strength,
                "identities": stats.identities_matched,
                "seen": sum(track.faces for track in stats.per_track.values())}

    def restore_chunk(self, plan: Plan, index: int, part: str, dst: str, fail: bool = False,
                      die: str | None = None) -> dict:
        """Frames [a, b) of chunk ``index`` of ``plan``, restored (with overlap, dropped), in the
        encoder's pixel format for ``dst`` (the final output), losslessly into ``part`` (FFV1 in
        Matroska)."""
        from streamrestore.run import restore_frames
        from streamrestore.video.reader import VideoReader, probe
        from streamrestore.video.writer import encoder_format

        t0 = time.perf_counter()
        self._begin(part)
        if fail:
            raise RuntimeError(f"injected failure ({FAIL_ENV})")
        a, b = plan.chunks[index]
        n = plan.frames
        lo, hi = max(0, a - OVERLAP_FRAMES), min(n, b + OVERLAP_FRAMES)
        start = None if lo == 0 else max(0.0, plan.seconds(lo))
        end = None if hi >= n else plan.seconds(hi)
        part = Path(part)
        tmp = part.with_name(f".{part.name}.partial.mkv")
        # at the whole file's size (a chunk after a size change too: the output holds one size), its
        # problems counted in the frames it keeps (the warm-up frames are the chunks' beside)
        whole = probe(plan.src)
        counted = (plan.seconds(a) if a else None, plan.seconds(b) if b < n else None)
        with VideoReader(plan.src, start=start, end=end, deinterlace=self.deinterlace,
                         size=(whole.width, whole.height), counted=counted) as reader:
            info = reader.info
            face_restorer = self._loaded().fresh(plan.fps, info.pixel_aspect)
            face_restorer.say_unlike_early = False  # (the joined input's warnings say it, in its own numbers)
            pix_fmt, matrix, color_range = encoder_format(dst, info, self._settings())
            sink = _PartSink(tmp, info.width, info.height, pix_fmt, matrix, color_range,
                             keep=(plan.pts[a], plan.pts[b] if b < n else None), die=die,
                             on_kept=self._frame_done)
            try:
                restore_frames(reader.frames(), sink, face_restorer)
                sink.close()
            except BaseException:  # (a full disk: the half part goes, not to fill the disk through the retries)
                with contextlib.suppress(OSError):
                    sink.abort()
                tmp.unlink(missing_ok=True)
                raise
        kept, types = sink.kept, sink.types
        if kept != b - a:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"chunk {index} of {plan.src}: restored {kept} frames, expected {b - a}")
        _types_path(part).write_text(json.dumps(types))
        os.replace(tmp, part)
        face_restorer.settle_device_counts()  # (faces with invalid values counted on a GPU)
        stats = face_restorer.stats
        stats.problems.extend(reader.problems)
        return {"frames": kept, "sha256": sha256_of(part), "seconds": time.perf_counter() - t0,
                "faces": stats.faces_restored, "identities": stats.identities_matched, "warnings": stats.warnings()}

    def join(self, plan: Plan, parts: list[str], dst: str) -> dict:
        """Encodes the chunks' frames in order at the input's timestamps into ``dst`` and remuxes
        the input's audio once (one :class:`VideoWriter`)."""

        from streamrestore.provenance import restored_comment
        from streamrestore.video.reader import open_local_media, probe
        from streamrestore.video.writer import VideoWriter

        t0 = time.perf_counter()
        self._begin(dst)
        info = probe(plan.src, deinterlace=self.deinterlace)  # the frames the chunks were restored from
        i = 0
        with VideoWriter(dst, info, self._settings(), audio_from=plan.src, force=True,
                         comment=restored_comment()) as writer:
            for part in parts:
                types = json.loads(_types_path(Path(part)).read_text())
                with open_local_media(part) as c:
                    for k, frame in enumerate(c.decode(video=0)):
                        if i >= plan.frames:
                            raise RuntimeError(f"{part}: more frames than the input has")
                        frame.pts, frame.time_base = plan.pts[i], info.time_base
                        frame.duration = plan.durations[i]
                        frame.pict_type = types[k]
                        writer.write(frame)
                        i += 1
                        self._frame_done()
            if i != plan.frames:
                raise RuntimeError(f"joining {plan.src}: {i} frames in the chunks, the input has {plan.frames}")
        return {"frames": i, "seconds": time.perf_counter() - t0, "warnings": list(writer.notes)}


# --- the driver -----------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What a batch did: output per input that succeeded, error per input that failed."""

    succeeded: dict[str, str] = field(default_factory=dict)  # input -> output
    failed: dict[str, str] = field(default_factory=dict)  # input -> error
    skipped: list[str] = field(default_factory=list)  # done before (resume)
    frames: int = 0  # frames restored in this run (a photo's one frame too)
    photos: int = 0  # of those, photos
    seconds: float = 0.0
    engine: str = "ray"
    #: with ``adapt``: person -> seconds spent adapting to their photos (0: loaded from the cache;
    #: None: not adapted, too few photos)
    adapted: dict[str, float | None] = field(default_factory=dict)
    #: input -> what its output could not keep or its user should know (the main command's
    #: ``warning:`` lines), for inputs that have any
    warnings: dict[str, list[str]] = field(default_factory=dict)
    #: input -> why no face of it was changed ("no face found", "2 clean left as they were"), for the inputs
    #: run whole this time whose faces all stayed as they were: "3 succeeded; 120 frames and 1 photo restored"
    #: hid that nothing was (unusual U3)
    unchanged: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        done = len(self.succeeded)
        videos = self.frames - self.photos
        restored = " and ".join([f"{videos} frame{'s' if videos != 1 else ''}"] * bool(videos or not self.photos)
                                + [f"{self.photos} photo{'s' if self.photos != 1 else ''}"] * bool(self.photos))
        lines = [f"batch: {done + len(self.failed)} input(s): {done} succeeded "
                 f"({len(self.skipped)} already done), {len(self.failed)} failed; "
                 f"{restored} restored in {self.seconds:.1f} s ({self.engine})"]
        if self.adapted:
            lines.append("adapted: " + ", ".join(
                f"{name} (not adapted: too few photos)" if seconds is None
                else f"{name} ({'from the cache' if seconds == 0 else f'{seconds:.0f} s'})"
                for name, seconds in self.adapted.items()))
        for src, err in self.failed.items():
            lines.append(f"  failed: {src}: {err}")
        if self.unchanged:
            lines.append(f"  no face was changed in {len(self.unchanged)} of the inputs done (their faces as they "
                         "were; videos encoded again):")
            lines.extend(f"    {src}: {why}" for src, why in self.unchanged.items())
        # set -> the inputs no face of which matched it, and the words of the one whose closest face scored highest
        unmatched: dict[str, tuple[list[str], str, str]] = {}
        for src, said in self.warnings.items():
            for text in said:
                name = _set_matched_by_no_face(text)
                if name is None:
                    lines.append(f"  warning: {src}: {text}")
                    continue
                where, best, closest = unmatched.get(name, ([], text, src))
                if _closest_score(text) > _closest_score(best):
                    best, closest = text, src
                unmatched[name] = ([*where, src], best, closest)
        # (a wedding card's 200 clips, most without the bride: a 300-character line each; said once a person)
        inputs = len(self.succeeded)  # (those already done among them)
        for name, (where, text, closest) in unmatched.items():
            if len(where) == 1:
                lines.append(f"  warning: {where[0]}: {text}")
            elif len(where) >= inputs:
                lines.append(f"  warning: none of the {len(where)} inputs (the closest face in {closest}): {text}")
            else:
                shown = ", ".join(where[:SUMMARY_INPUTS]) + (f" and {len(where) - SUMMARY_INPUTS} more"
                                                            if len(where) > SUMMARY_INPUTS else "")
                lines.append(f"  no face matched {name}'s photos in {len(where)} of the {inputs} inputs ({shown}): "
                             f"not in them, or not recognised there (each input's record in {MANIFEST_NAME} gives "
                             "its scores)")
        return "\n".join(map(one_line, lines))  # (names of files and people: a line each, see errors.one_line)


#: inputs a batch's summary names in a line about many
SUMMARY_INPUTS = 3


def _closest_score(warning: str) -> float:
    """The closest face's score a "no face matched" warning gives (-inf where it gives none)."""
    import re

    score = re.search(r"scored (-?[0-9.]+)", warning)
    return float(score.group(1)) if score else float("-inf")


def _set_matched_by_no_face(warning: str) -> str | None:
    """The reference set a run's warning says no face matched (``run.NO_FACE_MATCHED``), else None."""
    import re

    from streamrestore.run import NO_FACE_MATCHED

    name = next(iter(re.findall(r"^no face matched (.+?)'s photos", warning)), None)
    return name if name is not None and warning.startswith(NO_FACE_MATCHED.format(name=name)) else None


def _digest_of(record: object) -> str:
    """A short digest of a JSON-able record (which reference photos a batch used), for its settings."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def _parts_kept(out_dir: Path) -> str:
    """What of the long videos' finished chunks a stopped batch keeps, and where (", and 3 finished chunks
    of long videos: 41 MB of lossless video in OUT/.streamrestore-parts, which a rerun joins, or delete it"),
    "" where none: the most faithful copy of the footage there is, which the output folder's listing hides."""
    parts = out_dir / PARTS_DIR
    try:
        chunks = [path for path in parts.rglob("chunk-*") if path.suffix != ".json" and path.is_file()]
        size = sum(path.stat().st_size for path in chunks)
    except OSError:
        return ""
    if not chunks:
        return ""
    return (f", and {len(chunks)} finished chunk{'s' if len(chunks) != 1 else ''} of long videos: "
            f"{size / 1e6:.1f} MB of lossless video in {parts}, which a rerun joins (or delete that folder)")


class _Progress:
    def __init__(self, enabled: bool, interval: float | None = None):
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self.start = time.monotonic()
        #: seconds without a line after which the pieces under way are said (:meth:`due`; None:
        #: :data:`UNDER_WAY_LINE_SECONDS`)
        self.interval = UNDER_WAY_LINE_SECONDS if interval is None else interval
        self._last = self.start
        self.photos_only = False  # every input is a photo (set by the planning)
        self.earlier = 0  # frames of the count an earlier run restored (finished chunks): not in the rate
        #: frames restored so far of each piece not finished yet, as its worker last said
        #: (counted in every line, until the piece is done or failed)
        self.under_way: dict[Any, int] = {}
        #: whether lines carry the count: from the end of the planning, when the total is known (an input
        #: already done said "0/90" of one input's frames, then "/114")
        self.counting = False
        self._shown = 0  # the count said last: never said smaller (a piece tried again starts at 0)

    def drop(self, frames: int) -> None:
        """``frames`` of the total will not be restored (a piece failed for good): the total and the count said
        so far no longer hold them."""
        self.total = max(0, self.total - frames)
        self._shown = 0

    def due(self) -> float | None:
        """Seconds until the pieces under way are to be said (0: now), None when nothing is said."""
        if not self.enabled:
            return None
        return max(0.0, self._last + self.interval - time.monotonic())

    def passed(self) -> None:
        """Nothing was worth a line now: the pieces under way are said again an interval on."""
        self._last = time.monotonic()

    def line(self, text: str, frames: int = 0, *, earlier: bool = False) -> None:
        """Says ``text`` with the count so far; ``frames`` done with it (``earlier``: by an earlier run)."""
        self.done += frames
        self.earlier += frames if earlier else 0
        if not self.enabled:
            return
        now = self._last = time.monotonic()
        if not self.total or not self.counting:
            print(one_line(f"batch: {text}"), file=sys.stderr, flush=True)
            return
        elapsed = now - self.start
        actual = min(self.total, self.done + sum(self.under_way.values()))
        done = self._shown = max(self._shown, actual)
        # the rate and the time left from the frames actually done (the count held while a piece is redone
        # would say both too high)
        fps = (actual - self.earlier) / elapsed if elapsed > 0 else 0.0
        # a batch of photos only counts photos (each is one frame of the count)
        unit, rate = ("photos", f"{fps * 60:.1f} a minute") if self.photos_only else ("frames", f"{fps:.1f} fps")
        where = f"{done}/{self.total} {unit} ({100.0 * done / max(1, self.total):.0f}%), {rate}"
        if fps > 0 and self.total > done:
            left = int((self.total - actual) / fps)
            where += f", ETA {left // 60}:{left % 60:02d}"
        print(one_line(f"batch: {where}: {text}"), file=sys.stderr, flush=True)


def _faces_said(info: dict) -> str:
    """What a whole input's run did to faces, for its progress line ("" when not known): "12 faces
    restored, ", the quality gate's clean ones (and too dark or flat to judge) and those left alone (``--unmatched skip``,
    ``--max-faces``) said apart, or "no face found, ". (A chunked input's are not said: a chunk's
    counts would take in the warm-up frames it drops.)"""
    from streamrestore.run import and_list, gate_left_as_they_were

    faces, clean, seen = info.get("faces"), info.get("clean") or 0, info.get("seen")
    dim = info.get("dim") or 0  # (of the clean ones: too dark or flat to judge)
    tinted = info.get("tinted") or 0  # (of the dim ones: under one strong colour of light)
    grainy = info.get("grainy") or 0  # (of the clean ones, not dim: too grainy to judge)
    if faces is None or seen is None:
        return ""
    if not seen:
        return "no face found, "
    strength = info.get("strength", 1.0)
    if strength == 0.0:  # (none changed, whatever the quality gate found)
        return f"{faces} face{'s' if faces != 1 else ''} left as {'it was' if faces == 1 else 'they were'} " \
               f"(--strength 0){f' and {seen - faces} left alone' if seen > faces else ''}, "
    weaker = f" at strength {strength:g}" if strength < 1.0 else ""
    said = [f"{faces - clean} face{'s' if faces - clean != 1 else ''} restored{weaker}",
            *gate_left_as_they_were(clean, dim, tinted, grainy)]
    if seen > faces:
        said.append(f"{seen - faces} left alone")
    return and_list(said) + ", "


def _unchanged_because(info: dict) -> str:
    """Why no face of a whole input's run was changed, as :func:`_faces_said` says it ("no face found"); ""
    where some face was, or the counts are not known."""
    faces, clean, seen = info.get("faces"), info.get("clean") or 0, info.get("seen")
    if faces is None or seen is None:
        return ""
    if seen and faces - clean > 0 and info.get("strength", 1.0) != 0.0:
        return ""
    return _faces_said(info).removesuffix(", ")


def _fail_hooks(env: str = FAIL_ENV) -> set[str]:
    return {s.strip() for s in os.environ.get(env, "").split(",") if s.strip()}


def _die_once(marker: str | None) -> None:
    """Test hook (:data:`DIE_ENV`): the first call with ``marker`` (a path) creates it and ends
    this process at once, as a crash or an OOM kill would; later calls (another actor) go on."""
    if marker is None:
        return
    try:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


def _injected(hooks: set[str], src: str, chunk) -> bool:
    name = Path(src).name
    return f"{name}:{chunk}" in hooks or f"{name}:*" in hooks


#: chunks a warning of one kind is said for, each with its own figures; the rest are counted on one line
#: (a long video's chunks each warned of its own poorly matched track: dozens of lines)
CHUNK_WARNINGS_SAID = 3


def _chunks_warnings(chunks: list[list[str]], matched: Iterable[str] = ()) -> list[str]:
    """One input's warnings from its chunks' (in order): a warning that several chunks give (the input
    is interlaced) once, as it is; one chunk's own prefixed with where it is ("chunk 3 of 8: ...": its
    counts and track numbers are that chunk's), for at most :data:`CHUNK_WARNINGS_SAID` chunks of one
    kind (the same words, other figures), the rest counted. That no face matched a reference set is
    the input's when no chunk matched it: said once, with the best score of any chunk; it is left
    out for the sets some chunk matched (``matched``): the person is in the input, in other chunks."""
    import re


    given: dict[str, list[int]] = {}
    unmatched: dict[str, tuple[float, str]] = {}  # set name -> (best score, its warning)
    for i, said in enumerate(chunks):
        for text in said:
            name = _set_matched_by_no_face(text)
            if name is not None:
                if name not in matched:
                    best = _closest_score(text)
                    if name not in unmatched or best > unmatched[name][0]:
                        unmatched[name] = (best, text)
                continue
            given.setdefault(text, []).append(i)
    out = [text for _, text in unmatched.values()]
    # a warning's words without its figures (scores, counts, track numbers: numbers that stand alone; a
    # set's name, digits and all, stays) -> the chunks that gave it, each with its lines
    kinds: dict[str, dict[int, list[str]]] = {}
    for text, where in given.items():
        if len(where) > 1:
            out.append(text)
        else:
            kind = re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", "#", text)
            kinds.setdefault(kind, {}).setdefault(where[0], []).append(
                f"chunk {where[0] + 1} of {len(chunks)}: {text}")
    for by_chunk in kinds.values():
        said = sorted(by_chunk)[:CHUNK_WARNINGS_SAID]
        out += [line for i in said for line in by_chunk[i]]
        rest = len(by_chunk) - len(said)
        if rest:
            out.append(f"... and the same of {rest} more chunk{'s' if rest > 1 else ''} of {len(chunks)} "
                       "(each with its own figures)")
    return out


@contextlib.contextmanager
def _stop_signal_handlers_kept():
    """The stop signals' handlers as they were before the block: ``ray.init`` installs its own for
    SIGTERM, which ended the batch with a native stack dump (exit 134) instead of the clean-up and
    exit 143 of every other command, and left the local Ray's workers restoring on."""
    import signal
    import threading

    from streamrestore.stop_signals import STOP_SIGNALS

    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def _without_token_enabled_notice():
    """Leaves out Ray's WARNING that token authentication *is enabled* (its secure default, on every
    start of a local Ray, among the batch's own lines); the one that says it is disabled stays."""

    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")

    notices = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notices.addFilter(drop)
    try:
        yield
    finally:
        notices.removeFilter(drop)


def _keep_ray_token_private() -> None:
    """Makes Ray's folder (``~/.ray``, made here where missing) and its token (``auth_token``, which Ray writes
    readable by all: 0644) this user's alone: with the token any user of the machine could join this user's
    Ray, whose services listen on every interface, and run code as them."""
    with contextlib.suppress(OSError, RuntimeError, AttributeError):  # (no home; not ours; os.getuid: POSIX)
        folder = Path.home() / ".ray"  # (RuntimeError: no HOME, and a user id without a passwd entry)
        folder.mkdir(mode=0o700, exist_ok=True)
        for path, private in ((folder, 0o700), (folder / "auth_token", 0o600)):
            if path.exists():
                held = path.stat()
                if held.st_uid == os.getuid() and held.st_mode & 0o077:
                    os.chmod(path, private)


#: what Ray adds to its session folder for a socket (``/session_<date>_<pid>/sockets/plasma_store``), and the
#: most a socket's path may hold (Linux 107 bytes; macOS and the BSDs 103)
RAY_SOCKET_TAIL, SOCKET_PATH_MOST = 62, 107 if sys.platform.startswith("linux") else 103


def _private_ray_folder() -> Path | None:
    """Where a Ray started here keeps its sessions (logs, sockets): ``streamrestore-ray-<uid>/sessions`` in the
    temporary folder, under a folder this user's alone (:func:`streamrestore.cache_dir.private_temporary_folder`),
    where Ray's own ``/tmp/ray`` is shared by every user and its logs name the inputs and the reference photos.
    Ray makes the folder it is given writable by all (0777): the one above it keeps others out. None (Ray's own
    place) where its socket paths would not fit (a long ``$TMPDIR``, macOS's temporary folder)."""
    from streamrestore.cache_dir import private_temporary_folder, temporary_folder_path

    if len(str(temporary_folder_path("streamrestore-ray") / "sessions")) + RAY_SOCKET_TAIL > SOCKET_PATH_MOST:
        log.info("batch: Ray keeps its session logs in its own folder (a private one's socket paths would be too "
                 "long under %s)", temporary_folder_path("streamrestore-ray").parent)
        return None
    return private_temporary_folder("streamrestore-ray") / "sessions"


@contextlib.contextmanager
def _plain_worker_prefixes():
    """Ray prints the workers' lines behind a colour-coded "(BatchWorker pid=...)": into a file or a
    pipe (a scheduler's log) the colour codes are noise (RAY_COLOR_PREFIX=0, unless set)."""
    plain = not sys.stderr.isatty() and "RAY_COLOR_PREFIX" not in os.environ
    if plain:
        os.environ["RAY_COLOR_PREFIX"] = "0"
    try:
        yield
    finally:
        if plain:
            os.environ.pop("RAY_COLOR_PREFIX", None)


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 when there is none)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def parts_bytes(width: int, height: int, pix_fmt: str, frames: int) -> int:
    """About how many bytes ``frames`` frames of a chunk part take (:data:`PART_BYTES_SHARE` of the
    raw picture in ``pix_fmt``; 8-bit 4:2:0 where FFmpeg does not know it)."""
    import av

    try:
        raw = sum(plane.buffer_size for plane in av.VideoFrame(width, height, pix_fmt).planes)
    except (ValueError, av.error.FFmpegError):
        raw = int(width * height * 1.5)
    return int(PART_BYTES_SHARE * raw * frames)


def _why_done_again(rec: dict, ident: dict, dst: Path, tags_left_in: bool) -> str:
    """Why an input an earlier batch finished (its record ``rec``) is restored again ("" where it is not): it
    changed since (``ident``, :func:`_file_ident`), its output is gone or short, or it keeps tags this run strips."""
    if not ident:
        return "the input is gone"
    if "input_size" not in rec:
        return "its record, of an older version, does not say what the input was"
    if rec.get("input_size") != ident.get("size") or rec.get("input_mtime") != ident.get("mtime"):
        return "the input changed since (its size or modification time: a copy or touch counts)"
    if not dst.exists():
        return f"its output {dst.name} is gone"
    if count_frames(dst) != rec.get("frames"):
        return f"its output {dst.name} does not hold the input's {rec.get('frames')} frames"
    if tags_left_in:
        return f"its output {dst.name} keeps the input's metadata, which this run strips"
    return ""


def _file_ident(path: Path) -> dict:
    """What tells an input file changed since its record: its size and modification time ({}: gone)."""
    stat = path.stat() if path.is_file() else None
    return {"size": stat.st_size, "mtime": stat.st_mtime} if stat else {}


def _workers_that_fit(workers: int, nodes: list[dict], cpus_each: int, gpus_each: float) -> int:
    """``workers``, at most as many as Ray's nodes have room for now (``nodes``: each alive
    node's resources): an actor Ray cannot place waits for resources that never come, and the
    batch waited with it, silently, for ever (``--workers 4`` or ``--torch-threads 3`` on 2 cores;
    ``--torch-threads 6`` on two 4-CPU nodes, whose 8 CPUs no one actor can have).

    Raises:
        UserError: not even one worker fits on any node.
    """
    def room(node: dict) -> int:
        fit = int(float(node.get("CPU", 0)) // cpus_each)
        return min(fit, int(float(node.get("GPU", 0)) // gpus_each)) if gpus_each else fit

    cpus = sum(float(node.get("CPU", 0)) for node in nodes)
    gpus = sum(float(node.get("GPU", 0)) for node in nodes)
    most = max((float(node.get("CPU", 0)) for node in nodes), default=0.0)
    if cpus_each > most:
        where = "Ray's largest node has" if len(nodes) > 1 else "Ray has"
        raise UserError(f"--torch-threads {cpus_each} gives each worker {cpus_each} CPUs; {where} {most:g}: "
                        f"give --torch-threads {max(1, int(most))} or less")
    fit = sum(room(node) for node in nodes)
    if gpus_each and not fit:
        raise UserError(f"each worker asks for {gpus_each:g} GPU; no node of Ray's has that ({gpus:g} in all)")
    if workers > fit:
        log.warning(f"--workers {workers}: Ray has room for {fit} ({cpus:g} CPUs"
                    f"{f', {gpus:g} GPUs' if gpus_each else ''}, {cpus_each} CPU{'s' if cpus_each > 1 else ''}"
                    f"{f' and {gpus_each:g} GPU' if gpus_each else ''} each); {fit} work")
        return fit
    return workers


#: seconds a batch waits for Ray to place a worker where none is at work, loaded or loading (its CPUs or GPUs
#: held by other work, its node lost) before it ends, saying so (exit 75: a rerun may find room); a worker Ray
#: has placed may load as long as it needs (a download, --adapt)
WORKER_PLACE_SECONDS = 600.0


class WorkersLostError(UserError):
    """No worker of a Ray batch is left to do its work: each died or failed while loading."""

    exit_code = 1


class _WorkerPool:
    """The Ray actors of a batch that are not at work, and where each stands: placing (Ray has not placed it
    yet), loading (placed or not, its models not loaded yet), idle (loaded, waiting for a piece)."""

    def __init__(self, ray, make: Callable[[], Any]) -> None:
        self.ray, self.make = ray, make
        self.idle: list = []
        self.loading: dict = {}  # the ref of its load() -> actor
        self.placing: dict = {}  # the ref of its placed() -> actor, until Ray has placed it
        self.lost: list[str] = []  # why each worker that died or failed while loading did
        self.died = False  # whether one of them died (its process gone: out of memory, a lost node)
        self.any_loaded = False

    def start(self, count: int) -> None:
        """Starts ``count`` new actors."""
        for _ in range(count):
            actor = self.make()
            self.placing[actor.placed.remote()] = actor
            self.loading[actor.load.remote()] = actor

    def refs(self) -> list:
        """What to wait for: each actor's placing and loading."""
        return [*self.loading, *self.placing]

    @property
    def none_placed(self) -> bool:
        """Whether no actor that is loading has been placed (Ray holds them all back)."""
        placing = {id(actor) for actor in self.placing.values()}
        return bool(self.loading) and all(id(actor) in placing for actor in self.loading.values())

    def news(self, ref) -> str:
        """Takes the outcome ``ref`` (one of :meth:`refs`): an actor placed, or loaded (then idle). What to say
        where it died or failed while loading ("" otherwise); it is ended, not replaced (the same would again).
        A mistake the first to load makes (an unknown model, no network for its download), every worker makes:
        it ends the batch with its own message, before any input is given to a worker that cannot load.

        Raises:
            UserError: that first mistake (the actors ended).
        """
        if ref in self.placing:
            del self.placing[ref]
            return ""
        actor = self.loading.pop(ref)
        self.placing = {key: other for key, other in self.placing.items() if other is not actor}
        try:
            problem = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # (died: out of memory, a lost node; or raised: a GPU's memory)
            self.ray.kill(actor, no_restart=True)
            self.lost.append(_error_text(exc))
            died = isinstance(exc, self.ray.exceptions.RayActorError)
            self.died = self.died or died
            return f"a worker {'died' if died else 'failed'} while loading the models ({_error_text(exc)})"
        if problem is not None and not self.any_loaded:
            self.end([actor])
            said = type(problem)(f"the workers could not start: {problem}")
            said.several_lines = getattr(problem, "several_lines", False)  # (a list of missing files)
            raise said from None
        if problem is not None:  # (one node's: another worker loaded)
            self.ray.kill(actor, no_restart=True)
            self.lost.append(one_line(str(problem)))
            return f"a worker could not start ({one_line(str(problem))})"
        self.any_loaded = True
        self.idle.append(actor)
        return ""

    def waiting_text(self) -> str:
        """A line while no piece is under way: the actors loading, and those Ray has not placed."""
        placing = len(self.placing)
        loaded = len(self.loading) - placing
        said = [f"{loaded} worker(s) loading the models"] if loaded else []
        if placing:
            said.append(f"{placing} worker(s) waiting for Ray to place them ({_free_resources_text(self.ray)})")
        return "; ".join(said) or "waiting for the workers"

    def lost_text(self) -> str:
        """The reasons of :attr:`lost`, each once with its count."""
        counted = collections.Counter(self.lost)
        return "; ".join(f"{count}x {why}" if count > 1 else why for why, count in counted.items()) or "none said"

    def end(self, others: Iterable = ()) -> None:
        """Ends every actor of the pool (and ``others``: those at work), and forgets them."""
        for actor in [*self.idle, *self.loading.values(), *others]:
            self.ray.kill(actor, no_restart=True)
        self.idle.clear()
        self.loading.clear()
        self.placing.clear()


def _free_resources_text(ray) -> str:
    """What Ray has free now, for a line about workers waiting to start ("0 of 2 CPUs free")."""
    try:
        free, total = ray.available_resources(), ray.cluster_resources()
    except Exception:  # (a lost head: the wait says the rest)
        return "Ray's free resources unknown"
    said = [f"{free.get(kind, 0):g} of {total[kind]:g} {kind}s free" for kind in ("CPU", "GPU") if total.get(kind)]
    return ", ".join(said) or "no CPUs in the cluster"


def _in_chain(exc: BaseException, found: Callable[[BaseException], bool]) -> bool:
    """Whether ``found`` holds for ``exc`` or for what it wraps: a Ray task's error (its ``cause``), a cause or a
    context its raiser did not suppress (as :func:`streamrestore.errors.out_of_memory` follows them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if found(current):
            return True
        cause = getattr(current, "cause", None)  # (ray.exceptions.RayTaskError)
        current = cause if isinstance(cause, BaseException) else \
            current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def _users_error(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps) a UserError: the same input and options give it again."""
    return _in_chain(exc, lambda error: isinstance(error, UserError))


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the disk or the user's quota is full."""
    return _in_chain(exc, lambda error: (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))
                     or "No space left on device" in str(error) or "Disk quota exceeded" in str(error))


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError wraps the worker's exception
    exc = cause if isinstance(cause, BaseException) else exc
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


def run(
    inputs,
    *,
    refs=(),
    out_dir,
    ray: str | None = "local",
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    retries: int = 2,
    model: str = "lite",
    device: str = "auto",
    detector: str = "auto",
    face_models: str | os.PathLike | None = None,
    backend: str = "auto",
    fast_vae: str | os.PathLike | None = None,
    max_faces: int | None = None,
    unmatched: str = "restore",
    detect_every: int = 3,
    detect_size: int | None = None,
    temporal=None,
    reference_detail=None,
    identity_gate=None,
    quality_gate=None,
    match_threshold: float | None = None,
    crop_resolution: int | str | None = "auto",
    adapt=None,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    tune: str | None = None,
    strip_metadata: bool = False,
    torch_threads: int = 1,
    progress: bool = True,
    ray_init: dict | None = None,
    deinterlace: bool = True,
    subfolders: dict | None = None,
) -> BatchResult:
    """Restores every file of ``inputs`` (paths) into ``out_dir`` (``<stem>.restored.<ext>``; an input of
    ``subfolders`` into that folder of ``out_dir``, made where missing: :func:`output_subfolders`).

    ``ray``: ``"local"`` starts Ray on this machine (all its CPUs and GPUs, a
    :data:`LOCAL_OBJECT_STORE_MB` object store, unless ``ray_init`` says otherwise; an already
    initialised Ray is used as it is), ``"auto"`` or an address
    (``HOST:6379``, ``ray://...``) joins a running cluster, None (or ``"none"``) runs in this process
    without Ray (as when Ray is not installed). ``workers``: actors in the pool (default: the GPUs with
    ``gpus_per_worker`` on CUDA, else CPUs / ``torch_threads``). ``gpus_per_worker``: GPUs each
    actor reserves (default 1 on CUDA, 0 on CPU; fractions share a GPU). ``ray_init``: extra
    ``ray.init`` arguments (e.g. ``num_cpus``, ``object_store_memory``).
    ``fast_vae``: decode with TAESD, as the main command's ``--fast-vae`` (the path must exist on
    every worker's machine, as ``face_models``). ``temporal``,
    ``reference_detail``, ``identity_gate``, ``crop_resolution``, ``detect_size``: the ``PipelineConfig`` fields of
    those names (None: their defaults); ``quality_gate``: its ``gate``; ``match_threshold``: its own. ``adapt``: an :class:`~streamrestore.model.adapt.AdaptConfig`
    to fine-tune the model on each person's photos (as the main command's ``--adapt``): on Ray one
    worker adapts first, and the others load its fine-tunes instead of adapting again (on their own
    machines too); ignored without ``refs``. ``deinterlace``: as :func:`~streamrestore.api.restore_video`'s, True or
    False (not ``"fields"``).
    ``codec``, ``crf``, ``preset``, ``pix_fmt``, ``tune``, ``strip_metadata``: the outputs'
    :class:`~streamrestore.video.writer.EncoderSettings` (``strip_metadata`` a photo's too).

    Returns a :class:`BatchResult` (``exit_code`` 0 when all succeeded, else 1). Usage mistakes
    raise :class:`~streamrestore.errors.UserError` before anything runs.
    """
    from streamrestore.api import check_model_options, check_references
    from streamrestore.video.writer import EncoderSettings, default_output_path

    started = time.perf_counter()
    ray = None if ray == "none" else ray  # (the CLI's word for it)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UserError("no input files given (INPUT..., --list FILE or a folder of videos or photos)")
    missing = [p for p in inputs if not p.exists()]
    if len(missing) == len(inputs):  # a mistyped path: said at once, nothing started or written
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise UserError(f"no such file: {', '.join(map(str, missing[:3]))}{more}")
    if not chunk_seconds > 0:
        raise UserError(f"--chunk-seconds must be > 0, got {chunk_seconds}")
    if retries < 0:
        raise UserError(f"--retries must be 0 or more, got {retries}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker}")
    if torch_threads is not None and torch_threads < 1:
        raise UserError(f"--torch-threads must be at least 1, got {torch_threads}")
    config = {"max_faces": max_faces, "unmatched": unmatched, "detect_every": detect_every,
              "crop_resolution": crop_resolution}
    # (given only: a batch folder made before these options records no such field, and reads as unchanged)
    for name, value in (("temporal", temporal), ("reference_detail", reference_detail),
                        ("identity_gate", identity_gate), ("gate", quality_gate), ("match_threshold", match_threshold),
                        ("detect_size", detect_size)):
        if value is not None:
            config[name] = value
    from streamrestore.pipeline import PipelineConfig

    try:  # here, not in every worker, where a ValueError would only read as "the actor died"
        PipelineConfig(**config)
    except ValueError as exc:
        raise UserError(f"bad pipeline option: {exc}") from None
    if deinterlace not in (True, False):  # (restore_video's "fields": chunks count the input's frames from packets)
        raise UserError(f"deinterlace={deinterlace!r}: a batch deinterlaces one frame per frame (True) or not (False); "
                        "a frame per field is the main command's --field-rate")
    encoder = {"codec": codec, "crf": crf, "preset": preset, "pix_fmt": pix_fmt, "tune": tune}
    if strip_metadata:  # (given only: a batch folder made before the option records no such field)
        encoder["strip_metadata"] = True
    try:  # a format, crf or preset an output's codec refuses would fail that input in the workers
        settings = EncoderSettings(**encoder)
        from streamrestore.images import is_image  # noqa: PLC0415

        for suffix in sorted({p.suffix.lower() for p in inputs if p.is_file() and not is_image(p)} or {".mp4"}):
            settings.check_for(settings.codec_for(default_output_path(Path(f"in{suffix}"))))
    except ValueError as exc:
        raise UserError(f"bad encoder option: {exc}") from None
    if ray in (None, "local"):  # on a cluster the driver may have no GPU; the workers check theirs
        check_model_options(model, device=device, fast_vae=fast_vae)
    check_references(refs, unmatched=unmatched)
    out_dir = Path(out_dir)
    outputs: dict[Path, Path] = {}  # (before the output folder and its record are made: a clash leaves nothing)
    for src in inputs:
        dst = output_path(out_dir, src, (subfolders or {}).get(src))
        if dst in outputs.values():
            other = next(s for s, d in outputs.items() if d == dst)
            more = "" if subfolders else ", or give their folders with --recursive (subfolders kept under OUTDIR)"
            raise UserError(f"{src} and {other} would both be written to {dst}; rename one or batch them "
                            f"separately{more}")
        outputs[src] = dst
    try:
        for folder in sorted({dst.parent for dst in outputs.values()} | {out_dir}):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {exc.filename or out_dir}: {exc.strerror or exc}") from None
    try:  # (the record of the batch goes there first: a folder it cannot be written to ends here, not in a traceback)
        with open(out_dir / MANIFEST_NAME, "a"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}; choose a folder you can "
                        "write to") from None
    from streamrestore.output_file import hold_record, release_temp, temp_beside

    temp_beside(out_dir / MANIFEST_NAME).unlink()  # (a record it can append to, in a folder it cannot create files in)
    try:  # (two runs into one folder did all the work twice, each writing over the other: one at a time)
        held = hold_record(out_dir / MANIFEST_NAME)
    except BlockingIOError:
        raise TemporaryError(f"another streamrestore batch is writing to {out_dir}; wait for it to finish (a rerun "
                             "then finds its outputs done), or write to another folder") from None
    try:
        options = {"model": model, "device": device, "detector": detector, "face_models": face_models,
                   "backend": backend, "config": config}
        if fast_vae is not None:
            options["fast_vae"] = str(fast_vae)
        ref_specs = list(map(str, refs)) if not isinstance(refs, (str, Path)) else [str(refs)]
        if adapt is not None and ref_specs:
            options["adapt"] = adapt
        worker_args = {"refs": ref_specs, "options": options, "encoder": encoder, "torch_threads": torch_threads,
                       "deinterlace": deinterlace}
        ray_module = None
        if ray is not None:
            try:
                import ray as ray_module  # noqa: F811
            except ImportError as exc:
                if ray != "local":  # (a cluster asked for by name: not run here alone, one by one)
                    raise UserError(f'--ray {ray}: joining a Ray cluster needs Ray on this machine: pip install '
                                    f'"streamrestore[batch]" ({exc})') from None
                log.warning(INSTALL_HINT)
        result = BatchResult(engine="ray" if ray_module is not None else "in-process")
        manifest = Manifest(out_dir / MANIFEST_NAME)
        bar = _Progress(progress)
        # what an output was made with, recorded with it: a rerun with other settings says it keeps the old output
        from streamrestore.faces.references import reference_files_record  # noqa: PLC0415
        from streamrestore.model.registry import model_provenance  # noqa: PLC0415

        model_sha256 = model_provenance(str(model))["model_sha256"]
        settings = {"model": str(model), "refs": ", ".join(ref_specs) or "none", "adapt": str(options.get("adapt")),
                    # (the file's bytes: "lite" names another model after an upgrade, a path another checkpoint)
                    "model file": model_sha256[:16] if model_sha256 else "none",
                    "fast vae": str(fast_vae), "detector": str(detector), "face models": str(face_models),
                    "pipeline": repr(sorted(config.items())), "deinterlace": str(deinterlace),
                    "metadata": "stripped" if strip_metadata else "kept",
                    # (the photos themselves: other photos in the same folder made the same "refs")
                    "reference files": _digest_of(reference_files_record(ref_specs)) if ref_specs else "none"}
        state = _Batch(inputs, outputs, out_dir, manifest, result, bar, chunk_seconds if ray_module else None, retries)
        state.settings, state.encoder = settings, EncoderSettings(**encoder)
        try:
            state.plan_all()
            if state.queue:
                if ray_module is not None:
                    state.run_ray(ray_module, ray, worker_args, workers, gpus_per_worker, device, torch_threads, ray_init)
                else:
                    state.run_here(worker_args)
        except KeyboardInterrupt as exc:  # (Ctrl-C, a stop signal): said by the CLI with what was kept
            state.remove_stale_temps()  # (the workers are gone: a Ray started here is shut down)
            state.adopt_finished()
            done = len(result.succeeded)
            exc.kept = (f"{done} output{'s' if done != 1 else ''} finished in {out_dir} {'are' if done != 1 else 'is'} kept"
                        f"{_parts_kept(out_dir)}; a rerun resumes there")  # type: ignore[attr-defined]
            raise
        except Exception:  # (a run ended by an error, a full disk's: its half-written files go, not to keep it full)
            with contextlib.suppress(OSError):  # (the error that ended the run is the one said)
                state.remove_stale_temps()
            raise
        with contextlib.suppress(OSError):  # (a worker killed mid-piece, for memory say, left its half-written file:
            state.remove_stale_temps()      # every piece is done or failed now, so none is written any more)
        result.seconds = time.perf_counter() - started
        return result
    finally:
        release_temp(held)


def part_settings(made: dict[str, str]) -> dict[str, str]:
    """Of an output's settings (:meth:`_Batch.settings_of`, this run's or a record's), those a chunk part depends on:
    not what only the join uses (the encoder's options, ``--strip-metadata``), nor paths as typed (``--refs anna/``
    and ``./anna`` are one folder, whose files' digest is kept; a model named by its file's digest), the
    face-models and fast-VAE paths resolved: a resume with another spelling made hours of parts again."""
    codec = made.get("codec")
    spelled = {"refs", "metadata"} | ({"model"} if made.get("model file", "none") != "none" else set())
    resolved = {name: str(Path(made[name]).expanduser().resolve()) for name in ("face models", "fast vae")
                if made.get(name, "None") != "None" and name in made}
    return {name: resolved.get(name, value) for name, value in made.items()
            if name not in spelled and (codec is None or not name.startswith(f"{codec} "))}


class _Batch:
    """One batch run's bookkeeping: plans, queue of pieces, manifest, results."""

    def __init__(self, inputs, outputs, out_dir, manifest, result, bar, chunk_seconds, retries):
        self.inputs, self.outputs, self.out_dir = inputs, outputs, out_dir
        # each input as the user named it (a link's own name, not its target's), by its resolved path
        self.names = {str(Path(src).resolve()): Path(src).name for src in inputs}
        self.manifest, self.result, self.bar = manifest, result, bar
        self.chunk_seconds, self.retries = chunk_seconds, retries
        self.plans: dict[str, Plan] = {}
        self.parts: dict[str, list[Path]] = {}
        self.remaining: dict[str, int] = {}  # chunks left per chunked input
        self.joining: dict = {}  # frames encoded so far by each join under way, as last said
        self.queue: deque = deque()  # ("whole", src) | ("chunk", src, i) | ("join", src)
        self.attempts: dict[tuple, int] = {}
        self.hooks = _fail_hooks()
        self.die_hooks = _fail_hooks(DIE_ENV)
        self.settings: dict[str, str] = {}  # what the outputs are made with (recorded in the manifest)
        self.encoder: Any = None  # the encoder settings given (an EncoderSettings; defaults resolved per output)

    # keys and paths
    @staticmethod
    def input_key(src: str) -> str:
        return f"input:{src}"

    def name_of(self, src: str) -> str:
        """The input's file name for progress lines, as given (``src`` is its resolved path)."""
        return self.names.get(src, Path(src).name)

    def chunk_key(self, src: str, i: int) -> str:
        a, b = self.plans[src].chunks[i]
        return f"chunk:{src}#{i}:{a}-{b}"

    def parts_folder(self, src: str) -> Path:
        """Where the chunk parts of the input ``src`` (resolved) are kept until joined."""
        return self.out_dir / PARTS_DIR / f"{Path(src).stem}-{hashlib.sha1(src.encode()).hexdigest()[:8]}"

    def part_path(self, src: str, i: int) -> Path:
        a, b = self.plans[src].chunks[i]
        return self.parts_folder(src) / f"chunk-{i:04d}-{a}-{b}.mkv"

    # planning
    def finished_meanwhile(self, src_path: Path, rec: dict, ident: dict) -> bool:
        """Whether a worker finished this whole input after the batch stopped without recording it
        (a stop signal lands while workers write; Ray ends them seconds later): its record is still
        pending or running, and its output is there, complete (written whole or not at all), with the
        planned frame count, of the same input."""
        dst = self.outputs[src_path]
        return (rec.get("state") in ("pending", "running") and rec.get("chunks") == 1 and rec.get("output") == str(dst)
                and rec.get("input_size") == ident.get("size") and rec.get("input_mtime") == ident.get("mtime")
                and dst.exists() and count_frames(dst) == rec.get("frames"))

    def adopt_finished(self) -> None:
        """After an interrupt: records as done, and counts, the inputs a worker finished meanwhile."""
        for src_path, dst in self.outputs.items():
            src = str(src_path.resolve())
            if src in self.result.succeeded or not src_path.is_file():
                continue
            if self.finished_meanwhile(src_path, self.manifest.get(self.input_key(src)), _file_ident(src_path)):
                self.manifest.update(self.input_key(src), state="done")
                self.result.succeeded[src] = str(dst)

    def settings_of(self, dst: Path, pix_fmt: str | None = None) -> dict[str, str]:
        """What the output ``dst`` of an input in ``pix_fmt`` (its stream's; None: unknown, an
        older manifest's) is made with: :attr:`settings` and, for a video, the encoder and its
        options with the defaults resolved (``--crf 16`` is x264's default, not a change)."""
        from streamrestore.images import is_image

        if self.encoder is None or is_image(dst):
            return dict(self.settings)
        codec = self.encoder.codec_for(dst, pix_fmt)
        return {**self.settings, "codec": codec, "pix_fmt": self.encoder.pix_fmt or "the input's",
                **{f"{codec} {k}": v for k, v in self.encoder.options_for(codec).items()}}

    def chunk_settings(self, dst: Path, pix_fmt: str | None) -> dict[str, str]:
        """What a chunk part of ``dst`` depends on: the model file, the reference files, the pipeline and the other
        restoring settings, and the part's pixel format (the codec and ``--pix-fmt`` choose it). Not what only the
        join uses (the encoder's options, ``--strip-metadata``), nor paths as typed (``--refs anna/`` and
        ``./anna`` are one folder; the files' digests say what they hold): a part made with these is joined as it
        is, where a resume with another spelling made hours of parts again."""
        return part_settings(self.settings_of(dst, pix_fmt))

    def settings_changed(self, recorded: dict | None, dst: Path, pix_fmt: str | None = None,
                         now: dict[str, str] | None = None) -> str | None:
        """The settings this run makes ``dst`` (of an input in ``pix_fmt``; ``now``: these settings, default
        :meth:`settings_of`) with otherwise than ``recorded`` (its output's or part's), as "name: then, now now";
        "" when the same. A setting an older record does not hold is not counted; None for a record with none at
        all (a batch of a version that kept none)."""
        if not recorded:
            return None
        now = self.settings_of(dst, pix_fmt) if now is None else now
        changed = [f"{name}: {recorded.get(name)}, now {value}" for name, value in now.items()
                   if recorded.get(name, value) != value]
        return "; ".join(changed)

    def remove_stale_temps(self) -> None:
        """Removes the temporary files of this batch's outputs and chunk parts that workers ended
        before their clean-up left (each Ctrl-C left one more, for ever); unfinished work is
        redone from the start, so none is ever used again."""
        from streamrestore.output_file import stale_temps

        temps = [temp for dst in self.outputs.values() for temp in stale_temps(dst)]
        for src_path in self.outputs:  # (each input's own parts folder: no other input's)
            temps += list(self.parts_folder(str(src_path.resolve())).glob(".chunk-*.partial.mkv"))
        for temp in set(temps):
            temp.unlink(missing_ok=True)

    def plan_all(self) -> None:
        from streamrestore.images import is_image
        from streamrestore.video.reader import probe

        self.remove_stale_temps()

        self.bar.photos_only = all(is_image(p) for p in self.inputs)
        parts_needed = 0  # (bytes)
        unrecorded: list[str] = []  # outputs kept whose records hold no settings (an older version's)
        for src_path in self.inputs:
            src = str(src_path.resolve())
            dst = self.outputs[src_path]
            rec = self.manifest.get(self.input_key(src))
            ident = _file_ident(src_path)
            if self.finished_meanwhile(src_path, rec, ident):
                rec = self.manifest.update(self.input_key(src), state="done")
            # (an output that kept the input's tags is made again where this run strips them: a privacy leak, not a
            # quality difference to keep and mention; an older record has no such field: kept)
            stripping = self.settings.get("metadata") == "stripped"
            tags_left_in = stripping and (rec.get("settings") or {}).get("metadata") != "stripped"
            redo = _why_done_again(rec, ident, dst, tags_left_in) if rec.get("state") == "done" else None
            if redo:  # (a farm's copy or touch of the inputs redid them, unsaid)
                self.bar.line(f"{src_path.name}: done by an earlier batch, restored again: {redo}")
            elif rec.get("state") == "done":
                self.result.succeeded[src] = str(dst)
                self.result.skipped.append(src)
                if rec.get("warnings"):
                    self.result.warnings[src] = rec["warnings"]
                self.bar.line(f"{src_path.name}: already done ({dst})")
                changed = self.settings_changed(rec.get("settings"), dst, rec.get("input_pix_fmt"))
                if changed is None:
                    unrecorded.append(dst.name)
                elif changed:
                    note = (f"kept from an earlier batch made with other settings ({changed}); delete {dst.name} to "
                            "have it made with these")
                    self.result.warnings[src] = [*self.result.warnings.get(src, []), note]
                continue
            owner = self.manifest.output_of(dst, self.input_key(src)) if dst.exists() else self.input_key(src)
            if owner != self.input_key(src):  # (never replaced: a file this batch did not write, or another input's)
                error = (f"{dst} exists and is {owner.removeprefix('input:')}'s output, from an earlier batch into "
                         "this folder: give this input another -o" if owner else
                         f"{dst} exists and this batch did not write it: move it away or give another -o")
                self.result.failed[src] = error
                self.bar.line(f"{src_path.name}: failed: {error}")
                continue
            try:
                plan = plan_input(src_path, self.chunk_seconds or float("inf"))
            except UserError as exc:
                self.manifest.update(self.input_key(src), state="failed", error=str(exc), output=str(dst),
                                     attempts=rec.get("attempts", 0) + 1)
                self.result.failed[src] = str(exc)
                self.bar.line(f"{src_path.name}: failed: {exc}")
                continue
            plan.src = src
            self.plans[src] = plan
            self.manifest.update(self.input_key(src), state="pending", output=str(dst), frames=plan.frames,
                                 chunks=len(plan.chunks), input_size=ident.get("size"),
                                 input_mtime=ident.get("mtime"), error=None, input_pix_fmt=plan.pix_fmt,
                                 settings=self.settings_of(dst, plan.pix_fmt))
            self.bar.total += plan.frames
            if len(plan.chunks) == 1:
                self.queue.append(("whole", src))
                continue
            self.parts[src] = [self.part_path(src, i) for i in range(len(plan.chunks))]
            self.parts[src][0].parent.mkdir(parents=True, exist_ok=True)
            left = 0
            frames_left = 0
            made_with = self.chunk_settings(dst, plan.pix_fmt)
            for i, (a, b) in enumerate(plan.chunks):
                key = self.chunk_key(src, i)
                crec, part = self.manifest.get(key), self.parts[src][i]
                if (crec.get("state") == "done" and part.exists() and _types_path(part).exists()
                        and crec.get("sha256") == sha256_of(part)
                        and count_frames(part) == b - a):
                    # (one output is never made of two models' or settings' pictures: a part made otherwise is
                    # made again, said, where a finished output is kept and said)
                    made_then = crec.get("settings")  # (as this run reads it: paths resolved, the same keys left out)
                    changed = self.settings_changed(made_then and part_settings(made_then), dst, plan.pix_fmt,
                                                    now=made_with)
                    if changed == "":
                        self.bar.line(f"{src_path.name} chunk {i + 1}/{len(plan.chunks)}: already done", b - a,
                                      earlier=True)
                        continue
                    why = "an older streamrestore made it, which did not record its settings" if changed is None \
                        else f"it was made with other settings ({changed})"
                    self.bar.line(f"{src_path.name} chunk {i + 1}/{len(plan.chunks)}: made again: {why}")
                self.manifest.update(key, state="pending", input=src, chunk=i, first=a, end=b, output=str(part),
                                     error=None, settings=made_with)
                self.queue.append(("chunk", src, i))
                left += 1
                frames_left += b - a
            self.remaining[src] = left
            if not left:
                self.queue.appendleft(("join", src))
            if frames_left:
                try:
                    info = probe(src_path)
                    parts_needed += parts_bytes(info.width, info.height, info.pix_fmt, frames_left)
                except UserError:  # (its chunks will say what is wrong with it)
                    pass
        if unrecorded:  # (once a batch, not a line an output: an upgrade meets a whole folder of them)
            count = f"{len(unrecorded)} output{'s' if len(unrecorded) > 1 else ''}"
            log.warning(f"{count} kept as already done ({', '.join(unrecorded[:3])}"
                        f"{', ...' if len(unrecorded) > 3 else ''}) {'was' if len(unrecorded) == 1 else 'were'} made by "
                        "an older streamrestore that did not record its settings (model, references, options): "
                        "delete an output to have it made with these")
        self.say_parts_space(parts_needed)
        self.bar.counting = True  # (the total is known: lines say the count from here on)

    def say_parts_space(self, needed: int) -> None:
        """A warning before the work starts when the chunk parts (lossless, each video's kept until it is
        joined) may not fit the output folder's disk: a full disk was found only hours in, by a
        message that blamed the batch's record."""
        if not needed:
            return
        folder = self.out_dir / PARTS_DIR
        free = shutil.disk_usage(folder if folder.exists() else self.out_dir).free
        if needed > free:
            log.warning(f"the long videos' chunk parts (lossless, each video's kept until it is joined) may need up "
                        f"to {_gb(needed)} in {folder}, and its disk has {_gb(free)} free: free some space, or "
                        "restore the long videos whole, with a --chunk-seconds longer than they are (no parallel "
                        "chunks)")

    # one piece
    def call(self, worker, piece, remote: bool):
        kind, src = piece[0], piece[1]
        first_attempt = self.attempts.get(piece, 0) <= 1  # (started() counted this one)
        where = piece[2] if kind == "chunk" else "*" if kind == "whole" else "join"
        fail = first_attempt and _injected(self.hooks, src, where)
        # (only in a Ray actor: in this process it would end the driver)
        die = str(self.die_marker(piece)) if remote and kind != "join" and _injected(self.die_hooks, src, where) \
            else None
        method = {"whole": "restore_whole", "chunk": "restore_chunk", "join": "join"}[kind]
        fn = getattr(worker, method)
        fn = fn.remote if remote else fn
        plan = self.plans[src]
        if kind == "whole":
            return fn(src, str(self.outputs_by_src(src)), fail, die)
        if kind == "chunk":
            return fn(plan, piece[2], str(self.parts[src][piece[2]]), str(self.outputs_by_src(src)), fail, die)
        return fn(plan, [str(p) for p in self.parts[src]], str(self.outputs_by_src(src)))

    def die_marker(self, piece) -> Path:
        """The file whose existence says the :data:`DIE_ENV` hook has fired for ``piece``."""
        digest = hashlib.sha1(self.key_of(piece).encode()).hexdigest()[:12]
        return self.out_dir / PARTS_DIR / f"died-{digest}"

    def outputs_by_src(self, src: str) -> Path:
        return Path(self.manifest.get(self.input_key(src))["output"])

    def key_of(self, piece) -> str:
        return self.chunk_key(piece[1], piece[2]) if piece[0] == "chunk" else self.input_key(piece[1])

    def started(self, piece) -> None:
        if not self.attempts:  # the first piece: the rate and ETA are of restoring, not of Ray's and the models' start
            self.bar.start = time.monotonic()  # (an ETA of 3:05 at 12 % of a batch done in 40 s: farm F13)
        self.attempts[piece] = self.attempts.get(piece, 0) + 1
        self.manifest.update(self.key_of(piece), state="running", attempts=self.attempts[piece])

    def finished(self, piece, info: dict) -> None:
        self.bar.under_way.pop(piece, None)  # (counted as done below)
        self.joining.pop(piece, None)
        kind, src = piece[0], piece[1]
        name, plan = self.name_of(src), self.plans[src]
        if kind == "chunk":
            i = piece[2]
            self.manifest.update(self.key_of(piece), state="done", sha256=info["sha256"], frames=info["frames"],
                                 error=None, seconds=round(info["seconds"], 3), identities=info.get("identities"),
                                 warnings=info.get("warnings", []))
            self.result.frames += info["frames"]
            self.bar.line(f"{name} chunk {i + 1}/{len(plan.chunks)} done ({info['frames']} frames, "
                          f"{info['seconds']:.1f} s)", info["frames"])
            self.remaining[src] -= 1
            if self.remaining[src] == 0:
                self.queue.appendleft(("join", src))
            return
        dst = self.outputs_by_src(src)
        frames = count_frames(dst)
        if frames != plan.frames:
            self.failed_piece(piece, RuntimeError(f"{dst} has {frames} frames, the input {plan.frames}"))
            return
        extra = {"identities": info["identities"]} if "identities" in info else {}
        warnings = list(info.get("warnings", []))
        if kind == "join":
            records = [self.manifest.get(self.chunk_key(src, i)) for i in range(len(plan.chunks))]
            matched = {name for r in records for name in (r.get("identities") or [])}
            warnings = _chunks_warnings([r.get("warnings") or [] for r in records], matched) + warnings
        elif "faces" in info:
            extra.update(faces=info["faces"], clean=info.get("clean"), dim=info.get("dim"), tinted=info.get("tinted"),
                         grainy=info.get("grainy"), seen=info.get("seen"), strength=info.get("strength", 1.0))
            unchanged = _unchanged_because(extra)
            if unchanged:
                self.result.unchanged[src] = unchanged
        self.manifest.update(self.input_key(src), state="done", sha256=sha256_of(dst), frames=frames, error=None,
                             seconds=round(info["seconds"], 3), warnings=warnings, **extra)
        self.result.succeeded[src] = str(dst)
        if warnings:
            self.result.warnings[src] = warnings
        noted = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''} (in the summary)" if warnings else ""
        if kind == "whole":
            self.result.frames += frames
            from streamrestore.images import is_image

            self.result.photos += is_image(src)
            what = "a photo" if is_image(src) else f"{frames} frame{'s' if frames != 1 else ''}"
            self.bar.line(f"{name} done ({what}, {_faces_said(extra)}{info['seconds']:.1f} s) -> {dst}{noted}", frames)
        else:
            self.bar.line(f"{name} joined ({len(plan.chunks)} chunks) -> {dst}{noted}")
            folder = self.parts[src][0].parent
            shutil.rmtree(folder, ignore_errors=True)
            try:  # the parts' common folder goes with its last input's parts
                folder.parent.rmdir()
            except OSError:
                pass  # other inputs' parts (or a dead worker's) are still in it

    def say_under_way(self, counts: list[tuple[Any, int | None]]) -> None:
        """One progress line for the pieces not finished yet: ``counts`` holds each one with its
        frames done so far (:meth:`BatchWorker.progress`; None: not known now, its last count
        stands). Photos are left out (a moment each)."""
        from streamrestore.images import is_image

        said = []
        for piece, answer in counts:
            kind, src = piece[0], piece[1]
            plan, name = self.plans[src], self.name_of(src)
            if is_image(src):
                continue
            last = self.bar.under_way if kind != "join" else self.joining
            frames = last[piece] = max(last.get(piece, 0), answer or 0)  # (never back)
            if kind == "join":
                said.append(f"joining {name} ({frames}/{plan.frames} frames)")
                continue
            a, b = plan.chunks[piece[2]] if kind == "chunk" else (0, plan.frames)
            where = f" chunk {piece[2] + 1}/{len(plan.chunks)}" if kind == "chunk" else ""
            # (no frame yet: the worker loads its models, or restores a chunk's warm-up frames)
            said.append(f"{name}{where} ({f'{frames}/{b - a} frames' if frames else 'starting'})")
        if said:
            self.bar.line(f"under way: {', '.join(said)}")
        else:
            self.bar.passed()

    def failed_piece(self, piece, exc: BaseException) -> None:
        self.bar.under_way.pop(piece, None)
        self.joining.pop(piece, None)
        kind, src = piece[0], piece[1]
        error = _error_text(exc)
        tries = self.attempts.get(piece, 1)
        what = self.name_of(src) + (f" chunk {piece[2] + 1}" if kind == "chunk" else " (join)" if kind == "join" else "")
        # (a full disk stays full, each try filling it again; the user's mistake or the input's fault, a UserError,
        # comes again: a DVR's audio the container cannot hold was tried three times)
        if tries <= self.retries and not _disk_full(exc) and not _users_error(exc):
            self.manifest.update(self.key_of(piece), state="retrying", error=error)
            self.bar.line(f"{what} failed (attempt {tries} of {self.retries + 1}), trying again: {error}")
            self.queue.append(piece)
            return
        self.manifest.update(self.key_of(piece), state="failed", error=error)
        plan = self.plans.get(src)
        lost = [piece] if kind != "join" else []  # (a join's frames were restored: they stay counted)
        if kind == "chunk":
            self.manifest.update(self.input_key(src), state="failed", error=f"chunk {piece[2]}: {error}")
            # the input's other chunks are of no use now
            lost += [p for p in self.queue if p[1] == src and p[0] == "chunk"]
            self.queue = deque(p for p in self.queue if p[1] != src)
        if plan is not None:  # (frames that will not be restored: out of the count's total)
            self.bar.drop(sum(plan.frames if p[0] == "whole" else plan.chunks[p[2]][1] - plan.chunks[p[2]][0]
                              for p in lost))
        self.result.failed[src] = error if kind != "chunk" else f"chunk {piece[2]}: {error}"
        self.bar.line(f"{what} failed after {tries} attempt(s): {error}")

    # engines
    def adapted(self, adaptation: dict, shared: bool) -> None:
        """Records what the worker that adapted first did (``BatchWorker.adaptation``), in the
        result and a progress line."""
        self.result.adapted = people = dict(adaptation["people"])
        made = [name for name, seconds in people.items() if seconds]
        loaded = [name for name, seconds in people.items() if seconds == 0]
        if made:
            self.bar.line(f"adapted the model to {', '.join(made)} in {sum(people[n] or 0.0 for n in made):.0f} s"
                          f"{'; the other workers load it' if shared else ''}")
        if loaded:
            self.bar.line(f"the model's adaptation to {', '.join(loaded)} loaded from the cache")
        self.bar.start = time.monotonic()  # the rate and ETA are of restoring, which the adaptation preceded

    def run_here(self, worker_args) -> None:
        """No Ray: one worker in this process, the inputs one after the other (no chunks)."""
        if worker_args["options"].get("adapt") is not None:
            self.bar.line(ADAPTING)
        worker = BatchWorker(**worker_args)
        if worker_args["options"].get("adapt") is not None:
            self.adapted(worker.adaptation(), shared=False)
        while self.queue:
            piece = self.queue.popleft()
            self.started(piece)

            def report(piece=piece) -> None:  # (on the worker's writer thread, after each frame)
                if self.bar.due() == 0.0:
                    self.say_under_way([(piece, worker.frames_now)])

            worker.report = report
            try:
                info = self.call(worker, piece, remote=False)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self.failed_piece(piece, exc)
                continue
            self.finished(piece, info)

    def run_ray(self, ray, address, worker_args, workers, gpus_per_worker, device, torch_threads, ray_init) -> None:
        started_here = False
        if not ray.is_initialized():
            # (Ray's own INFO lines, "Started a local Ray instance", would sit among the batch's)
            kwargs = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING}
            if address in (None, "local"):
                # Only paths and small plans go through Ray's object store (frames go through
                # files), so a small one suffices; Ray's default takes 30 % of the memory. Its CPUs are
                # those this process may use (Ray counts the machine's: 2 workers on a taskset's 1 core)
                from streamrestore.threads import usable_cores  # noqa: PLC0415

                kwargs.update(address="local", num_cpus=usable_cores(),
                              object_store_memory=LOCAL_OBJECT_STORE_MB * 2**20)
                sessions = None if "RAY_TMPDIR" in os.environ or "_temp_dir" in (ray_init or {}) \
                    else _private_ray_folder()
                if sessions is not None:
                    kwargs["_temp_dir"] = str(sessions)
            else:
                kwargs.update(address=address)
            kwargs.update(ray_init or {})
            _keep_ray_token_private()  # (its folder first: the token Ray writes there is then out of others' reach)
            try:
                with _stop_signal_handlers_kept(), _without_token_enabled_notice():
                    ray.init(**kwargs)
                _keep_ray_token_private()
            except (ConnectionError, TimeoutError) as exc:  # (OSErrors too: no cluster there, or none in time)
                named = os.environ.get("RAY_ADDRESS") if address == "auto" else None
                where = f"the Ray cluster of RAY_ADDRESS={named}" if named else \
                    "a running Ray cluster" if address == "auto" else f"the Ray cluster at {address}"
                here = "give --ray local (or unset RAY_ADDRESS)" if named else "leave out --ray"
                # (a cluster `ray start` made with token authentication, Ray's default, refuses a client
                # without RAY_AUTH_MODE=token: its log said InvalidAuthToken, the error only "cannot connect")
                token = "" if os.environ.get("RAY_AUTH_MODE") or address in (None, "local") else \
                    ("; if it was started with token authentication (`ray start` says \"Token authentication is "
                     "enabled\"), set RAY_AUTH_MODE=token, with its head's ~/.ray/auth_token here too")
                raise TemporaryError(f"cannot reach {where} ({exc}); start it (ray start --head), check the "
                                     f"address, or {here} to start Ray here{token}") from None
            except OSError as exc:  # (Ray keeps a token and its logs under the home folder)
                where = exc.filename or "its files"
                raise OutputError(f"Ray could not start: cannot write {where} ({exc.strerror or exc}); Ray keeps "
                                  "files in the home folder: set HOME to a writable one, or run without Ray "
                                  "(--ray none: one input after another)") from None
            except RuntimeError as exc:
                if "home directory" not in str(exc):
                    raise
                # (a container's arbitrary user id with no HOME: Ray's token lives under ~/.ray; the main
                # command and --ray none keep their cache in the temporary folder then)
                raise OutputError(f"Ray could not start: this user has no home folder (HOME is unset, and user id "
                                  f"{os.getuid()} has no entry in the passwd file), where Ray keeps its token; set "
                                  "HOME to a writable folder, or run without Ray (--ray none: one input after "
                                  "another)") from None
            started_here = True
        with _plain_worker_prefixes():  # (until Ray is shut down: it prints the workers' last lines then)
            try:
                self._ray_loop(ray, worker_args, workers, gpus_per_worker, device, torch_threads)
            finally:
                if started_here:
                    ray.shutdown()

    def _ray_loop(self, ray, worker_args, workers, gpus_per_worker, device, torch_threads) -> None:
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if gpus and device != "cpu" else 0.0
        if workers is None:
            if gpus_per_worker:
                workers = max(1, int(gpus // gpus_per_worker))
            else:
                workers = max(1, int(resources.get("CPU", 1) // (torch_threads or 1)))
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        workers = _workers_that_fit(workers, nodes, torch_threads or 1, gpus_per_worker)
        pieces = len(self.queue)
        workers = max(1, min(workers, pieces))
        # (a second thread answers progress() while the first restores: the driver asks every
        # UNDER_WAY_LINE_SECONDS; the driver never gives an actor two pieces at once)
        actor_cls = ray.remote(BatchWorker).options(num_cpus=torch_threads or 1, num_gpus=gpus_per_worker,
                                                    max_concurrency=2)
        log.info("batch: %d worker(s) (%s CPU%s each), %d piece(s) of work on Ray", workers, torch_threads or 1,
                 f", {gpus_per_worker:g} GPU" if gpus_per_worker else "", pieces)

        adapted = None  # with adapt: the first worker's fine-tunes (in Ray's object store) for the others

        def new_actor():
            return actor_cls.remote(**worker_args, own_process=True, adapted=adapted)

        pool = _WorkerPool(ray, new_actor)
        running: dict = {}
        try:
            if worker_args["options"].get("adapt") is not None:
                # one worker adapts (minutes per person on a CPU) while the others wait for its weights,
                # instead of every worker fine-tuning the same people at once
                self.bar.line(ADAPTING)
                pool.start(1)
                try:
                    self._drain(ray, pool, running, until_loaded=True)
                    adaptation = ray.get(pool.idle[0].adaptation.remote())
                except (ray.exceptions.RayActorError, WorkersLostError) as exc:  # (out of memory?): each for itself
                    why = pool.lost_text() if isinstance(exc, WorkersLostError) else _error_text(exc)
                    pool.end()
                    pool.lost.clear()
                    self.bar.line(f"the worker adapting the model died or failed ({why}); every worker adapts "
                                  "for itself")
                else:
                    adapted = ray.put(adaptation["weights"])
                    self.adapted(adaptation, shared=workers > 1)
            pool.start(workers - len(pool.idle))
            self._drain(ray, pool, running)
        except BaseException:  # (Ctrl-C, a stop signal): on a cluster the actors would restore on
            pool.end(actor for _, actor in running.values())
            raise

    def _drain(self, ray, pool: _WorkerPool, running: dict, until_loaded: bool = False) -> None:
        """Gives the queue's pieces to the ``pool``'s loaded actors until all are done (``running``: the
        pieces given, by their result's ref); ``until_loaded``: gives none, returns once an actor has loaded.
        A piece goes only to an actor that has loaded: one Ray cannot place (its node lost, its CPUs held by
        other work) took a piece and held it for ever while a loaded worker stood idle (farm F1)."""
        waiting_since: float | None = None  # since when no actor has been at work, ready or placed
        while not pool.idle if until_loaded else self.queue or running:
            while not until_loaded and pool.idle and self.queue:
                piece = self.queue.popleft()
                actor = pool.idle.pop()
                self.started(piece)
                running[self.call(actor, piece, remote=True)] = (piece, actor)
            if not running and not pool.idle and not pool.loading:
                advice = ": out of memory, perhaps (fewer --workers, or --ray none), or their node was lost" \
                    if pool.died else ""
                raise WorkersLostError(f"no worker is left: each died or failed while loading the models "
                                       f"({pool.lost_text()}){advice}; a rerun resumes")
            stalled = not running and not pool.idle and pool.none_placed
            waiting_since = (waiting_since or time.monotonic()) if stalled else None
            timeout = self.bar.due()
            if waiting_since is not None:
                left = max(0.0, waiting_since + WORKER_PLACE_SECONDS - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            done, _ = ray.wait([*running, *pool.refs()], num_returns=1, timeout=timeout)
            if not done:
                if waiting_since is not None and time.monotonic() - waiting_since >= WORKER_PLACE_SECONDS:
                    raise TemporaryError(f"Ray placed no worker in {WORKER_PLACE_SECONDS / 60:.0f} min: "
                                         f"{_free_resources_text(ray)} (other work holds the rest, or a node was "
                                         "lost); a rerun resumes")
                if running:  # a while without a finished piece: say how far those under way have come
                    self.ask_under_way(ray, running)
                else:
                    self.bar.line(pool.waiting_text())
                continue
            ref = done[0]
            if ref not in running:
                said = pool.news(ref)
                if said and (pool.idle or pool.loading or running):  # (none left: the error above says it)
                    self.bar.line(f"{said}; going on with {len(pool.idle) + len(pool.loading) + len(running)}")
                continue
            piece, actor = running.pop(ref)
            try:
                info = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the worker died (crash, OOM, node lost)
                # (ActorDiedError and ActorUnavailableError are subclasses.) The attempt counts
                # against --retries; a new actor with the same arguments takes the dead one's place, once it
                # has loaded
                ray.kill(actor, no_restart=True)
                pool.start(1)
                self.bar.line(f"a worker died while on {self.name_of(piece[1])}"
                              f"{f' chunk {piece[2] + 1}' if piece[0] == 'chunk' else ''}; started a new one")
                self.failed_piece(piece, exc)
                continue
            except ray.exceptions.RayError as exc:
                pool.idle.append(actor)
                self.failed_piece(piece, exc)
                continue
            pool.idle.append(actor)
            self.finished(piece, info)
        if not until_loaded:
            pool.end()

    def ask_under_way(self, ray, running: dict) -> None:
        """Asks the actors of the ``running`` pieces how far they have come and says it. An answer
        not back within a second (a worker still loading its models), or about another piece (the
        one before: this one not begun yet), leaves that piece's last count; a dead worker is found
        by the wait for results."""
        asked = {actor.progress.remote(): piece for piece, actor in running.values()}
        answered, _ = ray.wait(list(asked), num_returns=len(asked), timeout=1.0)
        counts: list[tuple[Any, int | None]] = []
        for ref, piece in asked.items():
            frames = None
            if ref in answered:
                try:
                    writes, done = ray.get(ref)
                except ray.exceptions.RayError:
                    writes, done = None, 0
                frames = done if writes == self.writes(piece) else None
            counts.append((piece, frames))
        self.say_under_way(counts)

    def writes(self, piece) -> str:
        """The file a piece writes (what :meth:`BatchWorker.progress` names)."""
        kind, src = piece[0], piece[1]
        return str(self.parts[src][piece[2]]) if kind == "chunk" else str(self.outputs_by_src(src))
