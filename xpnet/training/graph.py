"""The GPU-resident CUDA-graph fast path: the Trainer's own step, captured once, replayed per batch.

:class:`GraphTrainer` is a :class:`xpnet.training.trainer.Trainer` that overrides one hook, the per-batch
``_batch``: the first full batch runs :meth:`Trainer._step` eagerly (warm-up), the second
captures that same step (gather, forward, softmax-CE + metrics, backward, fused Adam) into a
CUDA graph, and every later full batch replays it. Nothing is written twice: the step reads
its batch offset, step count and learning rate from device memory (see
:mod:`xpnet.ops.reference`), so one graph serves every step and an lr schedule needs no
recapture. The epoch's short last batch and any run after a failed capture use the same step
eagerly. The only difference is who calls cuBLAS: CuPy refuses to inside a stream capture, so
the captured step's GEMMs go through :mod:`xpnet.ops.cublas` (handle bound to the capture
stream, preallocated workspace, no TF32).

Supported: ReLU hidden layers, softmax + cross-entropy (label smoothing included), Adam,
float32 / float64, any L2, dropout (counter-based masks, ``ops.dropout``); no augmentation.
Anything else: :func:`make_trainer` returns the eager Trainer. If setting up, capturing or the first replay fails, the trainer
warns once and finishes the run with the eager loop.
"""

from __future__ import annotations

import warnings

import numpy as np

from xpnet import backend
from xpnet.errors import ConfigError
from xpnet.training.trainer import Trainer

__all__ = ["GraphTrainer", "capture_supported", "graph_supported", "make_trainer"]


def graph_supported(net, opt, augment=None) -> tuple[bool, str]:
    """``(True, "")`` when the captured step implements this configuration, else ``(False, reason)``.

    Pure Python (no GPU needed); the device is checked separately by :func:`make_trainer`.
    """
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
    """Cheap diagnostic: CuPy sees a GPU and nvmath-python's cuBLAS bindings (used inside the capture) import."""
    if not backend.gpu_available():
        return False, "no CuPy or no CUDA device"
    try:
        from xpnet.ops import cublas  # noqa: PLC0415

        cublas.bindings()
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


class GraphTrainer(Trainer):
    """:class:`Trainer` whose full batches replay one captured CUDA graph of :meth:`Trainer._step` (GPU only)."""

    def __init__(self, net, opt, X, y, **kwargs):
        """Same arguments as :class:`Trainer`; raises ConfigError for runs the graph cannot do."""
        ok, reason = graph_supported(net, opt, augment=kwargs.get("augment"))
        if not ok:
            raise ConfigError(f"GraphTrainer: {reason} (use xpnet.training.graph.make_trainer to fall back)")
        if not net.device.is_gpu:
            raise ConfigError("GraphTrainer needs a network on the GPU")
        super().__init__(net, opt, X, y, **kwargs)
        if self.y.ndim != 1:
            raise ConfigError("GraphTrainer needs 1-D integer labels")
        self.fallback_reason = None  # set (and warned once) when the run continues eagerly
        self.graph_replays = 0
        self.graph_captures = 0
        self.graph_reason = ""

    def _setup(self, S) -> None:
        """Kernels loaded, a stream and a cuBLAS handle bound to it: all outside any capture."""
        from xpnet.ops import cublas  # noqa: PLC0415
        from xpnet.ops import cuda as cuda_ops  # noqa: PLC0415

        cuda_ops.load_all()  # NVRTC compiles nothing inside a capture
        S.stream = self.net.xp.cuda.Stream(non_blocking=True)
        S.blas = cublas.Cublas(S.stream)

    def _device_state(self, epochs: int):
        S = super()._device_state(epochs)
        if self.fallback_reason is None and not hasattr(S, "graph"):
            S.graph, S.warm, S.key, S.stream, S.blas = None, False, None, None, None
            try:
                self._setup(S)
            except Exception as exc:
                self._fall_back(exc, "setting up")
        return S

    def _epoch_stream(self, S):
        return S.stream if S.stream is not None else super()._epoch_stream(S)

    def _graph_key(self, S) -> tuple:
        """What the captured graph baked in (addresses, scalars); a change forces a recapture."""
        net, opt, ptr = self.net, self.opt, backend.data_ptr
        return (
            ptr(net.flat_params), ptr(net.flat_grads), ptr(opt.state["m"]), ptr(opt.state["v"]), ptr(S.lrs),
            opt.beta1, opt.beta2, opt.eps, self.l2, net.label_smoothing,
        )  # fmt: skip

    def _capture(self, S):
        S.stream.begin_capture()
        try:
            self._step(S, self.batch_size, mm=S.blas.matmul_rowmajor)
        except BaseException:
            try:
                S.stream.end_capture()  # leave the stream usable; the partial graph is dropped
            except Exception:
                pass
            raise
        graph = S.stream.end_capture()
        self.graph_captures += 1
        return graph

    def _batch(self, S, b: int, m: int) -> None:
        """A full batch replays the graph (after one eager warm-up step and the capture); the
        epoch's short last batch, and everything after a failure, run :meth:`Trainer._step` eagerly."""
        if self.fallback_reason is not None or m != self.batch_size:
            return super()._batch(S, b, m)
        key = self._graph_key(S)
        if key != S.key:  # first batch, resumed optimizer state, a new lr table
            S.graph, S.warm, S.key = None, False, key
        if S.graph is not None:
            S.graph.launch(S.stream)
            self.graph_replays += 1
            return
        saved = (*self._read_counters(S), int(backend.to_numpy(S.counters.t)[0]))
        try:
            if not S.warm:
                self._step(S, m, mm=S.blas.matmul_rowmajor)  # warm-up: cuBLAS initialised for these shapes
                S.warm = True
                return
            graph = self._capture(S)  # records only: nothing ran
            graph.launch(S.stream)
            S.stream.synchronize()  # surface errors of the first replay here
        except Exception as exc:
            S.counters.loss.fill(saved[0])  # undo what a half-run step counted
            S.counters.correct.fill(saved[1])
            S.counters.t.fill(saved[2])
            self._fall_back(exc, f"running batch {b} of epoch {self.epoch + 1}")
            return super()._batch(S, b, m)
        S.graph = graph
        self.graph_replays += 1

    def _fall_back(self, exc: BaseException, when: str) -> None:
        self.fallback_reason = f"{when}: {type(exc).__name__}: {exc}"
        warnings.warn(
            f"CUDA-graph training step failed while {self.fallback_reason}; continuing with the eager loop",
            RuntimeWarning,
            stacklevel=3,
        )
        if self._dev is not None:
            self._dev.graph = None

    def close(self) -> None:
        """Release the graph and the cuBLAS handle (also happens when the trainer is collected)."""
        S = self._dev
        if S is not None and getattr(S, "blas", None) is not None:
            S.graph = None
            S.blas.close()
            S.blas = None
