"""A small progress bar with count, rate, ETA and a free-form status (tqdm is not a dependency)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "encode") as bar: bar.update(n, loss=0.1)``; draws to stderr at
    most ten times a second and only when enabled (default: when stderr is a terminal)."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", enabled: bool | None = None,
                 stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.n, self.status = 0, ""
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1, **status) -> None:
        self.n += n
        if status:
            self.status = "  ".join(f"{k}={_fmt(v)}" for k, v in status.items())
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or (self.total and self.n >= self.total)):
            self._last = now
            self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            frac = min(1.0, self.n / self.total)
            bar = "#" * int(frac * 20)
            eta = (self.total - self.n) / rate if rate > 0 else 0
            line = f"{self.desc} [{bar:<20}] {self.n}/{self.total} {rate:,.1f} {self.unit}/s ETA {_clock(eta)}"
        else:
            line = f"{self.desc} {self.n} {rate:,.1f} {self.unit}/s {_clock(elapsed)}"
        if self.status:
            line += "  " + self.status
        self.stream.write("\r" + line[:160].ljust(80) + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic(), end="\n")
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
