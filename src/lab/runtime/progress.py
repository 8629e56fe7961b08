"""Progress on a terminal: a spinner while something is awaited, a status line for fan-outs.

Both write to stderr, and only when stderr is a terminal: piped or redirected, labctl prints
exactly what it printed before (scripts parse it). The line is redrawn in place (``\\r``) and
erased when done, so it never mixes with the output.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TextIO

FRAMES = "|/-\\"
ERASE = "\r\033[K"


def on_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class StatusLine:
    """One line of stderr that is redrawn in place; does nothing off a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = on_terminal(self.stream)
        self.text = ""
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.text = text
            self.stream.write(ERASE + text)
            self.stream.flush()

    def clear(self) -> None:
        """Erase the line (before other output, and at the end); ``show`` draws it again."""
        if not self.enabled or not self.text:
            return
        with self._lock:
            self.stream.write(ERASE)
            self.stream.flush()
            self.text = ""


class Spinner:
    """``with Spinner("waiting for labd at URL"):`` shows ``| waiting for labd at URL (3s)``.

    The spinner runs in a thread owned by the ``with`` block (joined on exit), so it turns
    during blocking waits as well as trio ones. Off a terminal it does nothing.
    """

    def __init__(self, what: str, *, stream: TextIO | None = None, interval: float = 0.1):
        self.what = what
        self.line = StatusLine(stream)
        self.interval = interval
        self._stop = threading.Event()
        self._paused = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        if self.line.enabled:
            self._thread = threading.Thread(target=self._spin, name="labctl-spinner", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.line.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Erase the spinner while the block prints (it comes back on its next turn)."""
        with self._paused:
            self.line.clear()
            yield

    def _spin(self) -> None:
        started = time.monotonic()
        frame = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - started
            with self._paused:
                self.line.show(f"{FRAMES[frame % len(FRAMES)]} {self.what} ({elapsed:.0f}s)")
            frame += 1
            self._stop.wait(self.interval)
