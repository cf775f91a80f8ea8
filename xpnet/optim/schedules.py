"""Learning-rate schedules, updated per optimizer step.

A schedule is a pure function of the 1-based step count ``t``: it returns the *factor*
that multiplies the optimizer's ``lr`` (the peak), so ``Adam(3e-3, schedule=OneCycle(...))``
peaks at 3e-3 and ``opt.lr_at(t) == opt.lr * schedule(t)``. Having no hidden state, a
schedule can be evaluated for a whole epoch at once (:meth:`Schedule.values`, vectorised)
to fill a device-side lr table, and a resumed run continues it exactly from ``opt.t``.

Every schedule matches its PyTorch counterpart stepped once per optimizer step (the lr of
step ``t`` is what ``scheduler.get_last_lr()`` returns after ``t - 1`` calls of
``scheduler.step()``; tested against ``torch.optim.lr_scheduler`` where torch is installed):

=============  ========================================  ====================================
name           factor at step t (s = t - 1 - warmup)     PyTorch
=============  ========================================  ====================================
constant       1                                         ``ConstantLR(factor=1)``
step           gamma ** (s // step_size)                 ``StepLR(step_size, gamma)``
exponential    gamma ** s                                ``ExponentialLR(gamma)``
cosine         m + (1 - m)·(1 + cos(π·s/T))/2            ``CosineAnnealingLR(T_max=T, eta_min=m·lr)``
onecycle       warm-up 1/25 → 1, anneal 1 → 1/(25·1e4)   ``OneCycleLR(cycle_momentum=False)``
=============  ========================================  ====================================

``warmup_steps = w`` (all but onecycle, whose warm-up is its ``pct_start``) prepends a linear
warm-up ``t / w`` for ``t <= w`` (PyTorch: ``LinearLR(start_factor=1/w, total_iters=w-1)``
then the schedule, via ``SequentialLR``). Past ``total_steps`` the cosine and one-cycle
schedules stay at their final value (PyTorch raises instead), so a run extended with
``--resume --epochs`` more does not crash.
"""

from __future__ import annotations

import math

import numpy as np

from xpnet import choices
from xpnet.errors import ConfigError

SCHEDULE_NAMES = choices.SCHEDULES


