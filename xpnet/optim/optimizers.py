"""Optimizers from the course notes, each written once against ``xp``.

They update the model's *flat* parameter buffer in place from its flat gradient buffer,
so one step is a few whole-buffer passes (or one fused kernel for Adam) with no
parameter-sized allocation: a single scratch buffer is created on the first step.
"Batch", "mini-batch" and "stochastic" gradient descent are the same loop with batch
sizes m, b and 1.
"""

from __future__ import annotations

import numpy as np

from xpnet import choices
from xpnet.backend import get_array_module
from xpnet.errors import ConfigError


class Optimizer:
    """Base: holds the learning rate, the step count ``t`` and named state buffers."""

    name = "optimizer"
    state_names: tuple[str, ...] = ()
    # True when device_step reads its step count and learning rate from device memory, so the
    # training step that calls it can be captured once and replayed (a CUDA graph).
    capturable = False

    def __init__(self, lr: float, schedule=None):
        lr = float(lr)
        if not lr > 0 or not np.isfinite(lr):
            raise ConfigError(f"learning rate must be > 0, got {lr:g}")
        self.lr = lr
        self.schedule = schedule
        self.t = 0
        self.state: dict = {}
        self._scratch = None

    @property
    def schedule(self):
        """An :class:`xpnet.optim.schedules.Schedule` (a factor of ``lr`` per step), or None: constant ``lr``."""
        return self._schedule

    @schedule.setter
    def schedule(self, value):
        if value is not None and not callable(getattr(value, "values", None)):
            raise ConfigError(f"schedule must be an xpnet.optim.schedules.Schedule or None, got {type(value).__name__}")
        self._schedule = value

    def lr_at(self, t: int) -> float:
        """The learning rate of step ``t`` (1-based): ``lr`` times the schedule's factor.

        A pure function of ``t`` (no hidden state), so a whole epoch's table can be filled
        ahead (:meth:`lr_table`) and a resumed run continues the schedule exactly.
        """
        return self.lr if self._schedule is None else self.lr * self._schedule(t)

    def lr_table(self, t_first: int, n: int) -> np.ndarray:
        """``[lr_at(t_first), ..., lr_at(t_first + n - 1)]`` as float64, vectorised."""
        t = np.arange(int(t_first), int(t_first) + int(n))
        if self._schedule is None:
            return np.full(t.shape, self.lr, dtype=np.float64)
        return self.lr * self._schedule.values(t)

    def _ensure_state(self, params):
        if not self.state:
            xp = get_array_module(params)
            self.state = {name: xp.zeros_like(params) for name in self.state_names}
            self._scratch = xp.empty_like(params)
        elif self._scratch is None:
            self._scratch = get_array_module(params).empty_like(params)

    def step(self, params, grads) -> None:
        """Update ``params`` in place from ``grads`` (both flat arrays on the same device)."""
        self._ensure_state(params)
        self.t += 1
        self._update(params, grads, self.lr_at(self.t))

    def _update(self, params, grads, lr: float) -> None:
        raise NotImplementedError

    def device_step(self, params, grads, t, lrs, ops) -> None:
        """The update of a :attr:`capturable` optimizer inside the training step: ``t`` is the device
        step counter (already advanced to this step), ``lrs`` the run's per-step learning rates on
        the device (:meth:`lr_table`), ``ops`` the network's ops (the implementation the step is
        captured with). Others update with :meth:`step`, counting on the host."""
        raise NotImplementedError(f"{type(self).__name__} is not capturable: use step()")

    def advance(self) -> None:
        """Count one step taken by :meth:`device_step` (a graph replay) on the host too: the trainer
        calls it after each step of a capturable optimizer, so ``t`` is the one step count."""
        self.t += 1

    def graph_key(self) -> tuple:
        """What a captured :meth:`device_step` bakes in (buffer addresses, scalars): a change forces
        a recapture."""
        from xpnet.backend import data_ptr  # noqa: PLC0415 - only graph trainers ask

        return tuple(data_ptr(self.state[name]) for name in self.state_names)

    def hyperparams(self) -> dict:
        return self._with_schedule({"lr": self.lr})

    def _with_schedule(self, hp: dict) -> dict:
        if self._schedule is not None:
            hp["schedule"] = self._schedule.config()
        return hp

    def state_dict(self) -> dict:
        """Step count, hyper-parameters and state buffers (for checkpoints)."""
        return {"name": self.name, "t": self.t, "hyperparams": self.hyperparams(), "state": {k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, sd: dict, xp=np) -> None:
        if sd.get("name") != self.name:
            raise ConfigError(f"checkpoint holds a {sd.get('name')!r} optimizer, not {self.name!r}")
        self.t = int(sd["t"])
        self.state = {k: xp.asarray(v) for k, v in sd["state"].items()}
        self._scratch = None
        hp = sd.get("hyperparams")
        if hp is not None:  # a full state_dict(): the same lr and schedule continue exactly
            from xpnet.optim.schedules import from_config  # noqa: PLC0415

            self.lr = float(hp.get("lr", self.lr))
            self.schedule = from_config(hp.get("schedule"))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparams().items() if k != "schedule")
        if self._schedule is not None:
            args += f", schedule={self._schedule!r}"
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``p -= lr · g``."""

    name = "sgd"

    def _update(self, params, grads, lr):
        xp = get_array_module(params)
        xp.multiply(grads, lr, out=self._scratch)
        params -= self._scratch


class Momentum(Optimizer):
    """Exponentially weighted gradient: ``v = β v + (1-β) g``, ``p -= lr · v / (1-βᵗ)``."""

    name = "momentum"
    state_names = ("v",)

    def __init__(self, lr: float = 0.1, beta: float = 0.9, bias_correction: bool = True, schedule=None):
        super().__init__(lr, schedule)
        self.beta = _check_beta("beta", beta)
        self.bias_correction = bool(bias_correction)

    def hyperparams(self):
        return self._with_schedule({"lr": self.lr, "beta": self.beta, "bias_correction": self.bias_correction})

    def _update(self, params, grads, lr):
        xp, v, s = get_array_module(params), self.state["v"], self._scratch
        v *= self.beta
        xp.multiply(grads, 1.0 - self.beta, out=s)
        v += s
        scale = lr / (1.0 - self.beta**self.t) if self.bias_correction else lr
        xp.multiply(v, scale, out=s)
        params -= s


class RMSProp(Optimizer):
    """``s = β s + (1-β) g²``, ``p -= lr · g / (√s + ε)``."""

    name = "rmsprop"
    state_names = ("s",)

    def __init__(self, lr: float = 1e-3, beta: float = 0.9, eps: float = 1e-8, schedule=None):
        super().__init__(lr, schedule)
        self.beta = _check_beta("beta", beta)
        self.eps = float(eps)

    def hyperparams(self):
        return self._with_schedule({"lr": self.lr, "beta": self.beta, "eps": self.eps})

    def _update(self, params, grads, lr):
        xp, sq, s = get_array_module(params), self.state["s"], self._scratch
        xp.multiply(grads, grads, out=s)
        s *= 1.0 - self.beta
        sq *= self.beta
        sq += s
        xp.sqrt(sq, out=s)
        s += self.eps
        xp.divide(grads, s, out=s)
        s *= lr
        params -= s


class Adam(Optimizer):
    """Momentum + RMSProp with bias correction; one fused pass via ``ops.adam_step``.

    ``p -= lr · m̂ / (√v̂ + ε)`` with ``m̂ = m/(1-β1ᵗ)``, ``v̂ = v/(1-β2ᵗ)``.
    """

    name = "adam"
    state_names = ("m", "v")
    capturable = True

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, fast_ops: bool = True, schedule=None):
        super().__init__(lr, schedule)
        self.beta1 = _check_beta("beta1", betas[0])
        self.beta2 = _check_beta("beta2", betas[1])
        self.eps = float(eps)
        self.fast_ops = fast_ops

    def hyperparams(self):
        return self._with_schedule({"lr": self.lr, "betas": [self.beta1, self.beta2], "eps": self.eps})

    def _ensure_state(self, params):
        from xpnet.ops import get_ops  # noqa: PLC0415

        xp = get_array_module(params)
        if not self.state:  # Adam needs no scratch buffer: the fused op works in registers
            self.state = {name: xp.zeros_like(params) for name in self.state_names}
        self._ops = get_ops(xp, self.fast_ops)

    def _update(self, params, grads, lr):
        self._ops.adam_step(params, grads, self.state["m"], self.state["v"], self.t, lr, self.beta1, self.beta2, self.eps)

    def device_step(self, params, grads, t, lrs, ops) -> None:
        """The fused Adam op reading the step ``t`` and ``lrs[t - 1]`` from device memory."""
        self._ensure_state(params)
        ops.adam_step(params, grads, self.state["m"], self.state["v"], t, lrs, self.beta1, self.beta2, self.eps)

    def graph_key(self) -> tuple:
        from xpnet.backend import data_ptr  # noqa: PLC0415

        return (data_ptr(self.state["m"]), data_ptr(self.state["v"]), self.beta1, self.beta2, self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay, exactly as ``torch.optim.AdamW``.

    Each step first shrinks the parameters, ``p ← p·(1 − lr_t·weight_decay)`` (``lr_t`` the
    scheduled lr of this step, as in PyTorch), then takes the Adam step on the gradient,
    which holds no decay term. By default **every parameter decays, biases included**, as in
    PyTorch (one parameter group). ``decay_biases=False`` decays the weight matrices only; it
    needs the network's parameter shapes (``param_shapes=[p.shape for p in net.params]``:
    the flat buffer holds ``W0, b0, W1, b1, ...`` in that order, see :func:`weight_slices`).
    The decay is one extra pass over the (weight) buffer; the Adam part is the fused op.
    """

    name = "adamw"
    capturable = False  # the decay pass reads the host's scheduled lr

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 decay_biases: bool = True, param_shapes=None, fast_ops: bool = True, schedule=None):
        super().__init__(lr, betas, eps, fast_ops, schedule)
        self.weight_decay = float(weight_decay)
        if not self.weight_decay >= 0 or not np.isfinite(self.weight_decay):
            raise ConfigError(f"weight decay must be >= 0, got {weight_decay}")
        self.decay_biases = bool(decay_biases)
        self._slices = None
        if not self.decay_biases:
            if param_shapes is None:
                raise ConfigError("decay_biases=False needs param_shapes=[p.shape for p in net.params]")
            self._slices = weight_slices(param_shapes)

    def hyperparams(self):
        hp = super().hyperparams()
        schedule = hp.pop("schedule", None)
        hp.update(weight_decay=self.weight_decay, decay_biases=self.decay_biases)
        if schedule is not None:
            hp["schedule"] = schedule
        return hp

    def _update(self, params, grads, lr):
        if self.weight_decay:
            shrink = 1.0 - lr * self.weight_decay
            if self._slices is None:
                params *= shrink
            else:
                for start, stop in self._slices:
                    params[start:stop] *= shrink
        super()._update(params, grads, lr)



def weight_slices(param_shapes) -> list[tuple[int, int]]:
    """``(start, stop)`` of each weight matrix in the flat buffer ``[W0, b0, W1, b1, ...]``."""
    slices, offset = [], 0
    for i, shape in enumerate(param_shapes):
        size = int(np.prod(shape))
        if i % 2 == 0:
            slices.append((offset, offset + size))
        offset += size
    return slices


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, RMSProp, Adam, AdamW)}
assert tuple(OPTIMIZERS) == choices.OPTIMIZERS, "xpnet.choices.OPTIMIZERS lists the optimizers built here"
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3}


def get_optimizer(name: str, lr: float | None = None, **kwargs) -> Optimizer:
    """Build an optimizer by name (``sgd``, ``momentum``, ``rmsprop``, ``adam``, ``adamw``) with the notes'
    defaults; ``kwargs`` go to its constructor (``schedule=``, ``weight_decay=`` for AdamW...)."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](lr=DEFAULT_LR[key] if lr is None else lr, **kwargs)


def _check_beta(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return value
