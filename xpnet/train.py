"""Training: mini-batch gradient descent with validation, early stopping and checkpoints.

``fit`` is the one-call API; ``Trainer`` holds the loop's state (epoch, batch, RNG,
running sums, early-stopping memory) so a run can be checkpointed after any batch and
resumed to bit-identical weights on the CPU. Shuffling uses a generator seeded by
``(seed, epoch)``, so resuming needs only the epoch number, not a saved stream.
Loss and accuracy accumulate on the device and are read once per epoch: no host sync
per step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import backend
from .errors import ConfigError, DivergedError
from .preprocess import train_val_split
from .progress import ProgressBar


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = 5
    monitor: str = "val_loss"  # or "val_acc"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if self.monitor not in ("val_loss", "val_acc"):
            raise ConfigError(f"early stopping monitors 'val_loss' or 'val_acc', not {self.monitor!r}")
        if int(self.patience) < 1:
            raise ConfigError(f"early-stopping patience must be >= 1, got {self.patience}")

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.monitor == "val_loss":
            return value < best - self.min_delta
        return value > best + self.min_delta


@dataclass
class History:
    """Per-epoch records: ``epoch, train_loss, train_acc, val_loss, val_acc, epoch_s, samples_per_s``."""

    records: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(net, X, y, batch_size: int = 4096) -> dict:
    """Mean loss (without the L2 term) and accuracy of ``net`` on ``(X, y)``."""
    xp = net.xp
    X = xp.asarray(X)
    X = X.reshape(X.shape[0], -1) if X.ndim > 2 else X
    y = xp.asarray(y)
    net.check_inputs(X, y)
    from .losses import loss_and_grad  # noqa: PLC0415

    total_loss, correct = xp.zeros((), dtype=np.float64), xp.zeros((), dtype=np.int64)
    for start in range(0, X.shape[0], batch_size):
        xb = xp.asarray(X[start : start + batch_size], dtype=net.dtype)
        T = net.targets(y[start : start + batch_size])
        logits = net.forward(xb).copy()
        correct += net.correct(logits, T)
        rows = xp.empty(xb.shape[0], dtype=net.dtype)
        loss_and_grad(net.loss_name, net.output, logits, T, logits, rows, net.ops)
        total_loss += rows.sum(dtype=np.float64)
    n = X.shape[0]
    return {"loss": float(total_loss) / n, "accuracy": int(correct) / n}


class Trainer:
    """The training loop and its resumable state."""

    def __init__(
        self,
        net,
        opt,
        X,
        y,
        batch_size: int = 128,
        val=None,
        l2: float = 0.0,
        shuffle: bool = True,
        early_stopping=None,
        seed: int = 0,
        callbacks=(),
        progress: bool = False,
        augment=None,
    ):
        if int(batch_size) < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if float(l2) < 0:
            raise ConfigError(f"L2 strength must be >= 0, got {l2}")
        self.net, self.opt = net, opt
        xp = net.xp
        X = X.reshape(X.shape[0], -1) if X.ndim > 2 else X
        if isinstance(val, float):
            X, y, Xv, yv = train_val_split(X, y, val, seed=seed)
            val = (Xv, yv)
        net.check_inputs(X, y)
        # Upload once: every later gather happens on the device.
        self.X = xp.asarray(X, dtype=net.dtype)
        self.y = xp.asarray(y)
        if val is not None:
            Xv, yv = val
            Xv = Xv.reshape(Xv.shape[0], -1) if Xv.ndim > 2 else Xv
            net.check_inputs(Xv, yv)
            self.val = (xp.asarray(Xv, dtype=net.dtype), xp.asarray(yv))
        else:
            self.val = None
        self.batch_size = min(int(batch_size), self.X.shape[0])
        self.l2 = float(l2)
        self.shuffle = bool(shuffle)
        if isinstance(early_stopping, int) and not isinstance(early_stopping, bool):
            early_stopping = EarlyStopping(patience=early_stopping)
        if early_stopping is not None and self.val is None:
            raise ConfigError("early stopping needs validation data (pass val=(X, y) or a fraction)")
        self.early_stopping = early_stopping
        self.seed = int(seed)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.augment = augment  # e.g. xpnet.augment.Augmenter: applied to each training batch
        self.history = History()
        self.stop_requested = False
        # Resumable position: epochs done, batches done inside the current epoch, running sums.
        self.epoch = 0
        self.batch = 0
        self._partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}
        self._best = {"value": None, "epoch": None, "wait": 0, "params": None}

    # ------------------------------------------------------------------ data order
    @property
    def n_batches(self) -> int:
        return math.ceil(self.X.shape[0] / self.batch_size)

    def _epoch_order(self, epoch: int):
        n = self.X.shape[0]
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return self.net.xp.asarray(order)

    def _dropout_seed(self, epoch: int) -> int:
        return (self.seed * 1_000_003 + epoch * 7919 + 1) % 2**63

    # ------------------------------------------------------------------ loop
    def run(self, epochs: int, handle_sigint: bool = False) -> History:
        """Train until ``epochs`` epochs are done, early stopping fires, or a stop is requested."""
        if int(epochs) < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        guard = _sigint_stops(self) if handle_sigint else contextlib.nullcontext()
        # A diverging run overflows before its loss turns NaN; DivergedError reports that in one
        # line, so NumPy's overflow/invalid warnings would only be noise above it.
        with guard, np.errstate(over="ignore", invalid="ignore"):
            while self.epoch < epochs and not self.stop_requested:
                record = self._run_epoch(epochs)
                if record is None:  # stopped mid-epoch
                    self.history.interrupted = True
                    break
                if self._after_epoch(record):
                    break
        if self.stop_requested:
            self.history.interrupted = True
        self._restore_best()
        return self.history

    def _run_epoch(self, epochs: int) -> dict | None:
        net, opt, xp = self.net, self.opt, self.net.xp
        bs = self.batch_size
        order = self._epoch_order(self.epoch)
        if self.batch == 0:
            net.dropout_rng = xp.random.default_rng(self._dropout_seed(self.epoch))
        loss_sum = xp.asarray(self._partial["loss_sum"], dtype=np.float64)
        correct = xp.asarray(self._partial["correct"], dtype=np.int64)
        seen = self._partial["seen"]
        bar = ProgressBar(self.n_batches, f"epoch {self.epoch + 1}/{epochs}", enabled=self.progress)
        bar.update(self.batch)
        backend.synchronize(xp)
        start = time.perf_counter() - self._partial["elapsed"]
        xb_full = xp.empty((bs, self.X.shape[1]), dtype=net.dtype)
        yb_full = xp.empty(bs, dtype=self.y.dtype)
        for b in range(self.batch, self.n_batches):
            idx = order[b * bs : (b + 1) * bs]
            m = idx.shape[0]
            xb, yb = (xb_full, yb_full) if m == bs else (xb_full[:m], yb_full[:m])
            backend.take_rows(self.X, idx, xb)
            backend.take_rows(self.y, idx, yb)
            if self.augment is not None:
                self.augment.reseed(self.epoch, b)  # per batch: a resumed run augments identically
                self.augment(xb, out=xb)
            loss, n_correct = net.loss_and_grad(xb, yb, l2=self.l2, check=False)
            opt.step(net.flat_params, net.flat_grads)
            loss_sum += loss * m
            correct += n_correct
            seen += m
            self.batch = b + 1
            bar.update(1, m)
            if self.stop_requested and self.batch < self.n_batches:
                bar.close()
                backend.synchronize(xp)
                self._partial = {"loss_sum": float(loss_sum), "correct": int(correct), "seen": seen, "elapsed": time.perf_counter() - start}
                return None
        backend.synchronize(xp)
        elapsed = time.perf_counter() - start
        bar.close()
        return self._finish_epoch(float(loss_sum), int(correct), seen, elapsed)

    def _finish_epoch(self, loss_sum: float, correct: int, seen: int, elapsed: float) -> dict:
        """The epoch's record (validation included); advances the position to the next epoch."""
        train_loss = loss_sum / seen
        if not math.isfinite(train_loss):
            raise DivergedError(
                f"loss became {train_loss} in epoch {self.epoch + 1}; try a lower learning rate (now {self.opt.lr:g})"
            )
        record = {
            "epoch": self.epoch + 1,
            "train_loss": train_loss,
            "train_acc": correct / seen,
            "val_loss": None,
            "val_acc": None,
            "epoch_s": elapsed,
            "samples_per_s": self.X.shape[0] / elapsed if elapsed > 0 else float("inf"),
        }
        if self.val is not None:
            scores = evaluate(self.net, *self.val)
            record["val_loss"], record["val_acc"] = scores["loss"], scores["accuracy"]
        self.epoch += 1
        self.batch = 0
        self._partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}
        return record

    def _after_epoch(self, record: dict) -> bool:
        """Log the epoch, run callbacks and early stopping; True when training should stop."""
        self.history.records.append(record)
        es = self.early_stopping
        stop = False
        if es is not None:
            value = record[es.monitor]
            if es.improved(value, self._best["value"]):
                self._best.update(value=value, epoch=record["epoch"], wait=0)
                if es.restore_best:
                    self._best["params"] = self.net.flat_params.copy()
            else:
                self._best["wait"] += 1
                stop = self._best["wait"] >= es.patience
            self.history.best_epoch = self._best["epoch"]
            self.history.stopped_early = stop
        for callback in self.callbacks:
            callback(record, self)
        return stop or self.stop_requested

    def _restore_best(self) -> None:
        if self.early_stopping is not None and self.early_stopping.restore_best and self._best["params"] is not None:
            self.net.flat_params[...] = self._best["params"]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """JSON-able loop state plus arrays (``arrays``) for a checkpoint."""
        rng_state = None
        if self.net.xp is np:
            rng_state = self.net.dropout_rng.bit_generator.state
        best = {k: v for k, v in self._best.items() if k != "params"}
        arrays = {"opt_" + k: backend.to_numpy(v) for k, v in self.opt.state.items()}
        if self._best["params"] is not None:
            arrays["best_params"] = backend.to_numpy(self._best["params"])
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "partial": dict(self._partial),
            "best": best,
            "dropout_rng": rng_state,
            "optimizer": {"name": self.opt.name, "t": self.opt.t, "hyperparams": self.opt.hyperparams()},
            "history": self.history.to_dict(),
            "arrays": arrays,
        }

    def load_state_dict(self, sd: dict) -> None:
        xp = self.net.xp
        self.epoch, self.batch = int(sd["epoch"]), int(sd["batch"])
        self._partial = dict(sd["partial"])
        arrays = sd.get("arrays", {})
        self._best = dict(sd["best"], params=xp.asarray(arrays["best_params"]) if "best_params" in arrays else None)
        state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}
        self.opt.load_state_dict({"name": sd["optimizer"]["name"], "t": sd["optimizer"]["t"], "state": state}, xp)
        hist = sd["history"]
        self.history = History(list(hist["records"]), hist.get("best_epoch"), hist.get("stopped_early", False))
        if self.batch > 0 and sd.get("dropout_rng") is not None and xp is np:
            rng = np.random.default_rng()
            rng.bit_generator.state = sd["dropout_rng"]
            self.net.dropout_rng = rng


@contextlib.contextmanager
def _sigint_stops(trainer: Trainer):
    """First Ctrl-C: finish the current batch and stop cleanly; a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(
    net,
    opt,
    X,
    y,
    epochs: int = 10,
    batch_size: int = 128,
    val=None,
    l2: float = 0.0,
    shuffle: bool = True,
    early_stopping=None,
    seed: int = 0,
    callbacks=(),
    progress: bool = False,
) -> History:
    """Train ``net`` with ``opt`` on ``(X, y)``; returns the per-epoch :class:`History`.

    ``val`` is ``None``, ``(X_val, y_val)`` or a fraction of ``X`` to hold out (stratified).
    ``early_stopping`` is ``None``, a patience (int) or an :class:`EarlyStopping`.
    Batch sizes ``len(X)``, ``b`` and ``1`` give batch, mini-batch and stochastic GD.
    """
    trainer = Trainer(net, opt, X, y, batch_size, val, l2, shuffle, early_stopping, seed, callbacks, progress)
    return trainer.run(epochs)
