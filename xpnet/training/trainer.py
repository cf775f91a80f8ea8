"""Training: mini-batch gradient descent with validation, early stopping and checkpoints.

``fit`` is the one-call API; ``Trainer`` holds the loop's state (epoch, batch, RNG,
running sums, early-stopping memory) so a run can be checkpointed after any batch and
resumed to bit-identical weights on the CPU. Shuffling uses a generator seeded by
``(seed, epoch)``, so resuming needs only the epoch number, not a saved stream.

There is one epoch loop (:meth:`Trainer._run_epoch`) and one training step
(:meth:`Trainer._step`: gather the batch on the device, ``MLP.train_step``, the optimizer
update), which reads its batch offset, step count and learning rate from device arrays, so
the CUDA-graph trainer (``train_graph.py``) captures this very step and replays it. Loss and
accuracy accumulate on the device and are read once per epoch: no host sync per step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from xpnet import backend
from xpnet.errors import ConfigError, DivergedError
from xpnet.nn.model import StepCounters
from xpnet.ops import threads
from xpnet.ops.threads import blas_policy
from xpnet.data.preprocess import train_val_split
from xpnet.progress import ProgressBar


def _gather(ops, X, y, perm, t, t0, batch_size, Xb, yb, XT) -> None:
    """``ops.gather_batch``, and the batch transposed into ``XT`` (when not None) for a step that reads it."""
    ops.gather_batch(X, y, perm, t, t0, batch_size, Xb, yb)
    if XT is not None:
        XT[...] = Xb.T


def _transposed(room, Xb):
    """The first ``Xb.size`` elements of the flat buffer ``room``, shaped as ``Xb.T`` (None without one)."""
    return None if room is None else room[: Xb.size].reshape(Xb.shape[::-1])


class _DeviceState:
    """The training step's device-side buffers: the epoch's order ``perm``, the batch ``Xb``/``yb``,
    the :class:`~xpnet.nn.model.StepCounters`, ``t0`` (the step count at the epoch's batch 0) and
    ``lrs`` (per-step learning rates, for a capturable optimizer's device step); the graph trainer adds its own.
    On the CPU also ``XT`` (flat room for the batch transposed, where the step reads it, else None),
    ``spare`` (a second ``Xb``/``yb``/``XT`` the next batch is gathered into on a side core),
    ``t_ahead`` (that gather's step count) and ``ahead`` (the gather under way: job, step count, rows)."""


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
    """Per-epoch records: ``epoch, train_loss, train_acc, val_loss, val_acc, epoch_s, lr, samples_per_s``."""

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
    from xpnet.nn.losses import loss_and_grad  # noqa: PLC0415

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
        # Upload once: every later gather happens on the device. Class labels as int32: what
        # the gather, softmax and metrics kernels read.
        self.X = xp.ascontiguousarray(xp.asarray(X, dtype=net.dtype))
        y = xp.asarray(y)
        self.y = xp.ascontiguousarray(y.astype(np.int32) if y.ndim == 1 else y)
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
        # Dropout masks are a hash of (this seed, the step count, layer, element): nothing to save
        # in a checkpoint, the same on every device and inside a CUDA graph.
        net.dropout_seed = (self.seed * 1_000_003 + 1) % 2**63
        self.callbacks = list(callbacks)
        # Called as ``cb(trainer)`` after every step, on the host (one that reads the device syncs):
        # for curves sampled within epochs. Set stop_requested to stop after this step.
        self.step_callbacks: list = []
        self.progress = progress
        self.augment = augment  # e.g. xpnet.data.augment.Augmenter: applied to each training batch
        self.history = History()
        self.stop_requested = False
        # Resumable position: epochs done, batches done inside the current epoch, running sums. The
        # optimizer's step count is the one count: an optimizer that already took steps (a second
        # fit()) continues at the epoch those steps reach, so shuffling, dropout masks and the lr
        # schedule continue as in one longer run.
        self.epoch = -(-opt.t // self.n_batches)
        self.batch = 0
        self._partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}
        self._best = {"value": None, "epoch": None, "wait": 0, "params": None}
        self._dev: _DeviceState | None = None  # the step's device buffers, made by the first epoch
        self._lrs_filled = False
        # The BLAS cores the first run() chose (ops/threads.py); later runs and resumes reuse them,
        # so they round like one uninterrupted run. None until chosen.
        self.blas_cores: int | None = None
        self._blas = None  # the BLAS policy while run() is active
        self.gathered_ahead = 0  # batches the side core gathered (CPU; for benchmarks' records)
        self.side_switch = threads.SideSwitch()  # whether gathering ahead pays off on this machine now

    # ------------------------------------------------------------------ data order
    @property
    def n_batches(self) -> int:
        return math.ceil(self.X.shape[0] / self.batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = self.X.shape[0]
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    # ------------------------------------------------------------------ the step
    def _device_state(self, epochs: int) -> _DeviceState:
        """The step's device-side state, allocated once (and the lr table grown to ``epochs``)."""
        S = self._dev
        if S is None:
            net, xp, bs = self.net, self.net.xp, self.batch_size
            S = self._dev = _DeviceState()
            S.perm = xp.empty(self.X.shape[0], dtype=np.int64)
            S.counters = StepCounters(xp)
            S.t0 = xp.zeros(1, dtype=np.int32)
            S.Xb = xp.empty((bs, self.X.shape[1]), dtype=net.dtype)
            S.yb = xp.empty((bs, *self.y.shape[1:]), dtype=self.y.dtype)
            S.lrs = None
            S.spare, S.ahead, S.XT = None, None, None
            if not net.device.is_gpu:
                # The batch transposed, made with the gather (on the side core when it gathers ahead):
                # not with augmentation, which changes the batch after the gather.
                if self.augment is None and net.takes_transposed_batch(bs, self.l2):
                    S.XT = xp.empty(S.Xb.size, dtype=net.dtype)
                S.spare = (xp.empty_like(S.Xb), xp.empty_like(S.yb), None if S.XT is None else xp.empty_like(S.XT))
                S.t_ahead = xp.zeros(1, dtype=np.int64)
            self.opt._ensure_state(net.flat_params)  # optimizer buffers exist before any capture
        if self.opt.capturable and not self._lrs_filled:
            # Per-step learning rates up to this run's last step, read by the optimizer's device step
            # at lrs[t - 1]: a schedule needs no recapture. Refilled once per run() (the lr, the
            # schedule or the number of epochs may change; a second fit() continues from opt.t).
            last = self.opt.t - self.batch + (epochs - self.epoch) * self.n_batches
            table = self.opt.lr_table(1, max(last, 1))
            if S.lrs is not None and S.lrs.size >= table.size:
                S.lrs[: table.size] = self.net.xp.asarray(table)  # same buffer: a captured graph stays valid
            else:
                S.lrs = self.net.xp.asarray(table)
            self._lrs_filled = True
        return S

    def _step(self, S: _DeviceState, m: int, mm=None) -> None:
        """One training step on ``m`` rows: gather, forward, loss, backward, update.

        Everything it reads that changes per step is in device memory (``S.counters.t``,
        ``S.t0``, ``S.lrs``), and it allocates nothing once warm, so with CUDA ops and a
        cuBLAS ``mm`` it is capturable as one CUDA graph. On the CPU the batch may have been
        gathered during the step before, on the side core (:meth:`_gather_ahead`).
        """
        net, opt, ops = self.net, self.opt, self.net.ops
        start = time.perf_counter()
        ahead = self._take_ahead(S, m)
        Xb, yb = (S.Xb, S.yb) if m == self.batch_size else (S.Xb[:m], S.yb[:m])
        XT = _transposed(S.XT, Xb)
        if not ahead:
            _gather(ops, self.X, self.y, S.perm, S.counters.t, S.t0, self.batch_size, Xb, yb, XT)
        if S.spare is not None and self.side_switch.use():
            self._gather_ahead(S)
        if self.augment is not None:
            self.augment(Xb, out=Xb)
        T = yb if net.loss_name == "cross_entropy" else net.targets(yb)
        net.train_step(Xb, T, S.counters, self.l2, mm=mm, XT=XT)
        if opt.capturable:  # reads t and lrs[t - 1] on the device: the same step replays as a graph
            opt.device_step(net.flat_params, net.flat_grads, S.counters.t, S.lrs, ops)
        else:
            opt.step(net.flat_params, net.flat_grads)
        if S.spare is not None:
            self.side_switch.record(time.perf_counter() - start, ahead)

    def _gather_ahead(self, S: _DeviceState) -> None:
        """CPU: gather the next batch of this epoch into ``S.spare`` on a side core while this step
        runs (:func:`xpnet.ops.threads.beside`; nothing when no core is free). The same rows, bytes
        and order as gathering it at the next step: only the time moves."""
        bs, n = self.batch_size, self.X.shape[0]
        t = int(S.counters.t[0]) + 1
        offset = (t - int(S.t0[0])) * bs
        if offset >= n:  # the epoch's last batch: the next epoch has a new order
            return
        m = min(bs, n - offset)
        Xn, yn, XTn = S.spare
        S.t_ahead[0] = t
        job = threads.beside(_gather, self.net.ops, self.X, self.y, S.perm, S.t_ahead, S.t0, bs, Xn[:m], yn[:m],
                             _transposed(XTn, Xn[:m]))
        if job is not None:
            S.ahead = (job, t, m)

    def _take_ahead(self, S: _DeviceState, m: int) -> bool:
        """Make the batch gathered ahead (if it is this step's) ``S.Xb``/``S.yb``; False when there is none."""
        if S.ahead is None:
            return False
        (job, t, rows), S.ahead = S.ahead, None
        job.wait()
        if t != int(S.counters.t[0]) or rows != m:
            return False
        S.spare, (S.Xb, S.yb, S.XT) = (S.Xb, S.yb, S.XT), S.spare
        self.gathered_ahead += job.ran_beside  # not one that found no one-thread moment to start in (a split step)
        return True

    def _settle(self) -> None:
        """Finish a gather still under way (a run ends, stops or fails): nothing runs beside the caller.
        Its error, if it had one, is not raised here (it would hide the run's own): gathered again at
        the next step, the batch raises it there."""
        S = self._dev
        if S is not None and S.ahead is not None:
            (job, _, _), S.ahead = S.ahead, None
            with contextlib.suppress(Exception):
                job.wait()

    def _batch(self, S: _DeviceState, b: int, m: int) -> None:
        """The per-batch hook of the epoch loop: here, the step run eagerly."""
        if self.augment is not None:
            self.augment.reseed(self.epoch, b)  # per batch: a resumed run augments identically
        self._step(S, m)

    def _epoch_stream(self, S: _DeviceState):
        """The stream the epoch runs on (the graph trainer's own); eagerly, the current one."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ loop
    def run(self, epochs: int, handle_sigint: bool = False) -> History:
        """Train until ``epochs`` epochs are done, early stopping fires, or a stop is requested."""
        if int(epochs) < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        guard = _sigint_stops(self) if handle_sigint else contextlib.nullcontext()
        self._lrs_filled = False
        # A diverging run overflows before its loss turns NaN; DivergedError reports that in one
        # line, so NumPy's overflow/invalid warnings would only be noise above it.
        # On the CPU, subnormals flushed to zero on this thread (ops/fpenv.py, imported here: it loads
        # Numba, which a GPU run or a bare import does not need).
        if self.net.device.is_gpu:
            flush = contextlib.nullcontext()
        else:
            from xpnet.ops.fpenv import flush_denormals  # noqa: PLC0415

            flush = flush_denormals()
        with guard, np.errstate(over="ignore", invalid="ignore"), blas_policy(self.blas_cores) as blas, flush:
            self._blas = blas  # read by state_dict: a checkpoint written mid-run records the choice
            try:
                while self.epoch < epochs and not self.stop_requested:
                    record = self._run_epoch(epochs)
                    if record is None:  # stopped mid-epoch
                        self.history.interrupted = True
                        break
                    if self._after_epoch(record):
                        break
            finally:
                self._settle()
                self.blas_cores, self._blas = self.blas_cores_in_use(), None
        if self.stop_requested:
            self.history.interrupted = True
        self._restore_best()
        return self.history

    def _run_epoch(self, epochs: int) -> dict | None:
        opt, xp = self.opt, self.net.xp
        n, bs = self.X.shape[0], self.batch_size
        S = self._device_state(epochs)
        bar = ProgressBar(self.n_batches, f"epoch {self.epoch + 1}/{epochs}", enabled=self.progress)
        bar.update(self.batch)
        backend.synchronize(xp)  # earlier work (uploads, restores) is done before the clock starts
        start = time.perf_counter() - self._partial["elapsed"]
        seen = self._partial["seen"]
        capturable = opt.capturable
        with self._epoch_stream(S):
            S.perm[...] = xp.asarray(self._epoch_order(self.epoch))
            S.counters.loss.fill(float(self._partial["loss_sum"]))
            S.counters.correct.fill(int(self._partial["correct"]))
            S.counters.t.fill(opt.t)
            S.t0.fill(opt.t - self.batch)  # batch b of this epoch runs at t = t0 + b
            for b in range(self.batch, self.n_batches):
                m = min(bs, n - b * bs)
                self._batch(S, b, m)
                if capturable:
                    opt.advance()  # the device advanced its counter; opt.t is the one host count
                seen += m
                self.batch = b + 1
                bar.update(1, m)
                for callback in self.step_callbacks:
                    callback(self)
                if self.stop_requested and self.batch < self.n_batches:
                    bar.close()
                    loss_sum, correct = self._read_counters(S)
                    self._partial = {"loss_sum": loss_sum, "correct": correct, "seen": seen,
                                     "elapsed": time.perf_counter() - start}
                    return None
            loss_sum, correct = self._read_counters(S)
        elapsed = time.perf_counter() - start
        bar.close()
        return self._finish_epoch(loss_sum, correct, seen, elapsed)

    @staticmethod
    def _read_counters(S: _DeviceState) -> tuple[float, int]:
        """The epoch's loss sum and correct count (the one host sync of an epoch)."""
        return float(backend.to_numpy(S.counters.loss)[0]), int(backend.to_numpy(S.counters.correct)[0])

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
            "lr": self.opt.lr_at(max(self.opt.t, 1)),  # the last step's (scheduled) learning rate
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
    def blas_cores_in_use(self) -> int | None:
        """The cores this trainer's GEMMs may use (chosen by its first run; None before)."""
        active = self._blas.cores if self._blas is not None else None
        return active if active is not None else self.blas_cores

    def state_dict(self) -> dict:
        """JSON-able loop state plus arrays (``arrays``) for a checkpoint."""
        best = {k: v for k, v in self._best.items() if k != "params"}
        arrays = {"opt_" + k: backend.to_numpy(v) for k, v in self.opt.state.items()}
        if self._best["params"] is not None:
            arrays["best_params"] = backend.to_numpy(self._best["params"])
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "partial": dict(self._partial),
            "best": best,
            "optimizer": {"name": self.opt.name, "t": self.opt.t, "hyperparams": self.opt.hyperparams()},
            "history": self.history.to_dict(),
            "blas_cores": self.blas_cores_in_use(),
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
        self.blas_cores = sd.get("blas_cores")  # absent in checkpoints written before it was recorded


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
    opt=None,
    X=None,
    y=None,
    epochs: int | None = None,
    batch_size: int | None = None,
    val=None,
    l2: float = 0.0,
    shuffle: bool = True,
    early_stopping=None,
    seed: int = 0,
    callbacks=(),
    progress: bool = False,
    recipe=None,
    log=None,
) -> History:
    """Train ``net`` on ``(X, y)``; returns the per-epoch :class:`History`.

    ``opt`` is an optimizer, or None to take the optimizer, its lr schedule (laid over this call's
    epochs × batches), the batch size and the epochs from ``recipe`` (a name in
    ``xpnet.training.recipe.RECIPES`` or a ``RunConfig``; default ``"default"``, the measured
    recipe). The network's own dropout and label smoothing are used: build it with
    ``RunConfig.build_net`` to get the recipe's. Without a recipe, ``epochs`` defaults to 10 and
    ``batch_size`` to 128.

    Calling ``fit`` again with the same optimizer **continues** training: the optimizer's step count
    carries the position, so shuffling, dropout masks and the schedule go on as in one longer run
    (a finished one-cycle stays at its final lr). A fresh optimizer starts over.

    ``val`` is ``None``, ``(X_val, y_val)`` or a fraction of ``X`` to hold out (stratified).
    ``early_stopping`` is ``None``, a patience (int) or an :class:`EarlyStopping`.
    Batch sizes ``len(X)``, ``b`` and ``1`` give batch, mini-batch and stochastic GD.
    ``log`` is a path: one JSON line per event (start, epoch, end), as ``xpnet train --metrics``.
    """
    if X is None or y is None:
        raise ConfigError("fit needs the training data X and y")
    if isinstance(val, float):
        X = X.reshape(X.shape[0], -1) if X.ndim > 2 else X
        X, y, Xv, yv = train_val_split(X, y, val, seed=seed)
        val = (Xv, yv)
    cfg = None
    if opt is None or recipe is not None:
        from xpnet.training.recipe import RunConfig  # noqa: PLC0415 - recipe builds on this module

        cfg = recipe if isinstance(recipe, RunConfig) else RunConfig(recipe=recipe or "default")
        cfg = cfg.replace(epochs=epochs, batch_size=batch_size).resolve()
        epochs, batch_size = cfg.epochs, cfg.batch_size
        if opt is None:
            opt = cfg.build_optimizer(X.shape[0])
    epochs = 10 if epochs is None else epochs
    batch_size = 128 if batch_size is None else batch_size
    callbacks = list(callbacks)
    run_log = None
    if log is not None:
        from xpnet.io.runlog import RunLog  # noqa: PLC0415

        run_log = RunLog(log, append=opt.t > 0)
        run_log.write("start" if opt.t == 0 else "continue", lr=opt.lr_at(opt.t + 1), config=cfg.to_dict() if cfg is not None else None,
                      model=repr(net), optimizer=repr(opt), batch_size=batch_size, epochs=epochs)
        callbacks.append(run_log.epoch_callback)
    trainer = Trainer(net, opt, X, y, batch_size, val, l2, shuffle, early_stopping, seed, callbacks, progress)
    history = trainer.run(trainer.epoch + int(epochs))
    if run_log is not None:
        run_log.write("end", lr=opt.lr_at(max(opt.t, 1)), epochs=len(history), best_epoch=history.best_epoch, stopped_early=history.stopped_early)
    return history
