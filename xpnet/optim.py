"""Optimizers from the course notes, each written once against ``xp``.

They update the model's *flat* parameter buffer in place from its flat gradient buffer,
so one step is a few whole-buffer passes (or one fused kernel for Adam) with no
parameter-sized allocation: a single scratch buffer is created on the first step.
"Batch", "mini-batch" and "stochastic" gradient descent are the same loop with batch
sizes m, b and 1.
"""

from __future__ import annotations

import numpy as np

from .backend import get_array_module
from .errors import ConfigError


class Optimizer:
    """Base: holds the learning rate, the step count ``t`` and named state buffers."""

    name = "optimizer"
    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float):
        lr = float(lr)
        if not lr > 0 or not np.isfinite(lr):
            raise ConfigError(f"learning rate must be > 0, got {lr:g}")
        self.lr = lr
        self.t = 0
        self.state: dict = {}
        self._scratch = None

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
        self._update(params, grads)

    def _update(self, params, grads) -> None:
        raise NotImplementedError

    def hyperparams(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """Step count, hyper-parameters and state buffers (for checkpoints)."""
        return {"name": self.name, "t": self.t, "hyperparams": self.hyperparams(), "state": {k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, sd: dict, xp=np) -> None:
        if sd.get("name") != self.name:
            raise ConfigError(f"checkpoint holds a {sd.get('name')!r} optimizer, not {self.name!r}")
        self.t = int(sd["t"])
        self.state = {k: xp.asarray(v) for k, v in sd["state"].items()}
        self._scratch = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``p -= lr · g``."""

    name = "sgd"

    def _update(self, params, grads):
        xp = get_array_module(params)
        xp.multiply(grads, self.lr, out=self._scratch)
        params -= self._scratch


class Momentum(Optimizer):
    """Exponentially weighted gradient: ``v = β v + (1-β) g``, ``p -= lr · v / (1-βᵗ)``."""

    name = "momentum"
    state_names = ("v",)

    def __init__(self, lr: float = 0.1, beta: float = 0.9, bias_correction: bool = True):
        super().__init__(lr)
        self.beta = _check_beta("beta", beta)
        self.bias_correction = bool(bias_correction)

    def hyperparams(self):
        return {"lr": self.lr, "beta": self.beta, "bias_correction": self.bias_correction}

    def _update(self, params, grads):
        xp, v, s = get_array_module(params), self.state["v"], self._scratch
        v *= self.beta
        xp.multiply(grads, 1.0 - self.beta, out=s)
        v += s
        scale = self.lr / (1.0 - self.beta**self.t) if self.bias_correction else self.lr
        xp.multiply(v, scale, out=s)
        params -= s


class RMSProp(Optimizer):
    """``s = β s + (1-β) g²``, ``p -= lr · g / (√s + ε)``."""

    name = "rmsprop"
    state_names = ("s",)

    def __init__(self, lr: float = 1e-3, beta: float = 0.9, eps: float = 1e-8):
        super().__init__(lr)
        self.beta = _check_beta("beta", beta)
        self.eps = float(eps)

    def hyperparams(self):
        return {"lr": self.lr, "beta": self.beta, "eps": self.eps}

    def _update(self, params, grads):
        xp, sq, s = get_array_module(params), self.state["s"], self._scratch
        xp.multiply(grads, grads, out=s)
        s *= 1.0 - self.beta
        sq *= self.beta
        sq += s
        xp.sqrt(sq, out=s)
        s += self.eps
        xp.divide(grads, s, out=s)
        s *= self.lr
        params -= s


class Adam(Optimizer):
    """Momentum + RMSProp with bias correction; one fused pass via ``ops.adam_step``.

    ``p -= lr · m̂ / (√v̂ + ε)`` with ``m̂ = m/(1-β1ᵗ)``, ``v̂ = v/(1-β2ᵗ)``.
    """

    name = "adam"
    state_names = ("m", "v")

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, fast_ops: bool = True):
        super().__init__(lr)
        self.beta1 = _check_beta("beta1", betas[0])
        self.beta2 = _check_beta("beta2", betas[1])
        self.eps = float(eps)
        self.fast_ops = fast_ops

    def hyperparams(self):
        return {"lr": self.lr, "betas": [self.beta1, self.beta2], "eps": self.eps}

    def _ensure_state(self, params):
        from .ops import get_ops  # noqa: PLC0415

        xp = get_array_module(params)
        if not self.state:  # Adam needs no scratch buffer: the fused op works in registers
            self.state = {name: xp.zeros_like(params) for name in self.state_names}
        self._ops = get_ops(xp, self.fast_ops)

    def _update(self, params, grads):
        self._ops.adam_step(params, grads, self.state["m"], self.state["v"], self.t, self.lr, self.beta1, self.beta2, self.eps)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, RMSProp, Adam)}
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "rmsprop": 1e-3, "adam": 1e-3}


def get_optimizer(name: str, lr: float | None = None, **kwargs) -> Optimizer:
    """Build an optimizer by name (``sgd``, ``momentum``, ``rmsprop``, ``adam``) with the notes' defaults."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](lr=DEFAULT_LR[key] if lr is None else lr, **kwargs)


def _check_beta(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return value
