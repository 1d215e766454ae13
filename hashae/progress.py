"""Progress bars: tqdm, shown on a terminal by default, with a free-form status after the rate."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress(tqdm):
    """``with Progress(total, "encode", unit="img") as bar: bar.update(n, loss=0.1)``: count,
    rate and ETA on stderr, redrawn at most ten times a second; ``enabled`` None means "when
    stderr is a terminal"."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", enabled: bool | None = None,
                 stream=None):
        stream = stream or sys.stderr
        super().__init__(total=total, desc=desc, unit=unit, file=stream, mininterval=0.1, leave=True,
                         disable=not (_isatty(stream) if enabled is None else enabled), dynamic_ncols=True)

    def update(self, n: int = 1, **status) -> None:
        if status and not self.disable:
            self.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in status.items()},
                             refresh=False)
        super().update(n)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
