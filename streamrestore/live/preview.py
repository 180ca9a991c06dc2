"""The preview window: original and restored side by side, fps and latency, keyboard controls.

OpenCV's Qt backend aborts the whole process when it cannot reach a display, so
:func:`check_display` asks the X server first (the same way Qt connects, through libxcb) and
raises a :class:`~streamrestore.errors.UserError` instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrestore.errors import UserError

log = logging.getLogger(__name__)

WINDOW_TITLE = "streamrestore live"

_NO_DISPLAY = "no display to open a preview window on{why}; run with --no-window (and --output FILE|URL) instead"


def _x_server_reachable(display: str) -> bool:
    """True if an X connection to ``display`` opens (libxcb, else a plain socket check)."""
    name = ctypes.util.find_library("xcb")
    if name:
        try:
            xcb = ctypes.CDLL(name)
            xcb.xcb_connect.restype = ctypes.c_void_p
            xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
            xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
            xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
            conn = xcb.xcb_connect(display.encode(), None)
            try:
                return conn is not None and xcb.xcb_connection_has_error(conn) == 0
            finally:
                if conn:
                    xcb.xcb_disconnect(conn)
        except (OSError, AttributeError):
            pass  # fall through to the socket check
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=2).close()
        return True
    except OSError:
        return False


def check_display() -> None:
    """Raises :class:`UserError` (exit 2) when no preview window can be opened."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        display = os.environ.get("DISPLAY", "")
        if not display:
            if os.environ.get("WAYLAND_DISPLAY"):
                why = " (DISPLAY is not set; OpenCV's window needs X11 or XWayland)"
            else:
                why = " (DISPLAY is not set)"
            raise UserError(_NO_DISPLAY.format(why=why))
        if not _x_server_reachable(display):
            raise UserError(_NO_DISPLAY.format(why=f" (cannot connect to X display {display})"))


def side_by_side(original: np.ndarray, restored: np.ndarray, max_width: int) -> np.ndarray:
    """One RGB picture, original left and restored right, scaled down to ``max_width``."""
    import cv2

    if restored.shape != original.shape:
        restored = cv2.resize(restored, (original.shape[1], original.shape[0]), interpolation=cv2.INTER_AREA)
    both = np.concatenate([original, restored], axis=1)
    if both.shape[1] > max_width:
        scale = max_width / both.shape[1]
        size = (max_width, max(1, round(both.shape[0] * scale)))
        both = cv2.resize(both, size, interpolation=cv2.INTER_AREA)
    return both


def _label(image: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    import cv2

    # Dark outline under light text: readable on any picture.
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


@dataclass
class Keys:
    """What the keys pressed since the last frame asked for."""

    quit: bool = False
    toggle_restore: bool = False
    snapshot: bool = False
    toggle_pause: bool = False


class PreviewWindow:
    """An OpenCV window showing original | restored with an fps / latency line.

    Keys: ``q`` (or Esc, or closing the window) quit, ``r`` toggle restoration, ``s`` save a
    snapshot PNG of both panes, space pause.

    Args:
        max_width: the two panes together are scaled down to at most this many pixels wide
            (default 1600: two 720p panes fit a 1080p screen).
        snapshot_dir: where ``s`` writes ``snapshot_<time>_<n>.png`` (default: current folder).
    """

    def __init__(self, *, max_width: int = 1600, snapshot_dir: str | Path = ".", title: str = WINDOW_TITLE):
        if max_width < 64:
            raise ValueError(f"max_width must be at least 64, got {max_width}")
        check_display()
        import cv2

        self.title = title
        self.max_width = max_width
        self.snapshot_dir = Path(snapshot_dir)
        self.snapshots: list[Path] = []
        self._last: np.ndarray | None = None  # clean composite (no text), for snapshots
        try:
            # GUI_NORMAL: no Qt toolbar or status bar, the window is the picture.
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            raise UserError(f"cannot open a preview window ({exc.err or exc}); run with --no-window") from None

    def show(self, original: np.ndarray, restored: np.ndarray, status: str, wait_ms: int = 1) -> Keys:
        """Shows one frame pair (RGB) with ``status`` on it; returns the keys pressed."""
        import cv2

        both = side_by_side(original, restored, self.max_width)
        self._last = both
        bgr = np.ascontiguousarray(both[..., ::-1])
        h, w = bgr.shape[:2]
        scale = max(0.4, min(1.0, h / 720))
        _label(bgr, "original", (10, h - 12), scale)
        _label(bgr, "restored", (w // 2 + 10, h - 12), scale)
        _label(bgr, status, (10, int(28 * scale) + 6), scale)
        cv2.imshow(self.title, bgr)
        return self.poll(wait_ms)

    def poll(self, wait_ms: int = 1) -> Keys:
        """Processes window events for ``wait_ms`` and returns the keys pressed."""
        import cv2

        keys = Keys()
        key = cv2.waitKey(max(1, wait_ms)) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            keys.quit = True
        elif key in (ord("r"), ord("R")):
            keys.toggle_restore = True
        elif key in (ord("s"), ord("S")):
            keys.snapshot = True
        elif key == ord(" "):
            keys.toggle_pause = True
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                keys.quit = True  # closed with the window manager's button
        except cv2.error:
            keys.quit = True
        return keys

    def snapshot(self) -> Path | None:
        """Saves the panes last shown (without the text) as a PNG; returns its path."""
        import cv2

        if self._last is None:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.snapshot_dir / f"snapshot_{stamp}_{len(self.snapshots) + 1}.png"
        if not cv2.imwrite(str(path), np.ascontiguousarray(self._last[..., ::-1])):
            log.warning("could not write snapshot %s", path)
            return None
        self.snapshots.append(path)
        log.info("saved snapshot %s", path)
        return path

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
