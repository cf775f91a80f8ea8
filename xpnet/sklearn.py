"""A scikit-learn style classifier over :class:`~xpnet.nn.model.MLP` and :func:`~xpnet.training.trainer.fit`.

Takes NumPy arrays of any label type, remembers the classes, fits the normalizer on the
training data only, and follows the ``fit / predict / predict_proba / score`` contract
(plus ``get_params``/``set_params``) so it drops into scikit-learn tooling.
"""

from __future__ import annotations

import inspect

import numpy as np

from xpnet.errors import ShapeError


class Classifier:
    def __init__(
        self,
        hidden=(1024,),
        activation: str = "relu",
        init: str = "he",
        optimizer: str = "adam",
        lr: float | None = None,
        batch_size: int = 128,
        epochs: int = 10,
        l2: float = 0.0,
        dropout: float = 0.0,
        early_stopping: int | None = None,
        val_fraction: float | None = None,
        normalize: bool = True,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        progress: bool = False,
    ):
        self.hidden = hidden
        self.activation = activation
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.l2 = l2
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.val_fraction = val_fraction
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.progress = progress

    def get_params(self, deep: bool = True) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params) -> "Classifier":
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, X, y) -> "Classifier":
        from xpnet.nn.model import MLP  # noqa: PLC0415
        from xpnet.optim.optimizers import get_optimizer  # noqa: PLC0415
        from xpnet.data.preprocess import Normalizer  # noqa: PLC0415
        from xpnet.training.trainer import fit  # noqa: PLC0415

        X = np.asarray(X)
        X = X.reshape(X.shape[0], -1)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ShapeError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got shape {y.shape}")
        self.classes_, indices = np.unique(y, return_inverse=True)
        self.normalizer_ = Normalizer().fit(X) if self.normalize else None
        Xn = self.normalizer_.transform(X, self.dtype) if self.normalizer_ else X.astype(self.dtype)
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        n_out = len(self.classes_)
        self.net_ = MLP([X.shape[1], *hidden, n_out], activation=self.activation, init=self.init,
                        dropout=self.dropout, device=self.device, dtype=self.dtype, seed=self.seed)
        self.net_.normalizer = self.normalizer_
        self.net_.class_names = [str(c) for c in self.classes_]
        opt = get_optimizer(self.optimizer, self.lr)
        val = self.val_fraction if self.val_fraction else None
        self.history_ = fit(self.net_, opt, Xn, indices, epochs=self.epochs, batch_size=self.batch_size, val=val,
                            l2=self.l2, early_stopping=self.early_stopping, seed=self.seed, progress=self.progress)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.net_.predict_proba(np.asarray(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.net_.predict(np.asarray(X))]

    def score(self, X, y) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def __repr__(self) -> str:
        return f"Classifier(hidden={self.hidden}, optimizer={self.optimizer!r}, epochs={self.epochs}, device={self.device!r})"
