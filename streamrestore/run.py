"""One run over a video: the threaded file loop, its progress display and its statistics.

:func:`run_threaded` is the reader thread → processing → writer thread loop with bounded
queues, so decoding and encoding overlap the face work and memory stays flat on long videos;
:func:`restore_frames` runs a :class:`~streamrestore.pipeline.FaceRestorer` in it from a
source of decoded frames into a :class:`~streamrestore.types.FrameSink`. Every file-restoring
path uses it: :func:`streamrestore.restore_video`, ``streamrestore bench``
(:mod:`streamrestore.bench`) and the chunks of ``streamrestore batch`` (:mod:`streamrestore.batch`).
:class:`RunStats` is what a run did (a :class:`FaceRestorer` keeps one; the summary is its
``summary()``); :class:`ProgressLines` and :func:`make_progress` the progress display.
"""
from __future__ import annotations

import contextlib
import gc
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Literal, Protocol, TextIO, Union

from streamrestore.errors import one_line

if TYPE_CHECKING:  # pragma: no cover
    from streamrestore.pipeline import FaceRestorer
    from streamrestore.types import FrameSink
    from streamrestore.video.reader import VideoInfo

__all__ = [
    "PROGRESS_INTERVAL",
    "Progress",
    "ProgressLines",
    "ProgressMode",
    "RunStats",
    "TrackStats",
    "expected_frames",
    "make_progress",
    "restore_frames",
    "run_threaded",
]

#: seconds between plain progress lines (when stderr is not a terminal)
PROGRESS_INTERVAL = 5.0
#: seconds over which a plain progress line measures the rate: a first run's model export (seconds of
#: no frames at the start) made the rate and ETA of the whole run's first minutes alarming (0.2 fps)
RATE_WINDOW_SECONDS = 60.0

#: ``progress=`` of :func:`streamrestore.restore_video`: False (nothing), True (a bar on a
#: terminal, else plain lines), ``"bar"`` or ``"lines"`` (forced)
ProgressMode = Union[bool, Literal["bar", "lines"]]


# --- statistics ----------------------------------------------------------------------------

@dataclass
class TrackStats:
    """One face track of a run: whom it matched and where it was."""

    identity: str | None = None  # the reference set it matched (its last decision), or None
    first_frame: int = 0  # frame indices, counted from 0 in the order frames were given
    last_frame: int = 0
    first_time: float | None = None  # those frames' times on the input's clock (s; None: not known, numpy frames)
    last_time: float | None = None
    faces: int = 0  # frames in which the track had a face (restored or left alone)
    left_alone: int = 0  # of those, faces not restored (--unmatched skip, beyond --max-faces)
    left_by_gate: int = 0  # of the rest, faces the quality gate (or --strength 0) left as they were
    beyond_max_faces: int = 0  # of those, faces left alone for --max-faces (never compared with the photos)
    scores: dict = field(default_factory=dict)  # reference set -> similarity, when matched by embedding
    match_sum: float = 0.0  # sum over its faces of the reference detail stage's match (0-1)
    match_faces: int = 0  # faces that went through that stage
    match_identity: str | None = None  # whose photos they were (a track's identity may change early on)
    adapted: bool | None = None  # with an adapted model (--adapt): whether its adaptation served the track last
    gate_sum: float = 0.0  # sum over its restored faces of the quality gate's weight (the share of the change kept)
    gated_faces: int = 0  # faces the gate weighed
    identity_gate_sum: float = 0.0  # sum over its faces the identity gate judged of the share of the change it kept
    identity_gated_faces: int = 0  # faces the identity gate judged
    place_sum: tuple = (0.0, 0.0)  # sum over its faces of the face's centre in the picture as shown (0-1 across, down)
    placed_faces: int = 0  # faces whose centre was given

    @property
    def faces_changed(self) -> int:
        """Faces of the track the restorer changed: given to it, and not left as they were by the quality gate."""
        return self.faces - self.left_alone - self.left_by_gate

    @property
    def untouched(self) -> bool:
        """Whether the quality gate (or ``--strength 0``) left every face of the track it was given as it was:
        nothing of its photos reached the picture, so what is said of them (a poor fit, someone else's) is moot."""
        return self.left_by_gate > 0 and self.faces_changed <= 0

    @property
    def identity_gate_weight(self) -> float | None:
        """The identity gate's mean share of the model's change kept for the track's faces (None: it judged none)."""
        return self.identity_gate_sum / self.identity_gated_faces if self.identity_gated_faces else None

    @property
    def centre(self) -> tuple[float, float] | None:
        """The track's faces' mean centre in the picture as shown (fractions of its width and height, from
        the top left); None when no face of it gave its centre."""
        if not self.placed_faces:
            return None
        across, down = (total / self.placed_faces for total in self.place_sum)
        return across, down

    @property
    def place(self) -> str | None:
        """Where the track's faces were, on average, in the picture as shown: "at the left",
        "at the top right", "in the middle" (thirds of the width and height); None when no face
        of it gave its centre."""
        if self.centre is None:
            return None
        across, down = self.centre
        column = "left" if across < 1 / 3 else "right" if across > 2 / 3 else "centre"
        row = "top" if down < 1 / 3 else "bottom" if down > 2 / 3 else ""
        if not row:
            return "in the middle" if column == "centre" else f"at the {column}"
        return f"at the {row}" if column == "centre" else f"at the {row} {column}"

    @property
    def reference_match(self) -> float | None:
        """How well the photos of the track's identity matched its face, averaged over its faces:
        the reference detail stage's mean weight (0: they explain nothing of it, so nothing of
        them is added; 1: everywhere), before the quality gate scales it with the rest of the
        change. None when the stage did not run for this track with its current identity."""
        if not self.match_faces or self.match_identity != self.identity:
            return None
        return self.match_sum / self.match_faces


