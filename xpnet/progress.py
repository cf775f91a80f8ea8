"""A small progress bar on stderr: batches done, samples/s, ETA and the running loss.

Redraws at most every 0.1 s so the bar costs nothing per step, and prints nothing when
stderr is not a terminal (logs stay clean; the per-epoch summary line still appears).
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None, width: int = 28,
                 unit: str = "samples"):
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.width = width
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self.done = 0
        self.samples = 0

    def update(self, steps: int = 1, samples: int = 0, info: str = "") -> None:
        self.done += steps
        self.samples += samples
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and self.done < self.total:
            return
        self._last_draw = now
        elapsed = now - self.start
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        rate = self.samples / elapsed if elapsed > 0 else 0.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        bar = "█" * filled + "·" * (self.width - filled)
        self.stream.write(f"\r{self.label} {bar} {frac:4.0%} {self.done}/{self.total} {rate:,.0f} {self.unit}/s ETA {eta:4.1f}s {info}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
