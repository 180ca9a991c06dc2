"""Progress when stderr is not a terminal (nohup, CI, `> log 2>&1`): a plain line every few
seconds with frames, percent, fps and ETA; `--no-progress` silences it.
Time is a fake clock here: nothing waits."""
import io
import re

import pytest
from media_utils import make_clip

import streamrestore.run as run
from streamrestore.api import restore_video
from streamrestore.cli import main
from streamrestore.run import ProgressLines


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_lines_every_interval_with_percent_fps_and_eta():
    clock, out = FakeClock(), io.StringIO()
    progress = ProgressLines(total=400, interval=5.0, clock=clock, stream=out)
    for _ in range(80):  # 8 fps for 10 s (steps exact in binary)
        clock.now += 0.125
        progress.update()
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines == [  # at 5 s and at 10 s
        "progress: 40/400 frames (10%), 8.0 fps, ETA 0:45",
        "progress: 80/400 frames (20%), 8.0 fps, ETA 0:40",
    ]


def test_the_rate_is_the_last_minutes_so_a_slow_start_does_not_skew_it():
    """A first run exports its model when the first face comes (tens of seconds without a frame): the
    whole run's rate made the first minutes' lines say 0.2 fps and an ETA of hours. The rate is that
    of about the last RATE_WINDOW_SECONDS."""
    from streamrestore.run import RATE_WINDOW_SECONDS

    clock, out = FakeClock(), io.StringIO()
    progress = ProgressLines(total=3000, interval=5.0, clock=clock, stream=out)
    clock.now += 40  # the export
    progress.update(1)
    for _ in range(1200):  # then 10 fps for 120 s
        clock.now += 0.1
        progress.update()
    last = out.getvalue().splitlines()[-1]
    done = int(last.split()[1].split("/")[0])
    assert RATE_WINDOW_SECONDS <= 120 - 5
    assert last == f"progress: {done}/3000 frames ({100 * done / 3000:.0f}%), 10.0 fps, ETA {run._clock((3000 - done) / 10)}"
    early = out.getvalue().splitlines()[1]  # at 45 s: the whole run so far (no line a window old yet)
    assert float(early.split(", ")[1].split()[0]) < 2


def test_unknown_total_and_long_eta():
    clock, out = FakeClock(), io.StringIO()
    progress = ProgressLines(total=None, interval=0, clock=clock, stream=out)
    clock.now += 2
    progress.update(4)
    assert out.getvalue() == "progress: 4 frames, 2.0 fps\n"
    progress = ProgressLines(total=100_000, interval=0, clock=clock, stream=out)
    clock.now += 1
    progress.update(10)
    assert out.getvalue().splitlines()[-1].endswith("10.0 fps, ETA 2:46:39")


def test_bad_interval_and_mode():
    with pytest.raises(ValueError):
        ProgressLines(10, interval=-1)
    with pytest.raises(ValueError):
        run.make_progress(10, "sparkles", 1.0)


def test_progress_mode_follows_the_terminal(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(run.make_progress(10, True, 1.0), ProgressLines)
    assert run.make_progress(10, False, 1.0) is None
    assert isinstance(run.make_progress(10, "lines", 1.0), ProgressLines)


def test_a_terminal_that_cannot_redraw_gets_plain_lines(monkeypatch):
    """TERM=dumb (Emacs' shell) turned each redraw of the bar into a new line; a pty of no width
    showed no bar at all. Both get the plain lines."""
    import os
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "fileno", lambda: 2, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((100, 30)))
    assert not isinstance(run.make_progress(10, True, 1.0), ProgressLines)  # the bar
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(run.make_progress(10, True, 1.0), ProgressLines)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((0, 0)))
    assert isinstance(run.make_progress(10, True, 1.0), ProgressLines)


def test_expected_frames_of_a_window():
    from types import SimpleNamespace

    info = SimpleNamespace(frame_count=250, frame_rate=25, duration=10.0, start_time=None, origin=0.0)
    assert run.expected_frames(info, None, None) == 250
    assert run.expected_frames(info, 2.0, 4.0) == 50
    assert run.expected_frames(info, 8.0, None) == 50
    assert run.expected_frames(info, None, 99.0) == 250
    # a video whose first frame is 0.84 s into the file (the window counts on the players' clock):
    # --end 3 holds 2.16 s of it, not 3 (the bar said 56/90 and finished at 65)
    late = SimpleNamespace(frame_count=300, frame_rate=30, duration=10.0, start_time=1.84, origin=1.0)
    assert run.expected_frames(late, None, 3.0) == 65
    assert run.expected_frames(late, 2.0, None) == round((10.84 - 2.0) * 30)
    assert run.expected_frames(late, 0.5, 1.0) == 5


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    make_clip(path, width=96, height=64, frames=6)
    return path


def test_restore_video_prints_lines_to_a_log(clip, tmp_path, capsys, monkeypatch):
    from streamrestore.pipeline import FaceRestorer

    monkeypatch.setattr(run, "PROGRESS_INTERVAL", 0.0)  # every frame, instead of every 5 s
    restore_video(clip, tmp_path / "o.mp4", FaceRestorer.from_options(model="identity", detector="dlib"),
                  progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]
    assert len(lines) == 6
    assert lines[-1].startswith("progress: 6/6 frames (100%), ") and "fps" in lines[-1]


