"""The GPU-resident CUDA-graph fast path: one captured training step, replayed per batch.

:class:`GraphTrainer` is a :class:`xpnet.train.Trainer` whose per-epoch batch loop replays a
CUDA graph of one whole training step — gather the batch on the device, forward GEMMs +
``bias_relu_forward``, ``softmax_xent``, loss / correct-count accumulation, backward GEMMs,
``bias_grad``, ``relu_backward``, optional L2, fused Adam — instead of launching ~30 kernels
from Python. Everything that changes between steps lives in device memory: the batch offset
into the epoch's permutation (``int32[1]``, advanced by ``advance_offset``), Adam's step count
(``int32[1]``, advanced by ``increment_step``) and the epoch's loss / correct accumulators,
read once per epoch. Validation, early stopping, callbacks, history and checkpoint state are
the base Trainer's.

Same results as the eager Trainer: the same epoch permutation
(``np.random.default_rng([seed, epoch])``, uploaded into a preallocated device array before
the replays), the same kernels, and the last partial batch (``n % batch_size`` rows) runs
through the eager Trainer's own code outside the graph. GEMMs differ only in who calls
cuBLAS: CuPy's matmul refuses to run during a stream capture, so the graph step calls
cuBLAS directly (:mod:`xpnet.ops.cublas`, ctypes, handle bound to the capture stream with a
preallocated workspace, no TF32). Weights agree with the eager path to rounding (tested to
1e-12 in float64 on a GPU); the reported train loss sums per-row losses in float64 and may
differ from the eager value in the last bits.

Supported: ReLU hidden layers (any number), softmax + cross-entropy output, Adam, float32 /
float64, no dropout, no augmentation, any L2 (a small ``l2_grad`` kernel). Anything else:
:func:`make_trainer` returns the eager Trainer. If setting up, capturing or the first replay
fails, the trainer warns once and finishes the run with the eager loop.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from . import backend
from .errors import ConfigError
from .progress import ProgressBar
from .train import Trainer

__all__ = ["GraphTrainer", "capture_supported", "graph_supported", "make_trainer"]


def graph_supported(net, opt, dropout=None, augment=None) -> tuple[bool, str]:
    """``(True, "")`` when the captured step implements this configuration, else ``(False, reason)``.

    Pure Python (no GPU needed); the device is checked separately by :func:`make_trainer`.
    ``dropout`` defaults to ``net.dropout``.
    """
    dropout = net.dropout if dropout is None else float(dropout)
    if dropout and dropout > 0:
        return False, f"dropout ({dropout:g}) needs per-step random masks, which the graph step does not draw"
    if augment is not None:
        return False, "data augmentation runs per batch outside the graph step"
    if getattr(opt, "name", None) != "adam":
        return False, f"the graph step implements Adam only, not {getattr(opt, 'name', type(opt).__name__)!r}"
    if net.n_layers > 1 and net.activation_name != "relu":
        return False, f"the graph step implements ReLU hidden layers only, not {net.activation_name!r}"
    if net.output != "softmax" or net.loss_name != "cross_entropy":
        return False, f"the graph step implements softmax + cross-entropy only, not {net.output!r} + {net.loss_name!r}"
    if np.dtype(net.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False, f"unsupported dtype {net.dtype}"
    return True, ""


def capture_supported() -> tuple[bool, str]:
    """Cheap diagnostic: CuPy sees a GPU and a libcublas for direct calls can be loaded."""
    if not backend.gpu_available():
        return False, "no CuPy or no CUDA device"
    try:
        from .ops import cublas  # noqa: PLC0415

        cublas.find_library()
    except Exception as exc:
        return False, str(exc)
    return True, ""


def make_trainer(net, opt, X, y, *, graph: bool = True, **kwargs):
    """A :class:`GraphTrainer` when ``graph`` and the GPU path supports the run, else the eager :class:`Trainer`.

    The returned trainer has ``graph_reason``: ``""`` for the graph trainer, else why not.
    """
    reason = "disabled (--no-graph)"
    if graph:
        ok, reason = graph_supported(net, opt, augment=kwargs.get("augment"))
        if ok and not net.device.is_gpu:
            ok, reason = False, "the network is on the CPU"
        if ok and getattr(y, "ndim", 1) != 1:
            ok, reason = False, "the graph step needs 1-D integer labels"
        if ok:
            ok, reason = capture_supported()
        if ok:
            trainer = GraphTrainer(net, opt, X, y, **kwargs)
            trainer.graph_reason = ""
            return trainer
    trainer = Trainer(net, opt, X, y, **kwargs)
    trainer.graph_reason = reason
    return trainer


class _State:
    """Device buffers, stream, cuBLAS handle and graph of one GraphTrainer (all preallocated)."""


class GraphTrainer(Trainer):
    """:class:`Trainer` whose full batches replay one captured CUDA graph (GPU only)."""

    def __init__(self, net, opt, X, y, **kwargs):
        """Same arguments as :class:`Trainer`; raises ConfigError for runs the graph cannot do."""
        ok, reason = graph_supported(net, opt, augment=kwargs.get("augment"))
        if not ok:
            raise ConfigError(f"GraphTrainer: {reason} (use xpnet.train_graph.make_trainer to fall back)")
        if not net.device.is_gpu:
            raise ConfigError("GraphTrainer needs a network on the GPU")
        super().__init__(net, opt, X, y, **kwargs)
        if self.y.ndim != 1:
            raise ConfigError("GraphTrainer needs 1-D integer labels")
        self._state = None
        self.fallback_reason = None  # set (and warned once) when the run continues eagerly
        self.graph_replays = 0
        self.graph_captures = 0
        self.graph_reason = ""

    # ------------------------------------------------------------------ setup
    def _setup(self) -> _State:
        """Allocate every buffer, load kernels, create the stream and cuBLAS handle (outside capture)."""
        from .ops import cublas  # noqa: PLC0415
        from .ops import cuda as cuda_ops  # noqa: PLC0415

        xp = self.net.xp
        cuda_ops.load_all()  # NVRTC compiles nothing inside a capture
        S = self._allocate(xp)
        S.ops = cuda_ops
        S.stream = xp.cuda.Stream(non_blocking=True)
        S.blas = cublas.Cublas(S.stream)
        S.graph, S.warm, S.key = None, False, None
        backend.synchronize(xp)
        return S

    def _allocate(self, xp) -> _State:
        """The step's buffers (written with ``xp`` only: the CPU tests run :meth:`_step` on NumPy)."""
        net, opt = self.net, self.opt
        S = _State()
        opt._ensure_state(net.flat_params)  # Adam's m, v exist before their pointers are captured
        n, nf = self.X.shape
        bs, dt = self.batch_size, net.dtype
        S.X = self.X if self.X.flags.c_contiguous else xp.ascontiguousarray(self.X)
        S.y32 = xp.ascontiguousarray(self.y.astype(np.int32))
        S.perm = xp.empty(n, dtype=np.int64)
        S.offset = xp.zeros(1, dtype=np.int32)
        S.t = xp.ones(1, dtype=np.int32)
        S.loss_acc = xp.zeros(1, dtype=np.float64)
        S.correct_acc = xp.zeros(1, dtype=np.int64)
        S.Xb = xp.empty((bs, nf), dtype=dt)
        S.yb = xp.empty(bs, dtype=np.int32)
        S.Z = [xp.empty((bs, k), dtype=dt) for k in net.sizes[1:]]
        S.H = [xp.empty((bs, k), dtype=dt) for k in net.sizes[1:-1]]
        S.dA = [xp.empty((bs, k), dtype=dt) for k in net.sizes[1:-1]]
        S.G = xp.empty((bs, net.sizes[-1]), dtype=dt)  # dZ of the output layer (Z keeps the logits)
        S.loss_rows = xp.empty(bs, dtype=dt)
        tail = n % bs
        S.Xtail = xp.empty((tail, nf), dtype=dt) if tail else None
        S.ytail = xp.empty(tail, dtype=self.y.dtype) if tail else None
        return S

    def _graph_key(self) -> tuple:
        """What the captured graph baked in; a change (new optimizer state, new lr) forces a recapture."""
        net, opt, S = self.net, self.opt, self._state
        ptr = backend.data_ptr
        return (
            ptr(net.flat_params), ptr(net.flat_grads), ptr(opt.state["m"]), ptr(opt.state["v"]), ptr(S.X),
            opt.lr, opt.beta1, opt.beta2, opt.eps, self.l2, self.batch_size,
        )  # fmt: skip

    # ------------------------------------------------------------------ one step
    def _step(self) -> None:
        """One full-batch training step on the current stream; capturable (no sync, no allocation)."""
        net, opt, S = self.net, self.opt, self._state
        ops, blas, bs, L = S.ops, S.blas, self.batch_size, net.n_layers
        ops.gather_batch(S.X, S.y32, S.perm, S.offset, S.Xb, S.yb)
        A, inputs = S.Xb, [S.Xb]
        for l in range(L):
            W, b, Z = net.W[l], net.b[l], S.Z[l]
            blas.matmul_rowmajor(A, W, Z, trans_b=True)  # Z = A @ W.T
            if l == L - 1:
                ops.bias_add(Z, b)
                break
            ops.bias_relu_forward(Z, b, S.H[l])
            A = S.H[l]
            inputs.append(A)
        logits = S.Z[-1]
        ops.softmax_xent(logits, S.yb, S.G, S.loss_rows, 1.0 / bs)
        ops.step_metrics(logits, S.yb, S.loss_rows, S.loss_acc, S.correct_acc)
        dZ = S.G
        for l in range(L - 1, -1, -1):
            W, dW, db = net.W[l], net.grads[2 * l], net.grads[2 * l + 1]
            blas.matmul_rowmajor(dZ, inputs[l], dW, trans_a=True)  # dW = dZ.T @ A
            ops.bias_grad(dZ, db)
            if self.l2:
                ops.l2_grad(dW, W, self.l2 / bs, S.loss_acc, self.l2 / 2)
            if l == 0:
                break
            dA = S.dA[l - 1]
            blas.matmul_rowmajor(dZ, W, dA)  # dA = dZ @ W
            ops.relu_backward(dA, S.Z[l - 1], dA)
            dZ = dA
        ops.adam_step(net.flat_params, net.flat_grads, opt.state["m"], opt.state["v"], S.t, opt.lr, opt.beta1, opt.beta2, opt.eps)
        ops.increment_step(S.t)
        ops.advance_offset(S.offset, bs)

    def _capture(self):
        S = self._state
        stream = S.stream
        stream.begin_capture()
        try:
            self._step()
        except BaseException:
            try:
                stream.end_capture()  # leave the stream usable; the partial graph is dropped
            except Exception:
                pass
            raise
        graph = stream.end_capture()
        self.graph_captures += 1
        return graph

    def _full_step(self) -> None:
        """Replay the graph, or run the warm-up step eagerly, or capture then replay (current stream = S.stream)."""
        S = self._state
        if S.graph is not None:
            S.graph.launch(S.stream)
            self.graph_replays += 1
            return
        if not S.warm:
            self._step()  # warm-up: kernels loaded, cuBLAS initialised for these shapes
            S.warm = True
            return
        graph = self._capture()  # records only: nothing ran
        graph.launch(S.stream)
        S.stream.synchronize()  # surface errors of the first replay here
        S.graph = graph
        self.graph_replays += 1

    def _partial_step(self, start: int) -> int:
        """The last ``n % batch_size`` rows, through the eager Trainer's code (current stream = S.stream)."""
        net, opt, S = self.net, self.opt, self._state
        idx = S.perm[start:]
        backend.take_rows(self.X, idx, S.Xtail)
        backend.take_rows(self.y, idx, S.ytail)
        loss, n_correct = net.loss_and_grad(S.Xtail, S.ytail, l2=self.l2, check=False)
        opt.step(net.flat_params, net.flat_grads)
        m = S.Xtail.shape[0]
        S.loss_acc += loss * m
        S.correct_acc += n_correct
        return m

    # ------------------------------------------------------------------ epoch loop
    def _fall_back(self, exc: BaseException, when: str) -> None:
        self.fallback_reason = f"{when}: {type(exc).__name__}: {exc}"
        warnings.warn(
            f"CUDA-graph training step failed while {self.fallback_reason}; continuing with the eager loop",
            RuntimeWarning,
            stacklevel=3,
        )
        if self._state is not None:
            self._state.graph = None

    def _run_epoch(self, epochs: int) -> dict | None:
        if self.fallback_reason is not None:
            return super()._run_epoch(epochs)
        try:
            if self._state is None:
                self._state = self._setup()
            key = self._graph_key()
            if key != self._state.key:  # first epoch, or resumed optimizer state / changed lr
                self._state.graph, self._state.warm, self._state.key = None, False, key
        except Exception as exc:
            self._fall_back(exc, "setting up")
            return super()._run_epoch(epochs)
        return self._run_epoch_graph(epochs)

    def _run_epoch_graph(self, epochs: int) -> dict | None:
        opt, xp, S = self.opt, self.net.xp, self._state
        n, bs = self.X.shape[0], self.batch_size
        n_full, n_batches = n // bs, self.n_batches
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        S.order_host = np.ascontiguousarray(order, dtype=np.int64)  # kept alive for the async copy
        seen = self._partial["seen"]
        bar = ProgressBar(n_batches, f"epoch {self.epoch + 1}/{epochs}", enabled=self.progress)
        bar.update(self.batch)
        backend.synchronize(xp)  # earlier work on the default stream (uploads, restores) is done
        start = time.perf_counter() - self._partial["elapsed"]
        stream = S.stream
        handed_over = False
        with stream:
            S.perm.set(S.order_host, stream=stream)
            S.loss_acc.fill(float(self._partial["loss_sum"]))
            S.correct_acc.fill(int(self._partial["correct"]))
            S.offset.fill(min(self.batch, n_full) * bs)
            S.t.fill(opt.t + 1)  # the count adam_step uses for the next step (after its increment)
            for b in range(self.batch, n_batches):
                if b < n_full:
                    try:
                        self._full_step()
                    except Exception as exc:
                        # Capture, warm-up or the first replay failed: nothing of batch b has run
                        # (for an async fault in the first replay nothing can be saved anyway).
                        self._fall_back(exc, f"running batch {b} of epoch {self.epoch + 1}")
                        self._hand_over(stream, seen, start, bar, b)
                        handed_over = True
                        break
                    opt.t += 1
                    m = bs
                else:
                    m = self._partial_step(b * bs)
                seen += m
                self.batch = b + 1
                bar.update(1, m)
                if self.stop_requested and self.batch < n_batches:
                    bar.close()
                    self._hand_over(stream, seen, start, None, self.batch)
                    return None
            if not handed_over:
                stream.synchronize()
        if handed_over:  # finish this epoch with the eager loop, on the default stream
            return super()._run_epoch(epochs)
        elapsed = time.perf_counter() - start
        bar.close()
        loss_sum, correct = float(S.loss_acc.get()[0]), int(S.correct_acc.get()[0])
        return self._finish_epoch(loss_sum, correct, seen, elapsed)

    def _hand_over(self, stream, seen, start, bar, batch) -> None:
        """Sync and store the running sums in ``_partial`` (for a stop, or for the eager loop to continue)."""
        try:
            stream.synchronize()
            loss_sum, correct = float(self._state.loss_acc.get()[0]), int(self._state.correct_acc.get()[0])
        finally:
            if bar is not None:
                bar.close()
        self._partial = {"loss_sum": loss_sum, "correct": correct, "seen": seen, "elapsed": time.perf_counter() - start}
        self.batch = batch

    def close(self) -> None:
        """Release the graph and the cuBLAS handle (also happens when the trainer is collected)."""
        if self._state is not None:
            self._state.graph = None
            self._state.blas.close()
            self._state = None
