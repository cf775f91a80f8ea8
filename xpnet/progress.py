"""Progress bars through tqdm (``tqdm.auto``: a text bar in a terminal, a widget in Jupyter).

A thin adapter so the training loop counts batches and samples without knowing tqdm: the bar
shows batches done, samples per second and the ETA, and is silent when disabled or when stderr
is not a terminal (logs stay clean; the per-epoch summary line still appears).
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None, unit: str = "samples"):
        self.total = max(int(total), 1)
        self.unit = unit
        self.start = time.perf_counter()
        self.done = 0
        self.samples = 0
        stream = stream or sys.stderr
        self._bar = None
        if enabled and (_in_notebook() or getattr(stream, "isatty", lambda: False)()):
            from tqdm.auto import tqdm  # noqa: PLC0415 - only when a bar is drawn

            counts = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if unit == "bytes" else {"unit": "batch"}
            self._bar = tqdm(total=self.total, desc=label, file=stream, leave=False, dynamic_ncols=True,
                             mininterval=0.1, **counts)

    def update(self, steps: int = 1, samples: int = 0, info: str = "") -> None:
        self.done += steps
        self.samples += samples
        if self._bar is not None and self.unit == "bytes":
            self._bar.update(steps)
        elif self._bar is not None:
            elapsed = time.perf_counter() - self.start
            rate = self.samples / elapsed if elapsed > 0 else 0.0
            self._bar.set_postfix_str(f"{rate:,.0f} {self.unit}/s {info}".rstrip(), refresh=False)
            self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()  # the final state (100 % when done) is drawn once before the bar is cleared
            self._bar.close()


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False