def test_an_applications_own_progress_gets_every_frame_with_the_bar(clip, tmp_path, capsys, monkeypatch):
    """``on_frame``: a GUI's progress bar (or batch's count) is called once per frame written,
    beside the lines of ``progress``; anything but a function is refused before work starts."""
    from streamrestore.pipeline import FaceRestorer

    monkeypatch.setattr(run, "PROGRESS_INTERVAL", 0.0)
    restorer = FaceRestorer.from_options(model="identity", detector="dlib")
    seen = []
    restore_video(clip, tmp_path / "o.mp4", restorer, progress=True, on_frame=lambda: seen.append(len(seen)))
    assert seen == list(range(6))
    assert sum(line.startswith("progress: ") for line in capsys.readouterr().err.splitlines()) == 6
    with pytest.raises(ValueError, match="on_frame must be a function"):
        restore_video(clip, tmp_path / "p.mp4", restorer, on_frame=6)
    assert not (tmp_path / "p.mp4").exists()


def test_an_application_cancels_a_run_by_raising_from_on_frame(clip, tmp_path):
    """A service's cancel: what ``on_frame`` raises ends the run on the calling thread, with no output
    and no temporary file, and the same restorer serves the next run."""
    import threading

    from streamrestore.pipeline import FaceRestorer

    class Cancelled(Exception):
        pass

    restorer = FaceRestorer.from_options(model="identity", detector="dlib")
    threads = set()

    def cancel_after_two():
        threads.add(threading.current_thread())
        if cancel_after_two.calls == 2:
            raise Cancelled
        cancel_after_two.calls += 1

    cancel_after_two.calls = 0
    with pytest.raises(Cancelled):
        restore_video(clip, tmp_path / "o.mp4", restorer, on_frame=cancel_after_two)
    assert threads == {threading.current_thread()}
    assert [path.name for path in tmp_path.iterdir()] == [clip.name]  # (the input)
    assert restore_video(clip, tmp_path / "o.mp4", restorer).frames == 6


def test_cli_prints_progress_lines_unless_no_progress(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run, "PROGRESS_INTERVAL", 0.0)  # every frame, instead of every 5 s
    args = [str(clip), "--model", "identity", "--detector", "dlib", "--force", "-o", str(tmp_path / "o.mp4")]
    assert main(args) == 0
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert sum(line.startswith("progress: ") for line in err.splitlines()) == 6, err
    assert main(args + ["--no-progress"]) == 0
    assert "progress:" not in capsys.readouterr().err


def test_a_narrow_terminal_gets_the_figures_without_the_bar(monkeypatch, capsys):
    """At 40 columns the bar had no width left and the rate was cut off: "6%| | 1206/21579 [00:57<16:03, 21.15f"."""
    from streamrestore import run

    monkeypatch.setattr(run, "_terminal_columns", lambda: 40)
    for total, said in ((200, r"\b5% 10/200 ETA \d\d:\d\d"), (None, r"\b10 frames, ")):
        bar = run.make_progress(total, "bar")
        bar.update(10)
        bar.refresh()
        bar.close()
        err = capsys.readouterr().err
        assert re.search(said, err) and "|" not in err, err
    monkeypatch.setattr(run, "_terminal_columns", lambda: 120)
    bar = run.make_progress(200, "bar")
    bar.update(10)
    bar.close()
    assert "|" in capsys.readouterr().err  # (wide enough: the bar)


def test_a_warning_during_a_bar_has_a_line_of_its_own(monkeypatch):
    """A warning mid-run was glued to the end of the bar's line ("5% 5/99 ETA 00:05warning: track 1 ..."), and so
    read by a screen reader: the bar is cleared first and drawn again below it."""
    import io
    import logging
    import os
    import sys

    from streamrestore.cli.options import CliHandler

    terminal = io.StringIO()
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    terminal.fileno = lambda: 2  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((100, 30)))
    bar = run.make_progress(99, True, 1.0)
    assert not isinstance(bar, ProgressLines)
    bar.update(5)
    bar.refresh()
    record = logging.LogRecord("streamrestore", logging.WARNING, __file__, 1, "track 1 scores 0.20", None, None)
    CliHandler().emit(record)
    bar.close()
    said = terminal.getvalue()
    before = said[:said.index("warning: track 1")]
    assert before.rstrip(" ").endswith(("\r", "\n", "\x1b[A", "\x1b[K")), repr(said[-300:])
    assert "ETA" not in before.rsplit("\r", 1)[-1] and "5/99" in said.split("warning: track 1")[1]


def test_people_are_counted_in_seconds_each():
    """eval counts people, a minute or more each: "0.01 people/s" read as nothing."""
    out = io.StringIO()
    t = [0.0]
    progress = ProgressLines(total=12, interval=0, clock=lambda: t[0], stream=out, unit="person")
    t[0] = 150.0
    progress.update()
    assert out.getvalue().splitlines() == ["progress: 1/12 people (8%), 150 s a person, ETA 27:30"]
    quick = ProgressLines(total=40, interval=0, clock=lambda: t[0], stream=out, unit="person")  # (a second or less)
    t[0] += 0.5
    quick.update(10)
    assert out.getvalue().splitlines()[-1] == "progress: 10/40 people (25%), 20.0 people/s, ETA 0:02"

