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

The GPU path checks itself where it runs: each new capture's first replay is compared with an
eager shadow step of the same batch from the same state (:meth:`GraphTrainer._check_capture`;
a mismatch is a fallback to the eager loop, not a wrong run), and at each epoch's end the
device's step counter must equal the host's (else DeviceError: a replay was lost or repeated).
The graph holds every buffer it writes through for its lifetime, and its key covers every value
baked into its kernel arguments, so nothing it captured can change or be freed under it.
"""

from __future__ import annotations

import warnings

import numpy as np

from xpnet import backend
from xpnet.errors import ConfigError, DeviceError
from xpnet.training.trainer import Trainer

__all__ = ["GraphTrainer", "capture_supported", "graph_supported", "make_trainer"]


def graph_supported(net, opt, augment=None) -> tuple[bool, str]:
    """``(True, "")`` when the captured step implements this configuration, else ``(False, reason)``.

    Pure Python (no GPU needed); the device is checked separately by :func:`make_trainer`.
    """
    if augment is not None:
        return False, "data augmentation runs per batch outside the graph step"
    if not getattr(opt, "capturable", False):
        return False, (f"the graph step needs a capturable optimizer (Adam), not "
                       f"{getattr(opt, 'name', type(opt).__name__)!r}, which updates on the host")
    if net.n_layers > 1 and net.activation_name != "relu":
        return False, f"the graph step implements ReLU hidden layers only, not {net.activation_name!r}"
    if net.output != "softmax" or net.loss_name != "cross_entropy":
        return False, f"the graph step implements softmax + cross-entropy only, not {net.output!r} + {net.loss_name!r}"
    if np.dtype(net.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return False, f"unsupported dtype {net.dtype}"
    return True, ""


def capture_supported() -> tuple[bool, str]:
    """Cheap diagnostic: CuPy sees a GPU, and nvmath-python's cuBLAS bindings (used inside the
    capture) import and load libcublas. The reason carries the full exception text."""
    if not backend.gpu_available():
        return False, "no CuPy or no CUDA device"
    try:
        from xpnet.ops import cublas  # noqa: PLC0415

        cublas.library_version()
    except Exception as exc:
        return False, str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
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
            S.graph, S.warm, S.key, S.stream, S.blas, S.graph_holds = None, False, None, None, None, None
            try:
                self._setup(S)
            except Exception as exc:
                self._fall_back(exc, "setting up")
        return S

    def _epoch_stream(self, S):
        return S.stream if S.stream is not None else super()._epoch_stream(S)

    def _graph_key(self, S) -> tuple:
        """What the captured graph baked in (addresses, and every scalar passed as a kernel
        argument: the optimizer's (its graph_key), L2, label smoothing, the dropout rate and seed); a
        change forces a recapture. The activation buffers are not in it: the graph holds them."""
        net, opt, ptr = self.net, self.opt, backend.data_ptr
        return (
            ptr(net.flat_params), ptr(net.flat_grads), ptr(S.lrs), *opt.graph_key(),
            self.l2, net.label_smoothing, net.dropout, net.dropout_seed,
        )  # fmt: skip

    def _capture(self, S):
        """Record one :meth:`Trainer._step` on ``S.stream``; nothing runs. The buffers it writes
        through (the model's activation/gradient buffers of this batch size, which an LRU cache
        could otherwise free under the graph) are held in ``S.graph_holds`` as long as the graph."""
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
        S.graph_holds = self.net._cache  # (buffers, layer inputs) of the step just recorded
        self.graph_captures += 1
        return graph

    def _step_state(self, S) -> dict:
        """Everything a step changes: parameters, gradients, Adam's moments, the device counters."""
        net, opt, c = self.net, self.opt, S.counters
        return {"params": net.flat_params, "grads": net.flat_grads, **{k: opt.state[k] for k in opt.state_names},
                "loss": c.loss, "correct": c.correct, "t": c.t}

    def _check_capture(self, S, graph) -> str:
        """Replay ``graph`` once, then run the same step eagerly (CuPy's matmul) from the same
        state, and compare: ``""`` when they agree, else what differs. The eager result stays.

        Why: a capture can go wrong in ways no exception shows (an operation that ran once at
        capture time instead of being recorded, a stale argument); this catches them on the real
        device before they shape a whole run. Cost: one extra eager step and a few parameter-sized
        copies, once per capture (not measured on a GPU yet; an eager step is well under a ms there).
        Bounds: gradients, moments and the loss are linear-ish in the GEMMs, which cuBLAS may
        reassociate differently for the two calls, so they must agree to ``lin`` (relative, in
        norm); parameters after Adam to ``upd`` of the update's norm (a near-zero gradient can flip
        one element's update); the step and correct counters exactly. A wrong capture differs by O(1).
        """
        state = self._step_state(S)
        before = {k: a.copy() for k, a in state.items() if k != "grads"}
        try:
            graph.launch(S.stream)
            replayed = {k: a.copy() for k, a in state.items()}
            for k, a in before.items():
                state[k][...] = a
            self._step(S, self.batch_size)  # the eager shadow step
            S.stream.synchronize()
        except BaseException:
            for k, a in before.items():
                state[k][...] = a
            raise
        host = backend.to_numpy
        lin, upd = (1e-4, 1e-2) if self.net.dtype == np.float32 else (1e-10, 1e-7)
        problems = []

        def rel(a, b, ref):
            a, b, ref = (host(x).astype(np.float64) for x in (a, b, ref))
            scale = float(np.linalg.norm(ref))
            return float(np.linalg.norm(a - b)) / scale if scale else float(np.linalg.norm(a - b))

        for key in ("grads", "m", "v"):
            r = rel(replayed[key], state[key], state[key])
            if not r <= lin:
                problems.append(f"{key} differ by {r:.2e} (relative)")
        r = rel(replayed["params"], state["params"], host(state["params"]) - host(before["params"]))
        if not r <= upd:
            problems.append(f"parameters differ by {r:.2e} of the update")
        r = rel(host(replayed["loss"]) - host(before["loss"]), host(state["loss"]) - host(before["loss"]),
                host(state["loss"]) - host(before["loss"]))
        if not r <= lin:
            problems.append(f"the loss differs by {r:.2e} (relative)")
        for key in ("t", "correct"):
            g, e = int(host(replayed[key])[0]), int(host(state[key])[0])
            if g != e:
                problems.append(f"{key} is {g}, eagerly {e}")
        return "; ".join(problems)

    def _batch(self, S, b: int, m: int) -> None:
        """A full batch replays the graph (after one eager warm-up step and the capture); the
        epoch's short last batch, and everything after a failure, run :meth:`Trainer._step` eagerly."""
        if self.fallback_reason is not None or m != self.batch_size:
            return super()._batch(S, b, m)
        key = self._graph_key(S)
        if key != S.key:  # first batch, resumed optimizer state, a new lr table, another dropout rate...
            S.graph, S.warm, S.key, S.graph_holds = None, False, key, None
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
            mismatch = self._check_capture(S, graph)  # the first replay, and the same step eagerly
        except Exception as exc:
            S.counters.loss.fill(saved[0])  # undo what a half-run step counted
            S.counters.correct.fill(saved[1])
            S.counters.t.fill(saved[2])
            S.graph_holds = None
            self._fall_back(exc, f"running batch {b} of epoch {self.epoch + 1}")
            return super()._batch(S, b, m)
        if mismatch:  # the eager step's result is in place: the run goes on from it, eagerly
            S.graph_holds = None
            self._fall_back(DeviceError(f"its first replay differs from the eager step: {mismatch}"),
                            f"checking the capture at batch {b} of epoch {self.epoch + 1}")
            return
        S.graph = graph
        self.graph_replays += 1

    def _read_counters(self, S) -> tuple[float, int]:
        """The epoch's loss sum and correct count; and the device's step counter must equal the
        host's ``opt.t`` (a lost or repeated replay would shift every later batch and lr)."""
        loss_sum, correct = Trainer._read_counters(S)
        t_dev = int(backend.to_numpy(S.counters.t)[0])
        if t_dev != self.opt.t:
            raise DeviceError(f"the GPU's step counter is {t_dev} but the host counted {self.opt.t} steps "
                              f"(epoch {self.epoch + 1}, batch {self.batch}): a CUDA graph replay was lost or repeated")
        return loss_sum, correct

    def _fall_back(self, exc: BaseException, when: str) -> None:
        self.fallback_reason = f"{when}: {type(exc).__name__}: {exc}"
        warnings.warn(
            f"CUDA-graph training step failed while {self.fallback_reason}; continuing with the eager loop",
            RuntimeWarning,
            stacklevel=3,
        )
        if self._dev is not None:
            self._dev.graph = None
            self._dev.graph_holds = None

    def close(self) -> None:
        """Release the graph and the cuBLAS handle (also happens when the trainer is collected)."""
        S = self._dev
        if S is not None and getattr(S, "blas", None) is not None:
            S.graph, S.graph_holds = None, None
            S.blas.close()
            S.blas = None
