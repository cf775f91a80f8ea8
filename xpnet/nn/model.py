"""The multilayer perceptron: forward, backward and prediction, written once against ``xp``.

All weights and biases live in one flat buffer (``flat_params``); ``params`` =
``[W0, b0, W1, b1, ...]`` are views into it, and gradients mirror that in ``flat_grads``.
One buffer means one fused optimizer launch per step on any device, and one copy to
save, restore or compare a whole network.

Shapes follow the course notes transposed for row samples: ``X`` is (m, n_in), ``W[l]``
is (n_out, n_in) like ``torch.nn.Linear.weight``, and ``Z = A @ W.T + b``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from xpnet import backend

from xpnet.nn import losses
from xpnet.nn.activations import get_activation
from xpnet.errors import ConfigError, DataError, ShapeError
from xpnet.nn.initializers import init_weights
from xpnet.ops import get_ops
from xpnet.ops.reference import dense_views

_MAX_CACHED_BATCH_SHAPES = 4


class MLP:
    """A fully connected network ``sizes[0] → ... → sizes[-1]``.

    >>> net = MLP([784, 1024, 10])            # ReLU hidden layer, softmax output, He init
    >>> net.params[0].shape                    # W0: (n_out, n_in)
    (1024, 784)
    """

    def __init__(
        self,
        sizes,
        activation: str = "relu",
        output: str = "softmax",
        loss: str | None = None,
        init: str = "he",
        dropout: float = 0.0,
        device="cpu",
        dtype="float32",
        seed: int = 0,
        leaky_slope: float = 0.01,
        label_smoothing: float = 0.0,
        fast_ops: bool = True,
    ):
        self.sizes = _check_sizes(sizes)
        self.activation_name = str(activation).lower().replace("-", "_")
        self.activation = get_activation(self.activation_name, leaky_slope)
        self.leaky_slope = float(leaky_slope)
        self.output = str(output).lower()
        self.loss_name = losses.DEFAULT_LOSS.get(self.output, "") if loss is None else str(loss).lower()
        losses.check_combination(self.output, self.loss_name)
        self.init = str(init).lower()
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        if label_smoothing and self.loss_name != "cross_entropy":
            raise ConfigError(f"label smoothing applies to softmax cross-entropy, not {self.loss_name!r}")
        self.label_smoothing = float(label_smoothing)
        self.device = backend.parse_device(device)
        self.dtype = backend.resolve_dtype(dtype)
        self.seed = int(seed)
        self.xp = backend.get_xp(self.device)
        self.ops = get_ops(self.xp, fast_ops)
        self.normalizer = None  # set by fit()/the CLI so saved models preprocess like training
        self.class_names = None
        self.dataset = None  # the data set's name, recorded in the model file (evaluate/predict default to it)

        host = init_weights(self.sizes, self.init, np.random.default_rng(self.seed), self.dtype)
        self._allocate(host)
        self.dropout_seed = self.seed + 1  # the trainer sets its own (see ops.reference.dropout)
        self._free_steps = 0
        self._buffers: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ parameters
    def _allocate(self, host_params):
        xp = self.xp
        total = sum(p.size for p in host_params)
        self.flat_params = xp.empty(total, dtype=self.dtype)
        self.flat_grads = xp.zeros(total, dtype=self.dtype)
        self.params, self.grads, offset = [], [], 0
        for p in host_params:
            view = self.flat_params[offset : offset + p.size].reshape(p.shape)
            view[...] = xp.asarray(p)
            self.params.append(view)
            self.grads.append(self.flat_grads[offset : offset + p.size].reshape(p.shape))
            offset += p.size

    @property
    def W(self):
        return self.params[0::2]

    @property
    def b(self):
        return self.params[1::2]

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def n_params(self) -> int:
        return int(self.flat_params.size)

    def config(self) -> dict:
        """Everything needed to rebuild this architecture (saved with the weights)."""
        return {
            "sizes": list(self.sizes),
            "activation": self.activation_name,
            "leaky_slope": self.leaky_slope,
            "output": self.output,
            "loss": self.loss_name,
            "init": self.init,
            "dropout": self.dropout,
            "label_smoothing": self.label_smoothing,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def set_params(self, params) -> None:
        """Copy ``[W0, b0, ...]`` (NumPy or CuPy) into this network, checking shapes."""
        if len(params) != len(self.params):
            raise ShapeError(f"expected {len(self.params)} parameter arrays, got {len(params)}")
        for i, (dst, src) in enumerate(zip(self.params, params)):
            if tuple(src.shape) != dst.shape:
                raise ShapeError(f"parameter {i} has shape {tuple(src.shape)}, the network needs {dst.shape}")
            dst[...] = self.xp.asarray(src, dtype=self.dtype)

    def to(self, device) -> "MLP":
        """This network on ``device`` (a new object sharing nothing with the old one)."""
        clone = MLP.from_config(self.config(), device=device)
        clone.set_params([backend.to_numpy(p) for p in self.params])
        clone.normalizer, clone.class_names, clone.dataset = self.normalizer, self.class_names, self.dataset
        return clone

    # ------------------------------------------------------------------ input checks
    def check_inputs(self, X, y=None):
        """Shape, finiteness and label-range checks done once per data set, not per step."""
        if X.ndim != 2:
            raise ShapeError(f"X must be 2-D (samples × features), got shape {tuple(X.shape)}")
        if X.shape[1] != self.sizes[0]:
            raise ShapeError(f"X has {X.shape[1]} features but the network expects {self.sizes[0]}")
        if X.shape[0] == 0:
            raise ShapeError("X has no samples")
        xp = backend.get_array_module(X)
        if not bool(xp.isfinite(X).all()):
            raise DataError("X contains NaN or infinite values")
        if y is None:
            return
        if y.shape[0] != X.shape[0]:
            raise ShapeError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        if y.ndim == 2 and self.loss_name != "cross_entropy":
            if y.shape[1] != self.sizes[-1]:
                raise ShapeError(f"targets must have shape (m, {self.sizes[-1]}), got {tuple(y.shape)}")
        else:
            if y.ndim != 1:
                raise ShapeError(f"labels must be 1-D class indices, got shape {tuple(y.shape)}")
            n_classes = 2 if self.sizes[-1] == 1 else self.sizes[-1]
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= n_classes:
                raise DataError(f"labels must be in [0, {n_classes - 1}], found values from {lo} to {hi}")
            if y.dtype.kind == "f" and not bool((y == xp.round(y)).all()):
                raise DataError("labels must be whole numbers (class indices)")

    def targets(self, y):
        """Labels in the form the loss wants: int indices for CE, a float matrix otherwise."""
        xp = self.xp
        y = xp.asarray(y)
        if self.loss_name == "cross_entropy":  # int32: what the CUDA kernels read
            return y if y.dtype == np.int32 else y.astype(np.int32)
        if y.ndim == 2:
            return y.astype(self.dtype, copy=False)
        if self.sizes[-1] == 1:
            return y.astype(self.dtype).reshape(-1, 1)
        onehot = xp.zeros((y.shape[0], self.sizes[-1]), dtype=self.dtype)
        onehot[xp.arange(y.shape[0]), y.astype(xp.int64)] = 1
        return onehot

    # ------------------------------------------------------------------ buffers
    def _batch_buffers(self, m: int, train: bool):
        """Activation buffers for batch size ``m``, reused across steps (no per-step allocation).

        Gradient buffers (``G``, ``dA``, ``loss_rows``) are added by the first training step,
        so prediction-only batch sizes never pay for them.
        """
        key = (m, train)
        xp, dt = self.xp, self.dtype
        hidden = self.sizes[1:-1]
        bufs = self._buffers.get(key)
        if bufs is not None:
            self._buffers.move_to_end(key)
        else:
            bufs = {
                "Z": [xp.empty((m, n), dtype=dt) for n in self.sizes[1:]],
                "H": [xp.empty((m, n), dtype=dt) for n in hidden],
            }
            self._buffers[key] = bufs
            while len(self._buffers) > _MAX_CACHED_BATCH_SHAPES:
                self._buffers.popitem(last=False)
        if train and self.dropout > 0 and "D" not in bufs:  # also when dropout is switched on between runs
            bufs["D"] = [xp.empty((m, n), dtype=dt) for n in hidden]
            bufs["U"] = [xp.empty((m, n), dtype=dt) for n in hidden]
        return bufs

    # ------------------------------------------------------------------ the training step
    # One forward and one backward, written in terms of ``self.ops`` and a GEMM ``mm(A, B, C,
    # trans_a, trans_b)`` (C = op(A) @ op(B)): ``ops.matmul`` eagerly, cuBLAS inside a CUDA-graph
    # capture (xpnet/train_graph.py). Every fusion lives here once, for every device and loop.

    def forward(self, X, train: bool = False, masks=None, mm=None, step=None):
        """Logits of the last layer, (m, sizes[-1]); keeps what backward needs.

        ``train=True`` applies inverted dropout to hidden layers: masks drawn by ``ops.dropout``
        from (``dropout_seed``, ``step``, layer) — ``step`` is the trainer's device step
        counter, so every step gets new masks and a resumed run the same ones — or the 0/1
        keep-masks given in ``masks`` (one per hidden layer, for gradient checks).
        """
        xp, ops = self.xp, self.ops
        mm = mm or ops.matmul
        X = xp.asarray(X, dtype=self.dtype)
        bufs = self._batch_buffers(X.shape[0], train)
        A = X
        inputs = [X]
        drop = train and self.dropout > 0
        if drop and masks is None and step is None:  # a call outside a trainer: a fresh step of its own
            self._free_steps += 1
            step = xp.full(1, self._free_steps, dtype=np.int32)
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            Z = bufs["Z"][l]
            mm(A, W, Z, trans_b=True)  # Z = A @ W.T
            if l == self.n_layers - 1:
                ops.bias_add(Z, b)
                break
            H = bufs["H"][l]
            if self.activation.is_relu:
                ops.bias_relu_forward(Z, b, H)
            else:
                ops.bias_add(Z, b)
                self.activation.forward(Z, H)
            A = H
            if drop:
                D, U = bufs["D"][l], bufs["U"][l]
                if masks is not None:
                    xp.multiply(xp.asarray(masks[l], dtype=self.dtype), 1.0 / (1.0 - self.dropout), out=U)
                    xp.multiply(H, U, out=D)
                else:
                    ops.dropout(H, D, U, self.dropout, self.dropout_seed, step, l)
                A = D
            inputs.append(A)
        self._cache = (bufs, inputs)
        return bufs["Z"][-1]

    def train_step(self, X, T, counters, l2: float = 0.0, mm=None, masks=None, train: bool = True, XT=None) -> None:
        """Forward, loss, metrics, backward: gradients into ``flat_grads``; the batch's loss sum
        (L2 penalty included), correct count and one step into ``counters``. No host sync.

        ``T`` is :meth:`targets` of the labels (int32 class indices for softmax-CE). ``XT``: the
        batch transposed (C-contiguous), where :meth:`takes_transposed_batch` says the step reads it.
        """
        xp, ops = self.xp, self.ops
        if mm is None and masks is None and not l2 and self._dense_step_fits(X.shape[0]):
            return self._dense_step(X, T, counters, train, XT)
        logits = self.forward(X, train=train, masks=masks, mm=mm, step=counters.t)
        bufs, inputs = self._cache
        m = logits.shape[0]
        if "G" not in bufs:
            bufs["G"] = xp.empty_like(logits)
            bufs["loss_rows"] = xp.empty(m, dtype=self.dtype)
            bufs["dA"] = [xp.empty((m, n), dtype=self.dtype) for n in self.sizes[1:-1]]
        G, rows = bufs["G"], bufs["loss_rows"]
        if self.loss_name == "cross_entropy":
            ops.softmax_xent(logits, T, G, rows, 1.0 / m, self.label_smoothing, validate=False)
            ops.step_metrics(logits, T, rows, counters.loss, counters.correct, counters.t)
        else:  # eager only (the CUDA graph covers softmax-CE): the same sums with xp
            losses.loss_and_grad(self.loss_name, self.output, logits, T, G, rows, ops)
            counters.loss += rows.sum(dtype=counters.loss.dtype)
            counters.correct += self.correct(logits, T)
            counters.t += 1
        self.backward(G, l2, counters.loss, mm)

    def _dense_step_fits(self, m: int) -> bool:
        """Whether the ops run this step as one ``ops.dense_step`` call: a ReLU/softmax-CE network,
        and ops that prefer it (Numba's; the reference and the GPU compose the ops)."""
        fits = getattr(self.ops, "dense_step_fits", None)
        return (fits is not None and self.activation.is_relu and self.loss_name == "cross_entropy"
                and fits(self.sizes, m, self.dtype))

    def takes_transposed_batch(self, m: int, l2: float = 0.0) -> bool:
        """Whether :meth:`train_step` on ``m`` rows reads the batch transposed as well (``XT``), when
        the caller can make it off the critical path (the trainer, on the side core)."""
        return not l2 and self._dense_step_fits(m) and self.ops.dense_step_transposed(self.sizes)

    def _dense_step(self, X, T, counters, train: bool, XT=None) -> None:
        """:meth:`train_step` as the ops' one-call dense step (same maths, same buffers' roles, the
        same dropout masks)."""
        xp = self.xp
        X = xp.ascontiguousarray(X, dtype=self.dtype)
        m = X.shape[0]
        drop = train and self.dropout > 0
        bufs = self._batch_buffers(m, True)
        if "dense" not in bufs or (drop and "U" not in bufs["dense"][1]):  # also when dropout is switched on
            dt, hidden = self.dtype, m * sum(self.sizes[1:-1])
            Z = xp.empty(m * sum(self.sizes[1:]), dtype=dt)
            H, dA = xp.empty(hidden, dtype=dt), xp.empty(hidden, dtype=dt)
            D, U = (xp.empty(hidden, dtype=dt), xp.empty(hidden, dtype=dt)) if drop else (None, None)
            # Per-layer (m, n) views of the flat buffers in the ops' layout, as forward() leaves them in
            # _cache (read by the init study and the demo).
            v = dense_views(self.flat_params, self.flat_grads, self.sizes, m, Z, H, dA, D, U)
            flat = (Z, H, dA, xp.empty((m, self.sizes[-1]), dtype=dt), xp.empty(m, dtype=dt), D, U)
            views = {"Z": v.Z, "H": v.H, "dA": v.dA}
            if drop:  # the masks, as forward() leaves them
                views.update(D=v.D, U=v.U)
            bufs["dense"] = (flat, views)
        (Z, H, dA, G, rows, D, U), views = bufs["dense"]
        self.ops.dense_step(X, T, self.flat_params, self.flat_grads, self.sizes, Z, H, dA, G, rows, counters.loss,
                            counters.correct, counters.t, self.label_smoothing, self.dropout if drop else 0.0,
                            self.dropout_seed, D, U, XT)
        self._cache = (views, [X, *(views["D"] if drop else views["H"])])

    def backward(self, dZ, l2: float = 0.0, loss_acc=None, mm=None) -> None:
        """Fill ``flat_grads`` from the output gradient ``dZ`` of the last ``forward(train=True)``.

        L2: ``dW += (λ/m)·W`` and, when ``loss_acc`` is given, ``loss_acc += (λ/2)·ΣW²`` (the
        penalty λ/(2m)·ΣW² times the m rows a loss sum counts). Biases are not penalised. No
        gradient is computed for the input ``X``: nothing would use it.
        """
        ops = self.ops
        mm = mm or ops.matmul
        bufs, inputs = self._cache
        m = inputs[0].shape[0]
        if l2 and loss_acc is None:
            loss_acc = self.xp.zeros(1, dtype=np.float64)
        for l in range(self.n_layers - 1, -1, -1):
            W, dW, db = self.W[l], self.grads[2 * l], self.grads[2 * l + 1]
            mm(dZ, inputs[l], dW, trans_a=True)  # dW = dZ.T @ A
            ops.bias_grad(dZ, db)
            if l2:
                ops.l2_grad(dW, W, l2 / m, loss_acc, l2 / 2)
            if l == 0:
                break
            dA = bufs["dA"][l - 1]
            mm(dZ, W, dA)  # dA = dZ @ W
            if self.dropout > 0 and "U" in bufs:  # not a mask left from a run before dropout was switched off
                ops.dropout_backward(dA, bufs["U"][l - 1], dA)
            if self.activation.is_relu:
                ops.relu_backward(dA, bufs["Z"][l - 1], dA)
            else:
                self.activation.backward(dA, bufs["Z"][l - 1], bufs["H"][l - 1], dA)
            dZ = dA

    def correct(self, logits, y):
        """Number of correct predictions in a batch (0-d array on the device, no sync)."""
        if self.sizes[-1] == 1:
            return ((logits[:, 0] > 0) == (y.reshape(-1) > 0.5)).sum()
        if y.ndim == 2:  # one-hot / multilabel targets: compare arg-maxes
            y = y.argmax(axis=1)
        return (logits.argmax(axis=1) == y).sum()

    def loss_and_grad(self, X, y, l2: float = 0.0, train: bool = True, masks=None, check: bool = True):
        """One forward+backward pass: ``(mean loss, n_correct)`` as device scalars; grads in ``flat_grads``."""
        xp = self.xp
        X, y = xp.asarray(X), xp.asarray(y)
        if check:
            self.check_inputs(X, y)
        counters = StepCounters(xp)
        self.train_step(X, self.targets(y), counters, l2, masks=masks, train=train)
        return counters.loss[0] / X.shape[0], counters.correct[0]

    def loss(self, X, y, l2: float = 0.0, masks=None) -> float:
        """Mean loss (with L2) as a Python float, without touching the gradients."""
        xp = self.xp
        T = self.targets(y)
        train = masks is not None
        Z = self.forward(X, train=train, masks=masks).copy()
        rows = xp.empty(Z.shape[0], dtype=self.dtype)
        losses.loss_and_grad(self.loss_name, self.output, Z, T, Z, rows, self.ops, self.label_smoothing)
        total = float(rows.sum()) / Z.shape[0]
        if l2:
            total += l2 / (2 * Z.shape[0]) * sum(float(xp.vdot(W, W)) for W in self.W)
        return total

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X, batch_size: int = 4096) -> np.ndarray:
        """Output probabilities (softmax/sigmoid) as a NumPy array, in batches."""
        X = self._prepare(X)
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        for start in range(0, X.shape[0], batch_size):
            logits = self.forward(X[start : start + batch_size])
            out[start : start + batch_size] = backend.to_numpy(losses.output_activation(self.output, logits))
        return out

    def predict(self, X, batch_size: int = 4096) -> np.ndarray:
        """Class indices (NumPy int64); for a single sigmoid output, ``p > 0.5``."""
        proba = self.predict_proba(X, batch_size)
        if self.sizes[-1] == 1:
            return (proba[:, 0] > 0.5).astype(np.int64)
        return proba.argmax(axis=1)

    def _prepare(self, X):
        """Flatten images, apply the stored normalizer, check shape and finiteness."""
        xp = backend.get_array_module(X)
        X = xp.asarray(X)
        if X.ndim > 2:
            X = X.reshape(X.shape[0], -1)
        if self.normalizer is not None:
            X = self.normalizer.transform(X)
        self.check_inputs(X)
        return X

    def save(self, path) -> None:
        """Write weights + JSON metadata to ``path`` (.npz), atomically (``xpnet.load`` reads it)."""
        from xpnet.io.npz import save  # noqa: PLC0415 - the format's home imports the model, not back

        save(self, path)

    @classmethod
    def from_config(cls, config: dict, device="cpu", **overrides) -> "MLP":
        """A freshly initialised MLP from :meth:`config` (a model file's ``config``); weights come
        from :meth:`set_params` or the seed."""
        keys = ("activation", "leaky_slope", "output", "loss", "init", "dropout", "label_smoothing", "dtype", "seed")
        kwargs = {k: config[k] for k in keys if k in config}
        kwargs.update(overrides)
        return cls(config["sizes"], device=device, **kwargs)

    def state(self) -> tuple[dict, dict]:
        """``({"W0": ..., "b0": ..., ...} as NumPy arrays, config())``: what a model file stores."""
        arrays = {}
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            arrays[f"W{l}"] = backend.to_numpy(W)
            arrays[f"b{l}"] = backend.to_numpy(b)
        return arrays, self.config()

    def __repr__(self) -> str:
        shape = "-".join(str(s) for s in self.sizes)
        return f"MLP({shape}, {self.activation_name}, {self.output}, {self.n_params:,} params, {self.device}, {self.dtype.name})"


def _check_sizes(sizes) -> list[int]:
    try:
        sizes = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise ConfigError(f"sizes must be a list of positive integers, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ConfigError(f"sizes needs at least an input and an output size, got {sizes}")
    bad = [s for s in sizes if s < 1]
    if bad:
        raise ConfigError(f"layer sizes must be positive, got {sizes}")
    return sizes


class StepCounters:
    """What a training step accumulates on the device: loss sum (float64), correct count
    (int64) and the step counter ``t`` (int32, optimizer steps taken). Read by the host once
    per epoch; see :mod:`xpnet.ops.reference` for why counters are arrays."""

    def __init__(self, xp, t: int = 0):
        self.loss = xp.zeros(1, dtype=np.float64)
        self.correct = xp.zeros(1, dtype=np.int64)
        self.t = xp.full(1, t, dtype=np.int32)
