"""Progress bars: tqdm, shown on a terminal by default, with a free-form status after the rate."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress(tqdm):
    """``with Progress(total, "encode", unit="img") as bar: bar.update(n, loss=0.1)``: count,
    rate and ETA on stderr, redrawn at most ten times a second; ``enabled`` None means "when
    stderr is a terminal"."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", enabled: bool | None = None,
                 stream=None, bar_format: str | None = None):
        stream = stream or sys.stderr
        super().__init__(total=total, desc=desc, unit=unit, file=stream, mininterval=0.1, leave=True,
                         disable=not (_isatty(stream) if enabled is None else enabled), dynamic_ncols=True,
                         bar_format=bar_format)

    def update(self, n: int = 1, **status) -> None:
        if status and not self.disable:
            self.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in status.items()},
                             refresh=False)
        super().update(n)


class PhasedProgress:
    """One bar over phases of unequal cost, so that its ETA covers all of them from the first
    step: ``plan`` maps phase name -> (items, cost per item); ``phase(name)`` gives the counter
    of one phase, whose ``update(n, **status)`` advances the bar by n items at that cost. The
    bar shows the phase, percent done, elapsed and remaining time, and the status."""

    FORMAT = "{desc}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"

    def __init__(self, plan: dict, desc: str = "fit", enabled: bool | None = None, stream=None):
        self.plan, self.desc = plan, desc
        total = sum(n * cost for n, cost in plan.values())
        self.bar = Progress(max(total, 1e-9), desc, enabled=enabled, stream=stream, bar_format=self.FORMAT)
        self.done = 0.0

    def phase(self, name: str) -> "_PhaseCounter":
        self.bar.set_description(f"{self.desc} ({name})")  # drawn now: a phase change is news
        return _PhaseCounter(self, self.plan.get(name, (0, 0.0))[1])

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "PhasedProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _PhaseCounter:
    def __init__(self, owner: PhasedProgress, cost: float):
        self.owner, self.cost = owner, cost

    def update(self, n: int = 1, **status) -> None:
        bar = self.owner.bar
        step = min(n * self.cost, max(bar.total - self.owner.done, 0.0))  # a longer phase stops at 100%
        self.owner.done += step
        bar.update(step, **status)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
