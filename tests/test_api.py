"""The public surface: a small, typed restore_video, lazy names that type checkers see,
a py.typed marker, and an import that stays cheap."""
import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import streamrestore

REPO = Path(__file__).resolve().parents[1]


def test_restore_video_has_few_parameters_all_typed():
    signature = inspect.signature(streamrestore.restore_video)
    assert list(signature.parameters) == ["src", "dst", "restorer", "encoder", "start", "end", "force", "progress",
                                          "deinterlace", "on_frame"]
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
    assert signature.return_annotation is not inspect.Signature.empty
    assert [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY] == \
        ["encoder", "start", "end", "force", "progress", "deinterlace", "on_frame"]


def test_lazy_names_resolve_and_are_visible_to_type_checkers():
    tree = ast.parse((REPO / "streamrestore" / "__init__.py").read_text())
    checked = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                checked.update((imp.module, a.name) for a in imp.names)
    assert checked == {(module, name) for name, module in streamrestore._LAZY.items()}
    for name in streamrestore._LAZY:
        assert getattr(streamrestore, name) is not None
    with pytest.raises(AttributeError):
        streamrestore.no_such_name  # noqa: B018
    assert set(streamrestore.__all__) <= set(dir(streamrestore))  # tab completion finds the lazy names


def test_py_typed_ships_with_the_package():
    assert (REPO / "streamrestore" / "py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in data["tool"]["setuptools"]["package-data"]["streamrestore"]
    assert data["project"]["scripts"]["streamrestore"] == "streamrestore.cli:entry"
    from streamrestore.cli import entry

    assert callable(entry)


def test_import_and_cli_import_load_no_torch():
    code = "import sys, streamrestore, streamrestore.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
    # every command's --help too (bench's loaded torch for its choices: 2.5 s and 226 MB)
    code = ("import sys, contextlib, io\nfrom streamrestore.cli import main\n"
            "for command in ('bench', 'eval', 'batch', 'live', 'cache', 'train'):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main([command, '--help'])\n"
            "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout


def test_the_clis_names_of_backends_and_dtypes_are_the_librarys():
    """The commands name them without loading torch; the library owns them."""
    from streamrestore.backends import BACKENDS
    from streamrestore.bench import DTYPES
    from streamrestore.cli.bench import DTYPE_NAMES
    from streamrestore.cli.options import BACKEND_NAMES

    assert BACKEND_NAMES == BACKENDS and sorted(DTYPE_NAMES) == sorted(DTYPES)


def test_bad_arguments_are_named_before_anything_is_read(tmp_path):
    src = tmp_path / "missing.mp4"
    with pytest.raises(ValueError, match="progress"):
        streamrestore.restore_video(src, tmp_path / "o.mp4", progress="sparkles")
    with pytest.raises(ValueError, match="encoder"):
        streamrestore.restore_video(src, tmp_path / "o.mp4", encoder={"crf": 18})
    with pytest.raises(ValueError, match="restorer"):
        streamrestore.restore_video(src, tmp_path / "o.mp4", "lite")
    with pytest.raises(ValueError, match="start must be a number of seconds or None, got '5'"):
        streamrestore.restore_video(src, tmp_path / "o.mp4", start="5")


def test_a_window_no_video_has_is_a_user_error_before_anything_is_read(tmp_path):
    """A negative start and an end before the start raised a plain ValueError from the reader, where
    the docstring (and a start past the video's end) gives a UserError."""
    from streamrestore.errors import InputError

    src = tmp_path / "missing.mp4"  # (not read: the window is checked first)
    with pytest.raises(InputError, match=r"the window's start must be a time of 0 s or later, got -1 s"):
        streamrestore.restore_video(src, tmp_path / "o.mp4", start=-1)
    for window in ({"start": float("nan")}, {"end": 0}, {"end": -3}, {"end": float("inf")}):
        with pytest.raises(InputError, match=r"the window's (start|end) must be a time"):
            streamrestore.restore_video(src, tmp_path / "o.mp4", **window)
    with pytest.raises(InputError, match=r"the window's end \(2.0 s\) must be after its start \(5 s\)"):
        streamrestore.restore_video(src, tmp_path / "o.mp4", start=5, end=2.0)


def test_a_developers_usual_slips_are_named(tmp_path, caplog):
    """A restorer given second (where the output path goes), a picture for a path, a dict for the
    config, one frame given to stream(), and one person's photos given as a list of files: each said
    in one line naming the value (they ended deep in pathlib or PIL, or as an AttributeError)."""
    import numpy as np

    from streamrestore.errors import UserError
    from streamrestore.model.identity import IdentityRestorer
    from streamrestore.pipeline import FaceRestorer, build_face_restorer

    restorer = FaceRestorer(IdentityRestorer(64), detector=None)
    with pytest.raises(ValueError, match=r"dst must be a file path, got FaceRestorer \(pass the restorer as restorer="):
        streamrestore.restore_photo(tmp_path / "p.jpg", restorer)
    with pytest.raises(ValueError, match=r"dst must be a file path, got FaceRestorer"):
        streamrestore.restore_video(tmp_path / "v.mp4", restorer)
    with pytest.raises(ValueError, match=r"src must be a file path, got ndarray \(a file's path: a picture in memory "
                                         r"is restored by FaceRestorer.process\)"):
        streamrestore.restore_photo(np.zeros((8, 8, 3), np.uint8), tmp_path / "o.png")
    with pytest.raises(ValueError, match=r"config must be a PipelineConfig, got dict \(PipelineConfig\(\*\*fields\)"):
        build_face_restorer(config={"lookahead": 0}, model="identity", detector="dlib")
    with pytest.raises(ValueError, match="config must be a PipelineConfig"):
        FaceRestorer(IdentityRestorer(64), detector=None, config={"lookahead": 0})
    with pytest.raises(ValueError, match=r"stream takes frames \(e.g. \[frame\]"):
        next(restorer.stream(np.zeros((8, 8, 3), np.uint8)))
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    with caplog.at_level("WARNING", logger="streamrestore"), pytest.raises(UserError):  # (empty files)
        build_face_restorer([tmp_path / "a.jpg", tmp_path / "b.jpg"], model="identity", detector="dlib")
    assert "2 reference photos given one by one are 2 people of one photo each" in caplog.text


def test_readers_writers_and_live_sinks_are_the_protocols(tmp_path):
    from media_utils import make_clip

    from streamrestore.live.sinks import FileSink
    from streamrestore.types import FrameSink, FrameSource, LiveSink
    from streamrestore.video.reader import VideoReader
    from streamrestore.video.writer import EncoderSettings, VideoWriter

    src = tmp_path / "in.mp4"
    make_clip(src, width=64, height=64, frames=2)
    with VideoReader(src) as reader:
        assert isinstance(reader, FrameSource)
        with VideoWriter(tmp_path / "out.mp4", reader.info, EncoderSettings()) as writer:
            assert isinstance(writer, FrameSink)
            for frame in reader.frames():
                writer.write(frame)
    sink = FileSink(tmp_path / "live.mp4", 64, 64)
    try:
        assert isinstance(sink, LiveSink)
    finally:
        sink.abort()
