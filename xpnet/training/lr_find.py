"""The learning-rate range test of the course notes (Leslie Smith 2015, fastai's ``lr_find``).

Train a *copy* of the network for a few hundred mini-batches while the learning rate rises
exponentially from ``start_lr`` (1e-5) towards ``end_lr`` (10), record the loss of every
batch, and stop once it explodes (the smoothed loss above ``diverge`` × its minimum, or not
finite). The loss falls slowly while the lr is too small, fastest in the useful range, and
shoots up once the lr is too large.

Suggestion rule (``rule = "min/10"``): the lr at the minimum of the smoothed loss, divided by
10 — at the minimum the lr is already on the edge of instability, a decade lower is the
largest safe one (fastai's ``lr_min``). The steepest-descent lr (most negative slope of the
smoothed loss against log lr, between step 10 and the minimum) is reported beside it. The caller's
network and optimizer are never touched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from xpnet.errors import ConfigError

RULE = "min/10"
RULE_TEXT = "the lr at the minimum of the smoothed loss ÷ 10"


@dataclass
class LRFindResult:
    """Learning rates tried, the raw and smoothed loss at each, and the suggestion."""

    lrs: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    suggested_lr: float = float("nan")
    min_loss_lr: float = float("nan")
    steepest_lr: float = float("nan")
    rule: str = RULE
    stopped_early: bool = False
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def plot(self, path, title: str | None = None):
        """Loss against lr (log scale) with the suggestion marked; the written path, or None without matplotlib."""
        from xpnet.io.plotting import get_pyplot, save_figure

        plt = get_pyplot()
        if plt is None or not self.lrs:
            return None
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.3, lw=1, label="loss per batch")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", lw=2, label="smoothed (EMA 0.98)")
        ax.axvline(self.min_loss_lr, color="tab:gray", ls=":", lw=1, label=f"minimum: {self.min_loss_lr:.2g}")
        ax.axvline(self.steepest_lr, color="tab:orange", ls="--", lw=1, label=f"steepest: {self.steepest_lr:.2g}")
        ax.axvline(self.suggested_lr, color="tab:red", lw=1.5, label=f"suggested ({self.rule}): {self.suggested_lr:.2g}")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # the explosion at the end would squash the interesting part
            lo, start = min(finite), finite[0]
            ax.set_ylim(lo - 0.1 * (start - lo + 1e-12), start + 0.5 * (start - lo + 1e-12))
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
               title=title or "Learning-rate range test")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        return save_figure(fig, path)


def lr_find(net, X, y, optimizer="adam", start_lr: float = 1e-5, end_lr: float = 10.0, steps: int = 300,
            batch_size: int = 128, seed: int = 0, smooth: float = 0.98, diverge: float = 4.0,
            progress: bool = False, **opt_kwargs) -> LRFindResult:
    """Run the range test on a copy of ``net`` over ``(X, y)`` (rows, normalised as for training).

    ``optimizer`` is a name (``opt_kwargs`` go to its constructor) or an Optimizer, copied and
    run without its schedule. The lr of step ``i`` (0-based) is
    ``start_lr·(end_lr/start_lr)^(i/(steps-1))``.
    """
    from xpnet.optim.optimizers import Optimizer, get_optimizer
    from xpnet.progress import ProgressBar

    start_lr, end_lr = float(start_lr), float(end_lr)
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ConfigError(f"need 0 < start lr < end lr, got {start_lr:g} and {end_lr:g}")
    steps = int(steps)
    if steps < 10:
        raise ConfigError(f"the range test needs at least 10 steps, got {steps}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if not 0 <= smooth < 1:
        raise ConfigError(f"smoothing must be in [0, 1), got {smooth}")
    xp = net.xp
    X = X.reshape(X.shape[0], -1) if X.ndim > 2 else X
    net.check_inputs(xp.asarray(X), xp.asarray(y))
    X = xp.asarray(X, dtype=net.dtype)
    y = xp.asarray(y)
    work = net.to(net.device)  # a copy: the caller's weights stay as they are
    work.dropout_seed = seed + 1  # its own dropout masks (ops.dropout hashes seed, step, element)
    if isinstance(optimizer, Optimizer):
        opt = copy.deepcopy(optimizer)
        opt.schedule, opt.t, opt.state, opt._scratch = None, 0, {}, None
    else:
        opt = get_optimizer(optimizer, start_lr, **opt_kwargs)

    n = X.shape[0]
    bs = min(int(batch_size), n)
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(n), 0
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    result = LRFindResult(config={"optimizer": opt.name, "start_lr": start_lr, "end_lr": end_lr, "steps": steps,
                                  "batch_size": bs, "seed": int(seed), "smooth": smooth, "diverge": diverge,
                                  "sizes": list(net.sizes)})
    avg, best = 0.0, math.inf
    bar = ProgressBar(steps, "lr-find", enabled=progress, unit="batches")
    with np.errstate(over="ignore", invalid="ignore"):
        for i, lr in enumerate(lrs):
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            idx = xp.asarray(order[pos : pos + bs])
            pos += bs
            opt.lr = float(lr)
            loss, _ = work.loss_and_grad(X[idx], y[idx], check=False)
            loss = float(loss)
            avg = smooth * avg + (1 - smooth) * loss
            smoothed = avg / (1 - smooth ** (i + 1))
            result.lrs.append(float(lr))
            result.losses.append(loss)
            result.smoothed.append(smoothed)
            bar.update(1, bs, f"lr {lr:.2e} loss {smoothed:.3f}")
            if not math.isfinite(smoothed) or (i >= 10 and smoothed > diverge * best):
                result.stopped_early = True
                break
            best = min(best, smoothed)
            opt.step(work.flat_params, work.flat_grads)
    bar.close()
    _suggest(result)
    return result


def _suggest(result: LRFindResult) -> None:
    """Fill ``min_loss_lr``, ``steepest_lr`` and ``suggested_lr`` (see the module docstring)."""
    lrs = np.asarray(result.lrs)
    sm = np.asarray(result.smoothed)
    ok = np.isfinite(sm)
    if ok.sum() < 3:
        raise ConfigError("the loss was not finite from the first batches on: lower --start-lr")
    lrs, sm = lrs[ok], sm[ok]
    k = int(np.argmin(sm))
    result.min_loss_lr = float(lrs[k])
    result.suggested_lr = float(lrs[k] / 10.0)
    s0 = min(10, max(k - 2, 0))  # the first smoothed values are the EMA settling, not the loss falling
    if k - s0 >= 2:
        slope = np.gradient(sm[s0 : k + 1], np.log(lrs[s0 : k + 1]))
        result.steepest_lr = float(lrs[s0 + int(np.argmin(slope))])
    else:
        result.steepest_lr = float(lrs[k])