class Schedule:
    """Base class: ``values(t)`` (vectorised over 1-based steps) and ``__call__(t)`` (one float)."""

    name = "schedule"

    def __init__(self, warmup_steps: int = 0):
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)

    def values(self, t) -> np.ndarray:
        """Factors (float64) for the 1-based steps in ``t`` (an int or an integer array)."""
        t = np.asarray(t, dtype=np.float64)
        if np.any(t < 1):
            raise ConfigError("schedule steps are 1-based: t must be >= 1")
        w = self.warmup_steps
        after = self._decay(np.maximum(t - 1 - w, 0.0))
        if w == 0:
            return np.asarray(after, dtype=np.float64)
        return np.where(t <= w, t / w, after)

    def __call__(self, t: int) -> float:
        return float(self.values(np.array([t]))[0])

    def _decay(self, s):
        """The factor ``s`` steps after the warm-up (``s`` a float64 array, 0-based)."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able settings; :func:`from_config` rebuilds the schedule from them."""
        return {"name": self.name, **self._params()}

    def _params(self) -> dict:
        return {"warmup_steps": self.warmup_steps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and self.config() == other.config()


class Constant(Schedule):
    """The peak lr at every step (after an optional linear warm-up)."""

    name = "constant"

    def _decay(self, s):
        return np.ones_like(s)


class Step(Schedule):
    """Multiply by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``)."""

    name = "step"

    def __init__(self, step_size: int, gamma: float = 0.1, warmup_steps: int = 0):
        super().__init__(warmup_steps)
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = _check_gamma(gamma)

    def _decay(self, s):
        return self.gamma ** np.floor(s / self.step_size)

    def _params(self):
        return {"step_size": self.step_size, "gamma": self.gamma, "warmup_steps": self.warmup_steps}


class Exponential(Schedule):
    """Multiply by ``gamma`` every step (``torch.optim.lr_scheduler.ExponentialLR``)."""

    name = "exponential"

    def __init__(self, gamma: float, warmup_steps: int = 0):
        super().__init__(warmup_steps)
        self.gamma = _check_gamma(gamma)

    def _decay(self, s):
        return self.gamma**s

    def _params(self):
        return {"gamma": self.gamma, "warmup_steps": self.warmup_steps}


class Cosine(Schedule):
    """Half a cosine from 1 down to ``min_factor`` over ``total_steps - warmup_steps`` steps
    (``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``T_max = total_steps - warmup_steps``)."""

    name = "cosine"

    def __init__(self, total_steps: int, min_factor: float = 0.0, warmup_steps: int = 0):
        super().__init__(warmup_steps)
        self.total_steps = _check_int("total_steps", total_steps, 1)
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(f"warm-up ({self.warmup_steps} steps) must be shorter than the run ({self.total_steps} steps)")
        self.min_factor = float(min_factor)
        if not 0.0 <= self.min_factor <= 1.0:
            raise ConfigError(f"min_factor must be in [0, 1], got {min_factor}")

    def _decay(self, s):
        T = self.total_steps - self.warmup_steps
        s = np.minimum(s, T)
        return self.min_factor + (1.0 - self.min_factor) * (1.0 + np.cos(math.pi * s / T)) / 2.0

    def _params(self):
        return {"total_steps": self.total_steps, "min_factor": self.min_factor, "warmup_steps": self.warmup_steps}


class OneCycle(Schedule):
    """Leslie Smith's one-cycle policy, exactly as ``torch.optim.lr_scheduler.OneCycleLR``
    (two phases, ``cycle_momentum=False``: xpnet's Adam keeps its betas fixed).

    Step ``t`` uses ``n = t - 1``. Phase 1 (``n <= pct_start·total_steps - 1``) anneals from
    ``1/div_factor`` to 1 (the peak); phase 2 anneals from 1 to
    ``1/(div_factor·final_div_factor)`` at ``n = total_steps - 1``. Cosine annealing from ``a``
    to ``b`` at fraction ``p``: ``b + (a - b)/2·(1 + cos(π p))``; linear: ``a + (b - a)·p``.
    With the defaults the lr starts at peak/25 and ends at peak/250,000.
    """

    name = "onecycle"

    def __init__(self, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, anneal: str = "cos"):
        super().__init__(0)
        self.total_steps = _check_int("total_steps", total_steps, 1)
        self.pct_start = float(pct_start)
        if not 0.0 < self.pct_start < 1.0:
            raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}")
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        if not (self.div_factor > 0 and self.final_div_factor > 0):
            raise ConfigError("div_factor and final_div_factor must be > 0")
        if anneal not in ("cos", "linear"):
            raise ConfigError(f"anneal must be 'cos' or 'linear', got {anneal!r}")
        self.anneal = anneal
        # torch's phase-1 end_step (0-based). A run too short for a warm-up (pct·total <= 1, e.g. a
        # 2-step run) starts at the peak; PyTorch divides by zero or goes negative there instead.
        self.peak_step = max(self.pct_start * self.total_steps - 1.0, 0.0)

    def values(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if np.any(t < 1):
            raise ConfigError("schedule steps are 1-based: t must be >= 1")
        n = np.minimum(t - 1.0, self.total_steps - 1.0)
        initial = 1.0 / self.div_factor
        final = initial / self.final_div_factor
        end1, end2 = self.peak_step, self.total_steps - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            up = self._anneal(initial, 1.0, n / end1) if end1 > 0 else np.ones_like(n)
            down = self._anneal(1.0, final, (n - end1) / (end2 - end1)) if end2 > end1 else np.ones_like(n)
        return np.where(n <= end1, up, down)

    def _anneal(self, start, end, pct):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (np.cos(math.pi * pct) + 1.0)
        return (end - start) * pct + start

    def _params(self):
        return {"total_steps": self.total_steps, "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "anneal": self.anneal}


SCHEDULES = {cls.name: cls for cls in (Constant, Step, Exponential, Cosine, OneCycle)}
assert tuple(SCHEDULES) == choices.SCHEDULES, "xpnet.choices.SCHEDULES lists the schedules built here"


def from_config(config: dict | None) -> Schedule | None:
    """The schedule described by :meth:`Schedule.config` (``None`` stays ``None``)."""
    if config is None:
        return None
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**config)
    except TypeError as exc:
        raise ConfigError(f"bad settings for schedule {name!r}: {exc}") from None


def build_schedule(name: str, total_steps: int, warmup_steps: int | None = None) -> Schedule | None:
    """The CLI's schedules over a run of ``total_steps`` optimizer steps (``--schedule NAME``).

    ``constant`` gives ``None`` without warm-up (a plain optimizer); ``step`` divides the lr by
    10 after each third of the post-warm-up steps; ``exponential`` decays to 1 % of the peak
    by the last step; ``cosine`` anneals to 0; ``onecycle`` warms up over ``warmup_steps``
    (default 30 % of the run, PyTorch's ``pct_start=0.3``) and anneals to peak/250,000.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    total = _check_int("total_steps", total_steps, 1)
    w = 0 if warmup_steps is None else _check_int("warmup_steps", warmup_steps, 0)
    if key == "onecycle":
        pct = 0.3 if warmup_steps is None else w / total  # the peak is step t = pct·total (torch's n = pct·total - 1)
        if warmup_steps is not None and not 0 < w < total:
            raise ConfigError(f"one-cycle needs a warm-up shorter than the run ({total} steps), got {w} warm-up steps")
        return OneCycle(total, pct_start=pct)
    if w >= total:
        raise ConfigError(f"warm-up ({w} steps) must be shorter than the run ({total} steps)")
    if key == "constant":
        return Constant(w) if w else None
    if key == "step":
        return Step(max(1, math.ceil((total - w) / 3)), 0.1, w)
    if key == "exponential":
        return Exponential(0.01 ** (1.0 / max(1, total - w - 1)), w)
    return Cosine(total, 0.0, w)


def _check_int(name, value, minimum) -> int:
    try:
        ivalue = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if ivalue != value or ivalue < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value}")
    return ivalue


def _check_gamma(gamma) -> float:
    gamma = float(gamma)
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
    return gamma
