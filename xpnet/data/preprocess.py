"""Preprocessing fitted on the training split only, then reused on val/test and at predict time."""

from __future__ import annotations

import numpy as np

from xpnet.backend import get_array_module
from xpnet.errors import ConfigError, ShapeError


class Normalizer:
    """Scale pixels to [0, 1] (integer input), then standardise with the *training* mean/std.

    ``per_feature=False`` (default) uses one mean/std for all pixels, which leaves the
    always-black border of MNIST images harmless; ``per_feature=True`` is the notes'
    per-column standardisation, with a floor on σ so constant pixels do not blow up.
    """

    def __init__(self, per_feature: bool = False, min_std: float = 1e-2):
        self.per_feature = bool(per_feature)
        self.min_std = float(min_std)
        self.scale = 1.0
        self.mean = None
        self.std = None

    def fit(self, X) -> "Normalizer":
        xp = get_array_module(X)
        X = _flatten(X)
        self.scale = 1.0 / 255.0 if X.dtype.kind in "ui" else 1.0
        Xs = X.astype(np.float64) * self.scale
        if self.per_feature:
            self.mean = xp.asarray(Xs.mean(axis=0))
            self.std = xp.maximum(xp.asarray(Xs.std(axis=0)), self.min_std)
        else:
            self.mean = float(Xs.mean())
            self.std = max(float(Xs.std()), self.min_std)
        return self

    def transform(self, X, dtype=np.float32):
        """``(X·scale − mean) / std`` as ``dtype`` on X's device."""
        if self.mean is None:
            raise ConfigError("Normalizer.transform called before fit")
        xp = get_array_module(X)
        X = _flatten(X)
        if self.per_feature and X.shape[1] != len(self.mean):
            raise ShapeError(f"X has {X.shape[1]} features but the normalizer was fitted on {len(self.mean)}")
        dtype = np.dtype(dtype)
        out = X.astype(dtype)
        out *= dtype.type(self.scale)
        mean = xp.asarray(self.mean, dtype=dtype) if self.per_feature else dtype.type(self.mean)
        std = xp.asarray(self.std, dtype=dtype) if self.per_feature else dtype.type(self.std)
        out -= mean
        out /= std
        return out

    def fit_transform(self, X, dtype=np.float32):
        return self.fit(X).transform(X, dtype)

    def to_dict(self) -> dict:
        def plain(v):
            return np.asarray(v if not hasattr(v, "get") else v.get()).tolist()

        return {"per_feature": self.per_feature, "scale": self.scale, "mean": plain(self.mean), "std": plain(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        norm = cls(per_feature=d["per_feature"])
        norm.scale = float(d["scale"])
        if norm.per_feature:
            norm.mean, norm.std = np.asarray(d["mean"]), np.asarray(d["std"])
        else:
            norm.mean, norm.std = float(d["mean"]), float(d["std"])
        return norm

    def __repr__(self) -> str:
        kind = "per-feature" if self.per_feature else f"mean={self.mean:.4f}, std={self.std:.4f}" if self.mean is not None else "unfitted"
        return f"Normalizer({kind})"


def _flatten(X):
    return X.reshape(X.shape[0], -1) if X.ndim > 2 else X


def train_val_split(X, y, val_fraction: float, seed: int = 0, stratify: bool = True):
    """Split off ``val_fraction`` of the samples: ``(X_train, y_train, X_val, y_val)``.

    Stratified by default (each class keeps its share in both parts), seeded, and
    order-preserving inside each part so results do not depend on the input order's luck.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {val_fraction}")
    n = X.shape[0]
    if y.shape[0] != n:
        raise ShapeError(f"X has {n} samples but y has {y.shape[0]}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(y.get() if hasattr(y, "get") else y)
    if stratify and labels.ndim == 1:
        val_idx = []
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            take = int(round(len(members) * val_fraction))
            val_idx.append(rng.choice(members, size=take, replace=False))
        val_idx = np.concatenate(val_idx)
    else:
        val_idx = rng.choice(n, size=int(round(n * val_fraction)), replace=False)
    is_val = np.zeros(n, dtype=bool)
    is_val[val_idx] = True
    if is_val.all() or not is_val.any():
        raise ConfigError(f"a validation fraction of {val_fraction} leaves one split empty for {n} samples")
    xp = get_array_module(X)
    mask = xp.asarray(is_val)
    return X[~mask], y[~mask], X[mask], y[mask]
