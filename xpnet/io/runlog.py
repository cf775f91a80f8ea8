"""The metrics log of a run: one JSON object per line, each with an ``event``, a UTC ``time`` and the
learning rate ``lr`` at that point.

Events: ``start`` (the resolved run config, model, device, versions), ``epoch`` (the History
record: losses, accuracies, learning rate, seconds), ``resume`` (a run continued from a
checkpoint), ``test`` (final scores) and ``end``. ``xpnet train --metrics``, ``fit(log=…)`` and
``xpnet report`` share it; ``xpnet train --config LOG`` replays the run it records. Every
write rewrites the file atomically, so a crash leaves the previous complete log.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from xpnet.errors import ConfigError
from xpnet.fileio import atomic_write


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read(path) -> list[dict]:
    """The events of a log; a line that is not a JSON object is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read metrics log {path}: {exc.strerror or exc}") from None
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise ConfigError(f"{path}:{number}: not a metrics log line (one JSON object per line)")
        events.append(event)
    return events


def run_config(events: list[dict], path="the log") -> dict:
    """The config recorded by a log's first ``start`` event (what replays the run)."""
    for event in events:
        if event.get("event") == "start" and isinstance(event.get("config"), dict):
            return event["config"]
    raise ConfigError(f"{path} records no run config (no 'start' event with a config)")


class RunLog:
    """An append-only JSON-lines log. ``append=True`` keeps the events already in the file; with
    ``keep_epochs`` (a resumed run) it drops what the resumed run redoes: epochs after that one,
    and the old run's test/end events."""

    def __init__(self, path, append: bool = False, keep_epochs: int | None = None):
        self.path = Path(path)
        self.lines: list[str] = []
        if append and self.path.exists():
            for event in read(self.path):
                if keep_epochs is not None and _redone(event, keep_epochs):
                    continue
                self.lines.append(json.dumps(event, ensure_ascii=False))

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": now(), **fields}
        self.lines.append(json.dumps(record, ensure_ascii=False))
        atomic_write(self.path, lambda fh: fh.write("\n".join(self.lines) + "\n"), mode="w")
        return record

    def epoch_callback(self, record: dict, trainer=None) -> None:
        """A Trainer callback: one ``epoch`` event per epoch, with the BLAS cores the run uses (the
        count that repeats it bit for bit: ``XPNET_BLAS_THREADS=N``)."""
        cores = trainer.blas_cores_in_use() if hasattr(trainer, "blas_cores_in_use") else None
        self.write("epoch", **record, **({"blas_cores": cores} if cores is not None else {}))


def recorded_blas_cores(events: list[dict]) -> int | None:
    """The BLAS cores a CPU run recorded in its epoch events (None: a GPU run, or an older log)."""
    for event in events:
        if event.get("event") == "epoch" and isinstance(event.get("blas_cores"), int):
            return event["blas_cores"]
    return None


def _redone(event: dict, keep_epochs: int) -> bool:
    kind = event.get("event")
    return kind in ("test", "end") or (kind == "epoch" and int(event.get("epoch") or 0) > keep_epochs)