def and_list(items: list[str]) -> str:
    """``["a", "b", "c"]`` as "a, b and c" (one item: itself)."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


#: the start of the warning that no face matched a reference set (``name``: the set's)
NO_FACE_MATCHED = "no face matched {name}'s photos"
#: tracks listed one per line in the summary; the rest are counted on one line
SUMMARY_TRACKS = 20
#: a track whose faces kept less than this share of the model's change through the identity gate, on
#: average, has it said on its summary line without -v (most of the change was held back: "restored" and
#: "adapted" alone read as if the faces had changed)
IDENTITY_GATE_SAID_BELOW = 0.5

#: a track whose reference photos match its face less than this (TrackStats.reference_match)
#: gets a warning in the summary, and an adapted model's adaptation is not used for it
#: (FaceRestorer; adapted to photos in another light, faces came out worse: docs/video_eval.md,
#: "Session 31"). Measured on the video benchmark (lite v7, 48 frames): frames of
#: the same footage as references match 0.76-0.80, another clip of the same session 0.28, two
#: studio photos 0.28, frames of a differently lit clip 0.06 (there the stage adds nothing)
POOR_REFERENCE_MATCH = 0.15
#: ... once it has this many faces (a few frames can fall on a turned head or a blink)
POOR_MATCH_MIN_FACES = 10


#: why the quality gate left faces as they were, each as said (the summary adds why it matters)
_GATE_LEFT = (
    ("clean", "(the quality gate: nothing to restore; --no-quality-gate restores them anyway)"),
    # (their measure is the noise's: "clean" would misstate a dark, blurred face)
    ("too dark or flat to judge", "(in so little contrast the quality gate cannot tell a blurred face from a clean one)"),
    # (a bright face under a blue stage light: "too dark" misstated it)
    ("under one strong colour of light", "(their brightness holds too little contrast for the quality gate to judge, "
     "and the model, trained in white light, would change their colour; --no-quality-gate restores them anyway)"),
    # (grain reads as detail: "clean" would misstate a blurred, grainy face)
    ("too grainy to judge", "(film grain or tape noise reads as detail to the quality gate, so blurred faces may be "
     "among them; --no-quality-gate restores them, their grain with their blur, and makes sharp ones worse)"),
)


def gate_left_as_they_were(clean: int, dim: int, tinted: int, grainy: int, explained: bool = False) -> list[str]:
    """The faces the quality gate left as they were, by why ("2 clean left as they were", "1 too dark or flat to
    judge left as it was"), from the counts of :class:`RunStats` (``clean``: all it left; ``dim`` and ``grainy`` of
    those, ``tinted`` of the dim ones); ``explained``: as the summary says them ("2 clean faces left as they were
    (the quality gate: ...)")."""
    said = []
    for count, (what, why) in zip((clean - dim - grainy, dim - tinted, tinted, grainy), _GATE_LEFT):
        if not count:
            continue
        if explained:
            faces = _n(count, "clean face") if what == "clean" else f"{_n(count, 'face')} {what}"
        else:
            faces = f"{count} {what}"
        said.append(f"{faces} left as {'it was' if count == 1 else 'they were'}" + (f" {why}" if explained else ""))
    return said


def poor_reference_match(match: float) -> bool:
    """Whether a reference match (TrackStats.reference_match, or one face's) is below ``POOR_REFERENCE_MATCH``."""
    return match < POOR_REFERENCE_MATCH


def _in_order_of_appearance(item: tuple) -> tuple:
    """Sort key of a ``(track id, TrackStats)`` pair: first frame, then the id, numbers by value (a
    photo's faces all appear in frame 0: 1, 2, ... 10, not 1, 10, 11, ... 2)."""
    track_id, track = item
    number = isinstance(track_id, int) and not isinstance(track_id, bool)
    return track.first_frame, 0 if number else 1, track_id if number else 0, str(track_id)


@dataclass
class RunStats:
    """What a run did; printed as the final summary."""

    frames: int = 0
    frames_with_faces: int = 0
    frames_restored: int = 0  # frames in which at least one face was given to the restorer (--json's
    # frames_restored: of those, the frames where some face was changed, less frames_unchanged)
    frames_unchanged: int = 0  # of those, frames whose every face the quality gate (or --strength 0) left as it was
    faces_restored: int = 0
    faces_left_clean: int = 0  # of those, faces the quality gate found clean and left as they were
    faces_left_dim: int = 0  # of those, faces too dark or flat for the gate to judge (QualityGate.dim): not called clean
    faces_left_tinted: int = 0  # of the dim ones, faces lit by one strong colour (QualityGate.tinted): not called dark
    faces_left_grainy: int = 0  # of those, not dim, faces too grainy to judge (QualityGate.grainy): not called clean
    track_ids: set = field(default_factory=set)
    identities: dict = field(default_factory=dict)  # track id -> matched set name or None
    per_track: dict = field(default_factory=dict)  # track id -> TrackStats
    unmatched_faces: int = 0  # faces whose track matched no reference set (restored or skipped)
    skipped_faces: int = 0  # faces left untouched: unmatched with unmatched="skip", or beyond max_faces
    matching: bool = False  # tracks were matched to reference sets by embedding
    references: bool = False  # there were reference sets at all
    reference_names: list = field(default_factory=list)  # their names, as given
    references_skipped: dict = field(default_factory=dict)  # set name -> its photos not used, each with why
    match_threshold: float | None = None
    unlike_threshold: float | None = None  # a face scoring below it is said perhaps someone else (None: match_threshold)
    seconds: float = 0.0  # wall time of a whole run (restore_video, live); 0 in frame-by-frame use
    startup_seconds: float = 0.0  # model, detector and reference loading, before the first frame
    busy_seconds: float = 0.0  # time spent inside process()/stream() handling frames
    problems: list = field(default_factory=list)
    stage_seconds: dict = field(default_factory=dict)
    photo: bool = False  # the run restored one photo (restore_photo): the summary counts faces, not frames
    encoded: bool = False  # the frames were encoded into a video file (restore_video); not frame by frame (process)
    deinterlaced: bool = False  # the frames were deinterlaced on the way in (restore_video)
    faces_invalid: int = 0  # faces the restorer gave NaN or infinity for, left as they were (counted on the CPU)
    face_models: dict = field(default_factory=dict)  # the detector, embedder and gate as run (api.faces_ran)
    backend: str | None = None  # how the restorer ran at the end of a whole run ("onnxruntime"; None: no network)
    device: str | None = None  # where it ran ("cpu", "cuda"), at the end of a whole run
    strength: float = 1.0  # the share of the restorer's change every face got at most (QualityGateConfig.strength)
    faces_detected: int = 0  # faces a detector working at a size of its own (SCRFD) found, on the frames it looked at
    faces_detected_small: int = 0  # of those, faces under SMALL_AT_INPUT px in the picture it looked at
    detected_at: tuple | None = None  # ((frame width, height), (width, height) the detector looked at), its last

    @property
    def tracks(self) -> int:
        """How many face tracks the run saw."""
        return len(self.track_ids)

    @property
    def identities_matched(self) -> list[str]:
        """The reference sets some track matched, sorted."""
        return sorted({n for n in self.identities.values() if n is not None})

    def add_time(self, stage: str, seconds: float) -> None:
        """Adds ``seconds`` to the time spent in ``stage`` (``"detect"``, ``"restore"``, ...)."""
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def add_face(self, track_id: int, frame: int, identity: str | None, restored: bool,
                 beyond_max_faces: bool = False, centre: tuple[float, float] | None = None,
                 time: float | None = None) -> None:
        """Counts one face of one frame.

        Args:
            track_id: the face's track.
            frame: the frame's index (from 0, in the order frames were given).
            identity: the reference set the track matched, or None.
            restored: whether the face was restored (False: left alone).
            beyond_max_faces: left alone because the frame had ``max_faces`` larger faces.
            centre: the face's centre in the picture as shown, as fractions of its width and height
                (None: not known); the summary says where each track was when there are several.
            time: the frame's time on the input's clock, in seconds (None: not known); ``--json`` gives each
                track's first and last (with ``--start`` its frames are counted from the window's start).
        """
        track = self.per_track.get(track_id)
        if track is None:
            track = self.per_track[track_id] = TrackStats(first_frame=frame, first_time=time)
        track.identity = identity
        track.last_frame = frame
        track.last_time = time
        track.faces += 1
        if centre is not None:
            track.place_sum = (track.place_sum[0] + centre[0], track.place_sum[1] + centre[1])
            track.placed_faces += 1
        if not restored:
            track.left_alone += 1
            track.beyond_max_faces += beyond_max_faces
            self.skipped_faces += 1
        self.track_ids.add(track_id)
        self.identities[track_id] = identity

    def add_detections(self, sizes: list[float], frame: tuple[int, int], looked_at: tuple[int, int],
                       smallest: float) -> None:
        """Counts the faces a detector found on one frame, their ``sizes`` (:attr:`Face.size`) in the picture of
        ``looked_at`` (width, height) it was given for the ``frame`` (width, height); a face under ``smallest``
        there is left out (smaller than ``min_face`` in the frame: not restored, not counted)."""
        from streamrestore.faces.detect import SMALL_AT_INPUT

        kept = [size for size in sizes if size >= smallest]
        self.faces_detected += len(kept)
        self.faces_detected_small += sum(size < SMALL_AT_INPUT for size in kept)
        self.detected_at = (tuple(frame), tuple(looked_at))

    def _larger_detect_size(self) -> int | None:
        """A ``--detect-size`` that shows the detector the picture larger (twice the side it looked at, at most the
        picture's own, in 32s); None where it looked at the whole picture (or nothing is known of it)."""
        if self.detected_at is None:
            return None
        (width, height), (seen_w, seen_h) = self.detected_at
        from streamrestore.faces.detect import DETECT_SIZE_MOST

        if seen_w >= width or max(seen_w, seen_h) >= DETECT_SIZE_MOST:  # (already full size, or as large as taken)
            return None
        return min(2 * max(seen_w, seen_h), -(-max(width, height) // 32) * 32, DETECT_SIZE_MOST)

    def _looked_at_size(self) -> str:
        """The side of the picture the detector looked at, with the option that makes it larger where one would."""
        if self.detected_at is None:
            return "640 px"
        larger = self._larger_detect_size()
        side = f"{max(self.detected_at[1])} px"
        return side if larger is None else f"{side} (--detect-size {larger} looks at it larger)"

    def _small_faces(self) -> str | None:
        """The warning that many faces were too small for the detector to find them in every frame (a quarter
        of those it found, at least 3), where a larger ``--detect-size`` would show them larger; None if not."""
        from streamrestore.faces.detect import SMALL_AT_INPUT

        small, found = self.faces_detected_small, self.faces_detected
        if self.detected_at is None or small < 3 or small * 4 < found:
            return None
        larger = self._larger_detect_size()
        if larger is None:
            return None
        count = f"all {found} faces" if small == found else f"{small} of the {found} faces"
        (width, height), (seen_w, seen_h) = self.detected_at
        what = "the photo" if self.photo else f"{width}x{height} frames"
        return (f"{count} found were under {SMALL_AT_INPUT:.0f} px wide where the face "
                f"detector looked for them ({what} {'is' if self.photo else 'are'} looked at {seen_w}x{seen_h}): "
                f"faces that small are missed{'' if self.photo else ' in some frames (a track starts late or breaks)'}"
                f"; --detect-size {larger} looks at {'it' if self.photo else 'them'} larger (slower)")

    def add_changes(self, track_ids: list, changed: list[bool]) -> None:
        """Counts one frame's faces given to the restorer (``track_ids``, in order) as ``changed`` by it or left as
        they were by the quality gate (or ``--strength 0``)."""
        for track_id, change in zip(track_ids, changed):
            track = self.per_track.get(track_id)
            if track is not None and not change:
                track.left_by_gate += 1
        self.frames_unchanged += bool(track_ids) and not any(changed)

    def add_gate_weight(self, track_id: Hashable, weight: float) -> None:
        """Counts the quality gate's weight for one face of track ``track_id`` given to the restorer (0:
        left as it was; 1: the model's whole change); ``-v``'s track lines give its mean."""
        track = self.per_track.get(track_id)
        if track is not None:
            track.gate_sum += weight
            track.gated_faces += 1

    def add_identity_gate_weight(self, track_id: Hashable, weight: float) -> None:
        """Counts the identity gate's share of the change kept for one face of track ``track_id`` (1: all
        of it; 0: none, the change made the face less like its photos); ``-v``'s track lines give its mean."""
        track = self.per_track.get(track_id)
        if track is not None:
            track.identity_gate_sum += weight
            track.identity_gated_faces += 1

    def add_reference_match(self, track_id: Hashable, match: float) -> None:
        """Adds one face's reference match (the reference detail stage's mean weight, 0-1) to
        its track, which :meth:`add_face` has already counted with its identity. A track whose
        identity changed starts its average again: another person's photos were matched."""
        track = self.per_track[track_id]
        if track.match_identity != track.identity:
            track.match_identity, track.match_sum, track.match_faces = track.identity, 0.0, 0
        track.match_sum += match
        track.match_faces += 1

    def unlike_their_references(self) -> list:
        """Track ids restored toward a reference set that their face's embedding does not match
        (its score below ``unlike_threshold``, else ``match_threshold``): with one set and ``unmatched="restore"`` every face
        gets that set, the score only reports it. Tracks of fewer than ``POOR_MATCH_MIN_FACES``
        faces are left out (a few frames of a turned head score low); a photo's faces are each judged."""
        return [tid for tid in self.per_track if self.unlike(tid) and not self.per_track[tid].untouched]

    def unlike(self, track_id: Hashable) -> bool:
        """Whether track ``track_id`` is one of :meth:`unlike_their_references`."""
        below, t = self._unlike_below, self.per_track.get(track_id)
        return (t is not None and below is not None and t.identity is not None and t.faces >= self._judged_from
                and t.scores.get(t.identity, 1.0) < below)

    def unlike_now(self, track_id: Hashable) -> str:
        """A line to log as soon as track ``track_id`` (its score decided) is :meth:`unlike` its
        photos: a long run's user learns it at once, not at the end."""
        t = self.per_track[track_id]
        return (f"track {track_id} (from frame {t.first_frame}) scores {t.scores[t.identity]:.2f} against "
                f"{t.identity}'s photos, below the {self._unlike_below:.2f} of the same person: its faces are being "
                "restored toward someone else's photos, perhaps, or the face is too blurred, turned, covered (a mask, "
                "sunglasses, a hand) or coloured by the light to be recognised (going on; Ctrl-C stops, and "
                "`--unmatched skip` leaves such faces alone); the summary lists every such track")

    def _sets_matched_by_nobody(self) -> list[str]:
        """With faces matched to sets: a warning for each set that no face matched (its photos
        unused, and the faces of its person restored as unmatched)."""
        if not self.matching or self.match_threshold is None:
            return []
        said, matched = [], set(self.identities_matched)
        for name in self.reference_names:
            scores = [t.scores[name] for t in self.per_track.values() if name in t.scores]
            if name in matched or not scores:
                continue
            best = max((t for t in self.per_track.values() if name in t.scores), key=lambda t: t.scores[name])
            if best.scores[name] >= self.match_threshold and best.identity is not None:
                # (over the threshold, it lost to another set: "scored 0.81, a match needs 0.40" read as a fault)
                said.append(NO_FACE_MATCHED.format(name=name)
                            + f": the closest {self._unit} scored {best.scores[name]:.2f} against them, and higher "
                            f"against {best.identity}'s, which it matched (-v shows each {self._unit}'s scores); if "
                            "these are one person's photos, give them as one set")
                continue
            said.append(NO_FACE_MATCHED.format(name=name)
                        + f" (the closest {self._unit} scored {max(scores):.2f}, a match needs "
                        f"{self.match_threshold:.2f}, --match-threshold; -v shows each {self._unit}'s score): if {name} is in the "
                        f"{'photo' if self.photo else 'video'}, those faces were treated as unmatched (--unmatched); "
                        "photos in the footage's light and pose match best")
        return said

    @property
    def _unlike_below(self) -> float | None:
        return self.unlike_threshold if self.unlike_threshold is not None else self.match_threshold

    def poorly_matched(self) -> list:
        """Track ids whose reference photos match their face poorly (see ``POOR_REFERENCE_MATCH``);
        a photo's faces are each judged."""
        return [tid for tid, t in self.per_track.items() if t.reference_match is not None and not t.untouched
                and t.match_faces >= self._judged_from and poor_reference_match(t.reference_match)]

    @property
    def _judged_from(self) -> int:
        """Faces a track needs before its match to its photos is judged (a photo's one face is all
        there is to judge)."""
        return 1 if self.photo else POOR_MATCH_MIN_FACES

    @property
    def _unit(self) -> str:
        """What the summary calls a track: a photo's are single faces."""
        return "face" if self.photo else "track"

    def _timing(self) -> str:
        if self.seconds > 0:
            loop = self.seconds - self.startup_seconds
            fps = self.frames / loop if loop > 0 else 0.0
            return f"{fps:.1f} fps; {self.seconds:.1f} s with {self.startup_seconds:.1f} s start-up"
        if self.busy_seconds > 0:  # frame by frame: nobody timed the run as a whole
            return f"{self.frames / self.busy_seconds:.1f} fps over {self.busy_seconds:.1f} s of processing"
        return "not timed"

    def _track_line(self, track_id, track: TrackStats, verbose: bool) -> str:
        if track.identity is not None:
            who = one_line(track.identity)
            if self.unlike(track_id):  # (one set serves every face: its name alone read as if this were that person)
                who += f" (unlike these photos: {track.scores[track.identity]:.2f})"
        elif self.matching and track.beyond_max_faces and not track.scores:
            who = "not compared with the photos"  # (its faces were never restored: no embedding taken)
        elif self.matching:
            who = "no match"
        else:
            who = "no references"
        span = f"frame {track.first_frame}" if track.first_frame == track.last_frame else \
            f"frames {track.first_frame}-{track.last_frame}"
        text = f"  {self._unit} {track_id}: {who}" + ("" if self.photo else f", {span}, {_n(track.faces, 'face')}")
        if track.place is not None and len(self.per_track) > 1:  # which face is which, where there are several
            text += f", {track.place}"
        if track.left_alone:
            beyond = track.beyond_max_faces
            why = "" if not beyond else ": beyond --max-faces" if beyond == track.left_alone else \
                f", {beyond} beyond --max-faces"
            text += f" (left alone{why})" if self.photo else f" ({track.left_alone} left alone{why})"
        if track.untouched:  # (its photos' fit and the model's share would read as work done)
            how = " (--strength 0)" if self.strength == 0.0 else " by the quality gate"
            text += f"; left as {'it was' if self.photo else 'they were'}{how}"
        elif track.reference_match is not None:
            text += f"; reference detail fit {track.reference_match:.2f}"
        if track.adapted is not None:
            text += "; adapted" if track.adapted else "; not adapted (its photos fit poorly)"
        held = track.identity_gate_weight
        if verbose and track.gated_faces:  # "restored" may be a small share of the model's change
            text += f"; {track.gate_sum / track.gated_faces:.2f} of the model's change kept (the quality gate's mean)"
            if held is not None and held >= IDENTITY_GATE_SAID_BELOW:
                text += f", {held:.2f} of that by the identity gate"
        elif verbose and held is not None and held >= IDENTITY_GATE_SAID_BELOW:  # (the quality gate off)
            text += f"; {held:.2f} of the model's change kept by the identity gate"
        if held is not None and held < IDENTITY_GATE_SAID_BELOW:  # (a face "restored" and "adapted" in name only)
            text += (f"; the identity gate held back {1.0 - held:.2f} of the change (it made the face less like its "
                     "photos; --identity-tolerance 0 keeps it)")
        if verbose and track.scores:
            ranked = sorted(track.scores.items(), key=lambda item: -item[1])
            text += "; similarity " + ", ".join(f"{one_line(name)} {score:.2f}" for name, score in ranked)
        return text

    def as_dict(self) -> dict:
        """The run as plain data, for a program to read (``streamrestore INPUT --json``): what
        :meth:`summary` says, as numbers.

        Keys: ``frames``, ``frames_with_faces``, ``frames_restored`` (frames in which some face was changed);
        ``faces`` (faces seen),
        ``faces_restored`` (restored and changed; 0 at ``strength`` 0), ``strength`` (the share of the
        restorer's change a face got at most, ``--strength``), ``faces_left_clean`` (left as they were: the
        quality gate found nothing to restore), ``faces_left_dim`` (left as they were: too dark or
        flat to judge), ``faces_left_tinted`` (of those, faces lit by one strong colour), ``faces_left_grainy``
        (left as they were: too grainy to judge), ``faces_unmatched`` (matching no reference set: restored, or left alone with
        ``--unmatched skip``), ``faces_skipped`` (left alone: ``--unmatched skip``, beyond
        ``--max-faces``); ``seconds`` and ``startup_seconds`` (0 when not timed);
        ``references`` (the sets' names), ``references_skipped`` (each set's photos not used, with
        why: ``"wall.png (no face)"``; said as warnings when the photos were loaded); ``tracks``, one per track in order of appearance:
        ``id``, ``identity`` (the set it matched, or None), ``first_frame``, ``last_frame`` (counted from the
        first frame restored: with ``--start``, the window's), ``first_time``, ``last_time`` (those frames' times
        on the input's clock, in seconds, or None where not known),
        ``faces``, ``left_alone``, ``faces_changed`` (faces the restorer changed: not left alone, nor left as
        they were by the quality gate), ``place`` (where in the picture, or None), ``similarity`` (to
        each reference set, when matched by embedding), ``reference_match`` (0-1, or None) and
        ``gate_weight`` (the quality gate's mean share of the change kept, or None), ``identity_gate_weight``
        (the identity gate's mean share of that kept, or None where it judged no face of the track) and
        ``centre`` (the faces' mean centre in the picture as shown, [across, down] as fractions from the top
        left, or None); ``warnings``,
        the summary's warning sentences.
        """
        tracks = sorted(self.per_track.items(), key=_in_order_of_appearance)
        return {
            "frames": self.frames, "frames_with_faces": self.frames_with_faces,
            "frames_restored": self.frames_restored - self.frames_unchanged,
            "faces": sum(track.faces for track in self.per_track.values()),
            "faces_restored": self.faces_restored - self.faces_left_clean if self.strength > 0.0 else 0,
            "strength": self.strength,
            "faces_left_clean": self.faces_left_clean - self.faces_left_dim - self.faces_left_grainy,
            "faces_left_dim": self.faces_left_dim, "faces_left_tinted": self.faces_left_tinted,
            "faces_left_grainy": self.faces_left_grainy,
            "faces_unmatched": self.unmatched_faces, "faces_skipped": self.skipped_faces,
            "seconds": round(self.seconds, 3), "startup_seconds": round(self.startup_seconds, 3),
            "references": list(self.reference_names),
            "references_skipped": {name: list(files) for name, files in self.references_skipped.items()},
            "tracks": [{
                "id": track_id, "identity": track.identity, "first_frame": track.first_frame,
                "last_frame": track.last_frame,
                "first_time": None if track.first_time is None else round(track.first_time, 6),
                "last_time": None if track.last_time is None else round(track.last_time, 6),
                "faces": track.faces, "left_alone": track.left_alone,
                "faces_changed": track.faces_changed,
                "place": track.place, "similarity": {name: round(float(v), 4) for name, v in track.scores.items()},
                "reference_match": None if track.reference_match is None else round(track.reference_match, 4),
                "gate_weight": round(track.gate_sum / track.gated_faces, 4) if track.gated_faces else None,
                "identity_gate_weight": (None if track.identity_gate_weight is None
                                         else round(track.identity_gate_weight, 4)),
                "centre": None if track.centre is None else [round(v, 4) for v in track.centre],
            } for track_id, track in tracks],
            "warnings": self.warnings(),
        }

    def summary(self, verbose: bool = False) -> str:
        """The run in a few lines: totals, then one line per track (whom it matched, its frame
        span and face count), then unmatched and skipped faces.

        Args:
            verbose: add each track's similarity to every reference set.
        """
        ids = ", ".join(map(one_line, self.identities_matched)) or "none"
        # one reference set, not matched: every face gets it, which "matched" would misstate
        who = f"identities matched: {ids}" if self.matching or not self.identities_matched else \
            f"references: {ids} (every face)"
        if not self.references:
            who = "no references given"
        # faces the quality gate found clean went through the restorer but were left as they were:
        # the headline then does not call them restored
        weaker = f" at strength {self.strength:g}" if self.strength < 1.0 else ""
        done = "" if self.faces_left_clean else " restored" + weaker
        kept = ""
        if self.strength == 0.0:  # every face left as it was, whatever the gate found: no breakdown to give
            done, kept = "", f" left as {'it was' if self.faces_restored == 1 else 'they were'} (--strength 0)"
        if self.photo:
            text = f"{_n(self.faces_restored, 'face')}{done}{kept} ({self.seconds:.1f} s with " \
                   f"{self.startup_seconds:.1f} s start-up), {who}"
        else:
            text = (
                f"{_n(self.frames, 'frame')} ({self._timing()}), {_n(self.faces_restored, 'face')}{done} "
                f"in {_n(self.frames_restored, 'frame')}{kept}, {_n(self.tracks, 'track')}, {who}"
            )
        if self.faces_left_clean and self.strength > 0.0:
            left = gate_left_as_they_were(self.faces_left_clean, self.faces_left_dim, self.faces_left_tinted,
                                          self.faces_left_grainy, explained=True)
            restored = self.faces_restored - self.faces_left_clean
            text += "\n  of these, " + and_list([f"{restored} restored{weaker}", *left])
        tracks = sorted(self.per_track.items(), key=_in_order_of_appearance)
        shown = sorted(tracks, key=lambda item: -item[1].faces)[:SUMMARY_TRACKS]
        shown_ids = {id(track) for _, track in shown}
        for track_id, track in tracks:
            if id(track) in shown_ids:
                text += "\n" + self._track_line(track_id, track, verbose)
        if len(tracks) > len(shown):
            rest = [track for _, track in tracks if id(track) not in shown_ids]
            if self.photo:  # (a photo's faces are one each: none is "shorter")
                text += f"\n  ... {_n(len(rest), 'more face')} (--json lists every face, with its centre)"
            else:
                text += (f"\n  ... {_n(len(rest), 'more track')} with {_n(sum(t.faces for t in rest), 'face')} "
                         "(the shortest ones; --json lists every track)")
        if self.per_track and (self.references or self.skipped_faces):
            text += f"\nunmatched faces: {self.unmatched_faces}"
            if verbose and self.matching:
                text += f" (similarity below {self.match_threshold:.2f} to every set)"
            text += f", skipped faces: {self.skipped_faces}"
        # (encoded again: "unchanged" read as a copy of the file; frame by frame nothing is encoded)
        encoded = ", but the video was encoded again (not copied)" if self.encoded else ""
        if self.frames and not self.frames_with_faces:
            unchanged = "deinterlaced, not otherwise changed" if self.deinterlaced else "not changed"
            text += "\nno faces were found: the " + ("photo is written unchanged" if self.photo else
                                                      f"frames were {unchanged}{encoded}")
            # (a bare "no faces were found" left the user to guess at tiny, upside-down or cropped faces)
            if "dlib" in str(self.face_models.get("detector", "")):
                text += ("\n  (dlib's detector misses a face under ~80 px across, one turned or partly hidden, "
                         "upside down, or cut by the frame; --face-models DIR gives SCRFD, which finds smaller ones)")
            else:
                text += (f"\n  (the detector misses a face under ~30 px across in the picture scaled to "
                         f"{self._looked_at_size()}, one upside down, or one cut to less than eyes and mouth)")
        elif self.frames and self.faces_restored and (self.faces_restored == self.faces_left_clean
                                                       or self.strength == 0.0):
            # (said plainly: "0 restored" mid-line, then tracks "restored toward" someone's photos, read as done)
            # (deinterlaced: "as they were" misstated frames whose fields were made one)
            frames = "the faces are as they were, the frames deinterlaced" if self.deinterlaced else \
                "the frames are as they were"
            text += "\nno face was changed: " + ("the picture is as it was" if self.photo else f"{frames}{encoded}")
        for warning in self.warnings():
            text += f"\nwarning: {one_line(warning)}"
        return text

    def warnings(self) -> list[str]:
        """What the user should know about the output, each a sentence (the summary's ``warning:``
        lines): faces their reference photos fit poorly or that look like someone else, and
        :attr:`problems` (what the input or output could not keep)."""
        said = []
        said += self._sets_matched_by_nobody()
        poor = self.poorly_matched()
        footage = "photo" if self.photo else "video"
        advice = (f"photos from the same footage fit ~0.8), so little of it is used: photos in the {footage}'s light "
                  "and pose help most (a face cut off by the frame's edge, or filling it, fits poorly whatever the photos)")
        if len(poor) == 1:
            track = self.per_track[poor[0]]
            said.append(f"{self._unit} {poor[0]} ({track.identity}): its reference photos' detail fits the face "
                        f"poorly ({track.reference_match:.2f} of 1; {advice}")
        elif poor:  # (one line for them all: a grid of faces gave a line each)
            fits = ", ".join(f"{self._unit} {tid} ({self.per_track[tid].identity}) {self.per_track[tid].reference_match:.2f}"
                             for tid in poor[:SUMMARY_TRACKS])
            more = f", and {len(poor) - SUMMARY_TRACKS} more" if len(poor) > SUMMARY_TRACKS else ""
            said.append(f"{_n(len(poor), 'face' if self.photo else 'face track')}: their reference photos' detail fits "
                        f"them poorly (of 1: {fits}{more}; {advice}")
        unlike = self.unlike_their_references()
        if unlike:
            names = ", ".join(sorted({self.per_track[tid].identity for tid in unlike}))
            scores = ", ".join(f"{self._unit} {tid}: {self.per_track[tid].scores[self.per_track[tid].identity]:.2f}"
                               for tid in unlike[:SUMMARY_TRACKS])
            more = f", and {len(unlike) - SUMMARY_TRACKS} more" if len(unlike) > SUMMARY_TRACKS else ""
            said.append(f"{_n(len(unlike), 'face' if self.photo else 'face track')} restored toward {names}'s "
                        "photos scored below the "
                        f"{self._unlike_below:.2f} of the same person against them ({scores}{more}): someone else, "
                        "perhaps, or a face too blurred, turned, covered (a mask, sunglasses, a hand) or coloured by "
                        "the light to be recognised (if someone else: `--unmatched skip` leaves such faces alone; "
                        "`--refs NAME=DIR` once per person matches each face to its own)")
        small = self._small_faces()
        if small:
            said.append(small)
        if self.faces_invalid:
            said.append(f"the restorer gave invalid values (NaN or infinity) for {_n(self.faces_invalid, 'face')}, "
                        "left as they were: its model file may be damaged (compare its sha256, in --json, with the "
                        "model card's), or a cached program of it (`streamrestore cache --clear engines`)")
        return said + list(self.problems)


# --- the threaded loop ---------------------------------------------------------------------

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def run_threaded(source: Iterable[Any], process: Callable[[Iterable[Any]], Iterable[Any]], sink: Callable[[Any], None], *,
                 queue_size: int = 8, on_frame: Callable[[], object] | None = None) -> None:
    """Reader thread → ``process`` (this thread) → writer thread, with bounded queues.

    An exception in any of the three stops all of them and is re-raised here; so is
    KeyboardInterrupt.

    Args:
        source: iterated on the reader thread.
        process: maps an iterable of inputs to an iterator of outputs (it may hold some back,
            e.g. for tracker lookahead).
        sink: called on the writer thread for each output, in order.
        queue_size: frames each queue holds: they bound memory on each side, whatever the
            video length.
        on_frame: called once per output handed to the writer.
    """
    inbox: queue.Queue = queue.Queue(maxsize=queue_size)
    outbox: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read():
        try:
            for item in source:
                if not put(inbox, item):
                    return
            put(inbox, _END)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            put(inbox, _Failure(exc))

    writer_error: list[BaseException] = []

    def write():
        try:
            while True:
                item = outbox.get()
                if item is _END:
                    return
                sink(item)
        except BaseException as exc:
            writer_error.append(exc)
            stop.set()

    def inputs():
        while True:
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                if writer_error:
                    return
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    reader = threading.Thread(target=read, name="streamrestore-reader", daemon=True)
    writer = threading.Thread(target=write, name="streamrestore-writer", daemon=True)
    reader.start()
    writer.start()
    try:
        for out in process(inputs()):
            if not put(outbox, out):
                break
            if on_frame is not None:
                on_frame()
        if not writer_error:
            put(outbox, _END)
    except BaseException:
        stop.set()
        raise
    finally:
        if stop.is_set():
            # Unblock the writer so it can exit; what it would have written is abandoned.
            try:
                while True:
                    outbox.get_nowait()
            except queue.Empty:
                pass
            outbox.put(_END)
        writer.join()
        stop.set()
        reader.join(timeout=5)
    if writer_error:
        raise writer_error[0]


#: the bytes of frames written between two runs of Python's cyclic garbage collector in :func:`restore_frames`:
#: every ~3 frames of 4K 10-bit, ~20 of 1080p. A full collection over a loaded model's ~500 000 objects took
#: 257 ms; over those made since the run began (:func:`_heap_frozen`), at most 6 ms (1080p, every 21 frames).
#: The 4K 10-bit clip's peak: 4.93 GB before, 4.19 GB with (4.87 GB collecting the young generations only).
SWEEP_EVERY_BYTES = 64 << 20
_frozen_lock = threading.Lock()
# runs of restore_frames under way in this process (the heap is frozen while any is), and whether the first froze it
_frozen_runs: list = [0, False]


@contextlib.contextmanager
def _heap_frozen():
    """Python's objects as they are when a run begins left out of its garbage collections until the last run
    under way ends (``gc.freeze``: the model's and the libraries' objects, long-lived), so that the collections
    :func:`restore_frames` asks for look at the run's own objects only. The run's garbage is collected as it
    ends (else the next run froze it: frames piled up run after run in a batch worker). A heap the application
    froze itself (before forking workers) is left as it is, not unfrozen."""
    with _frozen_lock:
        if not _frozen_runs[0]:
            _frozen_runs[1] = gc.get_freeze_count() == 0
            if _frozen_runs[1]:
                gc.freeze()
        _frozen_runs[0] += 1
    try:
        yield
    finally:
        gc.collect()  # (the frames written since the last sweep, those an error left in the queues)
        with _frozen_lock:
            _frozen_runs[0] -= 1
            if not _frozen_runs[0] and _frozen_runs[1]:
                gc.unfreeze()


def _frame_bytes(frame: Any) -> int:
    """The bytes of a frame's pictures (an ``av.VideoFrame``'s planes, an array's)."""
    planes = getattr(frame, "planes", None)
    if planes is not None:
        return sum(plane.buffer_size for plane in planes)
    return int(getattr(frame, "nbytes", 0))


def restore_frames(frames: Iterable[Any], sink: FrameSink, face_restorer: FaceRestorer | None = None, *,
                   on_frame: Callable[[], object] | None = None, queue_size: int = 8) -> float:
    """Decoded ``frames`` → ``face_restorer`` → ``sink.write``, in :func:`run_threaded`.

    Args:
        frames: decoded frames in order (e.g. :meth:`VideoReader.frames
            <streamrestore.video.reader.VideoReader.frames>`), iterated on the reader thread.
        sink: where the restored frames go, in order, on the writer thread (its ``write``;
            closing it is the caller's: a :class:`~streamrestore.video.writer.VideoWriter` is
            finished by its ``with`` block, once the whole run succeeded).
        face_restorer: restores the frames (None: they pass through, the decode+encode floor
            ``bench`` measures). Its colour conversion, detection and tracking
            (:meth:`FaceRestorer.prepare <streamrestore.pipeline.FaceRestorer.prepare>` with
            ``track=True``) run on the reader thread: they overlap the restoring of the frame before.
        on_frame: called once per frame handed to the writer (a progress display's ``update``).
        queue_size: frames each queue holds (see :func:`run_threaded`).

    Returns:
        The seconds spent in ``sink.write`` (the run's ``encode`` time).
    """
    spent = [0.0]
    unswept = [0]  # bytes of the frames written since the last collection

    def write(frame: Any) -> None:
        t0 = time.perf_counter()
        sink.write(frame)
        spent[0] += time.perf_counter() - t0
        unswept[0] += _frame_bytes(frame)
        if unswept[0] >= SWEEP_EVERY_BYTES:
            # (PyAV 18: a frame whose side data was read is in a reference cycle with it, and is freed by the
            # cyclic collector only, which a run of few Python objects seldom wakes: a 4K 10-bit clip held ~100
            # frames, 1.1 GB of its 4.9 GB peak; a collection of the young generations alone freed none)
            unswept[0] = 0
            gc.collect()

    with _heap_frozen():
        if face_restorer is None:
            run_threaded(frames, iter, write, queue_size=queue_size, on_frame=on_frame)
        else:
            prepared = (face_restorer.prepare(f, track=True) for f in frames)
            run_threaded(prepared, face_restorer.stream, write, queue_size=queue_size, on_frame=on_frame)
    return spent[0]


# --- progress ------------------------------------------------------------------------------


class Progress(Protocol):
    """A progress display (``tqdm`` has this shape too)."""

    def update(self, n: int = 1) -> object:
        """Counts ``n`` more frames done."""
        ...

    def close(self) -> None:
        """Ends the display."""
        ...


def expected_frames(info: VideoInfo, start: float | None, end: float | None) -> int | None:
    """About how many frames the [start, end) window of a video holds.

    Args:
        info: the video's description.
        start: the window's start in seconds (None: the beginning).
        end: the window's end in seconds (None: the end).

    Returns:
        The frame count, or None when unknown.
    """
    if start is None and end is None:
        return info.frame_count
    if not info.frame_rate:
        return None
    # the window counts on the players' clock (from the container's start); the video may begin
    # later on it (a phone clip's first frame at 0.84 s)
    first = info.start_time - info.origin if info.start_time is not None else 0.0
    last = end
    if info.duration is not None:
        last = first + info.duration if last is None else min(last, first + info.duration)
    if last is None:
        return None
    return max(0, round((last - max(start or 0.0, first)) * float(info.frame_rate)))


def make_progress(total: int | None, progress: ProgressMode, interval: float | None = None,
                  unit: str = "frame") -> Progress | None:
    """The progress display ``progress`` asks for (see :data:`ProgressMode`), or None.

    Args:
        total: frames expected (None: unknown).
        progress: False, True, ``"bar"`` or ``"lines"``.
        interval: seconds between plain lines (default :data:`PROGRESS_INTERVAL`, read at the
            time of the call).
        unit: what is counted ("frame"; eval's people: "person"), said in the singular.

    Raises:
        ValueError: ``progress`` is none of those.
    """
    if progress not in (False, True, "bar", "lines"):
        raise ValueError(f"progress must be True, False, 'bar' or 'lines', got {progress!r}")
    if not progress:
        return None
    if progress == "bar" or (progress is True and _terminal_draws_a_bar()):
        from tqdm import tqdm

        # under NARROW_COLUMNS the bar had no width left and its rate was cut ("21.15f"): the figures alone
        compact = _terminal_columns() < NARROW_COLUMNS
        return tqdm(total=total, unit=unit, dynamic_ncols=True, smoothing=0.1,
                    bar_format=(COMPACT_BAR if total else COMPACT_COUNT.replace("frames", _plural(unit)))
                    if compact else None)
    return ProgressLines(total, PROGRESS_INTERVAL if interval is None else interval, unit=unit)


#: a terminal narrower than this gets the progress's figures without the bar (:data:`COMPACT_BAR`)
NARROW_COLUMNS = 60
COMPACT_BAR = "{percentage:3.0f}% {n_fmt}/{total_fmt} ETA {remaining}"
COMPACT_COUNT = "{n_fmt} frames, {rate_fmt}"


def _plural(unit: str) -> str:
    return {"person": "people"}.get(unit, unit + "s")


def _terminal_columns() -> int:
    """Standard error's width in columns (a large number where it cannot be asked: tqdm's own default then)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 10_000


def _terminal_draws_a_bar() -> bool:
    """Whether standard error is a terminal a redrawn bar works on: not one that says it cannot
    move the cursor (``TERM=dumb``: Emacs' shell, some IDE consoles, where each redraw became a new
    line of block characters) and not one that reports no width (a pty nobody sized, where the bar
    drew nothing at all)."""
    if not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        return False
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return True  # (a terminal whose size cannot be asked: tqdm's own default width)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLines:
    """Progress as a plain line every ``interval`` seconds, for stderr that is not a terminal
    (a bar's carriage returns do not work in a log file, and a silent five-minute run looks hung):

        progress: 1200/9000 frames (13%), 11.8 fps, ETA 11:01

    Args:
        total: frames expected (None or 0: unknown; the line then has no percent or ETA).
        interval: seconds between lines.
        clock: seconds, monotonic; there for tests.
        stream: where lines go (default None: ``sys.stderr`` at the time of each line); there
            for tests.
        unit: what is counted, in the singular (default "frame"; eval counts people).

    Raises:
        ValueError: ``interval`` is not a number of seconds >= 0.
    """

    def __init__(self, total: int | None, interval: float = PROGRESS_INTERVAL, *,
                 clock: Callable[[], float] = time.monotonic, stream: TextIO | None = None, unit: str = "frame") -> None:
        if not interval >= 0:
            raise ValueError(f"progress interval must be >= 0 seconds, got {interval!r}")
        self.total = total if total else None
        self.interval = float(interval)
        self.done = 0
        self.unit, self.units = unit, _plural(unit)
        self._clock = clock
        self._stream = stream
        self._start = clock()
        self._next = self._start + self.interval
        # (time, frames done) at the start and at each line: the rate is the last RATE_WINDOW_SECONDS'
        self._samples: deque[tuple[float, int]] = deque([(self._start, 0)])

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more frames done; prints a line when ``interval`` has passed."""
        self.done += n
        now = self._clock()
        if now >= self._next:
            self._next = now + self.interval
            stream = self._stream if self._stream is not None else sys.stderr
            print(self.line(now), file=stream, flush=True)

    def line(self, now: float) -> str:
        """The progress line at time ``now`` (on ``clock``): its rate (and ETA from it) is that of
        about the last :data:`RATE_WINDOW_SECONDS` (the whole run's before then)."""
        while len(self._samples) > 1 and now - self._samples[1][0] >= RATE_WINDOW_SECONDS:
            self._samples.popleft()  # (the oldest kept is the latest at least a window old)
        then, done_then = self._samples[0]
        self._samples.append((now, self.done))
        elapsed = now - then
        fps = (self.done - done_then) / elapsed if elapsed > 0 else 0.0
        # (eval's people take a minute or more each: "0.01 people/s" read as nothing)
        rate = (f"{fps:.1f} fps" if self.units == "frames" else f"{fps:.1f} {self.units}/s" if fps >= 1
                else f"{1 / fps:.0f} s a {self.unit}" if fps else "-")
        if self.total is None:
            return f"progress: {self.done} {self.units}, {rate}"
        percent = min(100.0, 100.0 * self.done / self.total)
        text = f"progress: {self.done}/{self.total} {self.units} ({percent:.0f}%), {rate}"
        if fps > 0:
            text += f", ETA {_clock(max(0, self.total - self.done) / fps)}"
        return text

    def close(self) -> None:
        """Prints nothing more (the run's summary follows)."""
