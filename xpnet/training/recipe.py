"""One training run (NumPy-free at import, so the CLI's ``--help`` reads the recipes cheaply): a :class:`RunConfig` (data, network, optimizer, schedule, regularisation, loop)
and :func:`run`, the one way every command and the library turn a configuration into a trained model.

``xpnet train``, ``sweep``, ``tune``, ``study``, ``bench``, ``lr-find``, ``fit(recipe=…)`` and
:class:`xpnet.Classifier` all build their runs here, so the same configuration and seed give the
same weights from any of them, and on a GPU every one of them gets the CUDA-graph loop.

A config names a *recipe*; every field left ``None`` takes the recipe's value. ``default`` was
chosen by measurement (docs/recipe.md); ``plain`` is the course notes' baseline (Adam 1e-3,
constant, no regularisation); ``handwriting`` adds augmentation for digits people draw.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from xpnet import choices
from xpnet.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

# The recipes: the values of every recipe field a config leaves unset. ``lr`` None means the
# optimizer's own default (xpnet.optim.DEFAULT_LR); a recipe's lr applies only to the optimizer
# it was tuned for (Adam/AdamW), so `--optimizer sgd` with the default recipe keeps SGD's 0.1.
RECIPES: dict[str, dict] = {
    "default": {"optimizer": "adam", "lr": 2e-3, "schedule": "onecycle", "warmup": None, "batch_size": 128,
                "epochs": 20, "dropout": 0.1, "label_smoothing": 0.1, "weight_decay": None, "augment": False},
    "plain": {"optimizer": "adam", "lr": None, "schedule": "constant", "warmup": None, "batch_size": 128,
              "epochs": 20, "dropout": 0.0, "label_smoothing": 0.0, "weight_decay": None, "augment": False},
    # The default recipe plus augmentation with xpnet.data.augment.Augmenter's defaults: per image a shift of
    # ±2 px, a rotation of ±10°, a scale of ±10 % and a stroke thickness of ±1 step of 3×3 dilation/erosion
    # (thick mouse and finger strokes, blurred scans). Its parameters and epochs were chosen by measurement
    # on MNIST, scikit-learn's scanned digits and digits drawn on the demo page (docs/recipe.md).
    "handwriting": {"optimizer": "adam", "lr": 2e-3, "schedule": "onecycle", "warmup": None, "batch_size": 128,
                    "epochs": 20, "dropout": 0.1, "label_smoothing": 0.1, "weight_decay": None, "augment": True},
}
RECIPE_KEYS = tuple(RECIPES["default"])
assert tuple(RECIPES) == choices.RECIPES, "xpnet.choices.RECIPES lists the recipes defined here"


def describe_recipe(name: str) -> str:
    """One line for ``--help``: what recipe ``name`` sets."""
    r = RECIPES[name]
    lr = f"lr {r['lr']:g}" if r["lr"] else "lr 1e-3"
    parts = [f"{r['optimizer']} {lr} ({r['schedule']})", f"batch {r['batch_size']}", f"{r['epochs']} epochs"]
    parts += [f"{label} {r[key]:g}" for key, label in (("dropout", "dropout"), ("label_smoothing", "label smoothing"),
                                                        ("weight_decay", "weight decay")) if r[key]]
    if r["augment"]:
        parts.append("augmentation")
    return ", ".join(parts)


@dataclass
class RunConfig:
    """Everything that decides a training run. ``None`` in a recipe field means "the recipe's value";
    :meth:`resolve` fills those in and validates the whole config (typed errors)."""

    # data
    dataset: str | None = None  # None: fashion-mnist, or with data_dir the folder decides (load_dataset)
    data_dir: str | None = None
    val_split: float = 0.1
    limit: int | None = None  # use only the first N training images (quick runs)
    # network
    hidden: tuple[int, ...] = (1024,)
    activation: str = "relu"
    init: str = "he"
    dtype: str = "float32"
    # the recipe and the fields it fills
    recipe: str = "default"
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    warmup: float | None = None  # epochs
    batch_size: int | None = None
    epochs: int | None = None
    dropout: float | None = None
    label_smoothing: float | None = None
    weight_decay: float | None = None
    augment: bool | None = None
    # regularisation and loop
    l2: float = 0.0
    patience: int | None = None  # early stopping on validation loss
    seed: int = 0
    device: str = "cpu"
    graph: bool = True  # on a GPU: replay the step as a CUDA graph where supported
    schedule_config: dict | None = field(default=None, repr=False)  # a resumed run's exact schedule

    # ------------------------------------------------------------------ building and checking
    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """A config from a mapping (a TOML/JSON file's content); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown run-config key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                              f"valid keys are {', '.join(sorted(names))}")
        data = dict(data)
        if "hidden" in data:
            data["hidden"] = _hidden_tuple(data["hidden"])
        return cls(**data)

    @classmethod
    def load(cls, path) -> "RunConfig":
        """Read a ``.toml`` or ``.json`` run config, or the config a ``.jsonl`` metrics log recorded."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read run config {path}: {exc.strerror or exc}") from None
        try:
            if path.suffix.lower() in (".jsonl", ".ndjson"):  # a metrics log: replay the run it records
                from xpnet.io import runlog

                return cls.from_dict(runlog.run_config(runlog.read(path), path))
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                data = _toml_loads(text)
        except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
            raise ConfigError(f"{path} is not a valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} "
                              f"run config: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a run config is a table of keys, not {type(data).__name__}")
        return cls.from_dict(data.get("run", data))

    def replace(self, **changes) -> "RunConfig":
        """A copy with ``changes`` (None values are ignored: "not given on the command line")."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "hidden" in changes:
            changes["hidden"] = _hidden_tuple(changes["hidden"])
        return dataclasses.replace(self, **changes)

    def resolve(self) -> "RunConfig":
        """A copy with every recipe field filled from the recipe, validated."""
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.recipe]
        filled = {key: recipe[key] for key in RECIPE_KEYS if getattr(self, key) is None}
        cfg = dataclasses.replace(self, **filled)
        if self.lr is None and cfg.optimizer not in ("adam", "adamw"):
            cfg.lr = None  # the recipe's peak lr is Adam's; SGD & co. keep the notes' defaults
        cfg._validate()
        return cfg

    def _validate(self) -> None:
        def one_of(name, value, allowed):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")

        if self.dataset is None and self.data_dir is None:
            self.dataset = "fashion-mnist"
        if self.dataset is not None and self.data_dir is None:
            one_of("dataset", self.dataset, choices.DATASETS)
        one_of("activation", self.activation, choices.ACTIVATIONS)
        one_of("init", self.init, choices.INITS)
        one_of("dtype", self.dtype, choices.DTYPES)
        one_of("optimizer", self.optimizer, choices.OPTIMIZERS)
        one_of("schedule", self.schedule, choices.SCHEDULES)
        self.hidden = _hidden_tuple(self.hidden)
        checks = [
            ("val_split", self.val_split, 0 < self.val_split < 1, "in (0, 1)"),
            ("batch_size", self.batch_size, int(self.batch_size) >= 1, ">= 1"),
            ("epochs", self.epochs, int(self.epochs) >= 1, ">= 1"),
            ("dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)"),
            ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("l2", self.l2, self.l2 >= 0, ">= 0"),
        ]
        if self.lr is not None:
            checks.append(("lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "> 0"))
        if self.warmup is not None:
            checks.append(("warmup", self.warmup, self.warmup >= 0, ">= 0 epochs"))
        if self.weight_decay is not None:
            checks.append(("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"))
        if self.patience is not None:
            checks.append(("patience", self.patience, int(self.patience) >= 1, ">= 1"))
        if self.limit is not None:
            checks.append(("limit", self.limit, int(self.limit) >= 20, ">= 20"))
        for name, value, ok, rule in checks:
            if not ok:
                raise ConfigError(f"run config: {name} must be {rule}, got {value}")
        if self.weight_decay and self.optimizer != "adamw":
            raise ConfigError("weight decay is AdamW's decoupled decay: choose the adamw optimizer (--optimizer adamw) "
                              "or use L2 (--l2)")

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict:
        """Plain JSON/TOML-able values; ``schedule_config`` only when set."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hidden"] = list(self.hidden)
        if out["schedule_config"] is None:
            del out["schedule_config"]
        return out

    def to_toml(self) -> str:
        """The config as TOML: flat scalars and lists, unset (None) fields left out.

        Written by hand because the value set is tiny (numbers, strings, booleans, one list of
        ints) and exactly round-trips through the standard library's ``tomllib``; a writer
        library would be a dependency for four lines."""
        lines = ["# xpnet run config: `xpnet train --config FILE` (flags given beside it win)", "[run]"]
        for key, value in self.to_dict().items():
            if value is None or key == "schedule_config":
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        if self.schedule_config is not None:
            lines.append("\n[run.schedule_config]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in self.schedule_config.items() if v is not None]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ derived values
    def build_net(self, n_in: int, n_out: int):
        """The run's MLP (the recipe's dropout and label smoothing, this seed and device)."""
        from xpnet.nn.model import MLP

        return MLP([int(n_in), *self.hidden, int(n_out)], activation=self.activation, init=self.init,
                   dropout=self.dropout, label_smoothing=self.label_smoothing, device=self.device, dtype=self.dtype,
                   seed=self.seed)

    def build_optimizer(self, n_train: int):
        """The run's optimizer with its schedule laid over the run's steps (epochs × batches)."""
        from xpnet.optim.optimizers import get_optimizer
        from xpnet.optim.schedules import build_schedule, from_config

        n_batches = math.ceil(n_train / min(int(self.batch_size), n_train))
        if self.schedule_config is not None:
            schedule = from_config(self.schedule_config)
        else:
            warmup = None if self.warmup is None else round(self.warmup * n_batches)
            schedule = build_schedule(self.schedule, self.epochs * n_batches, warmup)
        kwargs = {"schedule": schedule}
        if self.optimizer == "adamw":
            kwargs["weight_decay"] = 0.01 if self.weight_decay is None else self.weight_decay
        return get_optimizer(self.optimizer, self.lr, **kwargs)

    def describe(self) -> str:
        extras = [f"dropout {self.dropout:g}" if self.dropout else "",
                  f"label smoothing {self.label_smoothing:g}" if self.label_smoothing else "",
                  f"L2 {self.l2:g}" if self.l2 else "", "augmentation" if self.augment else ""]
        return f"recipe {self.recipe}: {self.epochs} epochs" + "".join(f" · {e}" for e in extras if e)


@dataclass
class Split:
    """A data set prepared for one run: train/val/test arrays normalised with train statistics only."""

    name: str
    source: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    normalizer: object
    class_names: tuple
    image_shape: tuple
    load_s: float = 0.0

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_arrays(cls, X, y, config: RunConfig, *, validation: bool = True, X_test=None, y_test=None,
                    class_names=None, image_shape=None, normalizer=None, name: str = "arrays",
                    source: str = "arrays") -> "Split":
        """A split from arrays in memory (the estimator's data path, and :func:`prepare_split`'s):
        ``X`` (samples × features, NumPy or CuPy) and integer labels ``y``; with ``validation`` the
        config's ``val_split`` is held out (stratified, the config's seed). ``normalizer`` (an
        unfitted :class:`~xpnet.data.preprocess.Normalizer`, default the global one) is fitted on the
        training part only; every part is transformed to the config's dtype."""
        from xpnet.data.preprocess import Normalizer, train_val_split

        cfg = config.resolve()
        X = X.reshape(X.shape[0], -1)
        if cfg.limit is not None:
            X, y = X[: cfg.limit], y[: cfg.limit]
        if validation:
            Xtr, ytr, Xv, yv = train_val_split(X, y, cfg.val_split, seed=cfg.seed)
        else:
            Xtr, ytr, Xv, yv = X, y, None, None
        norm = (normalizer if normalizer is not None else Normalizer()).fit(Xtr)
        Xv = None if Xv is None else norm.transform(Xv, cfg.dtype)
        Xte = None if X_test is None else norm.transform(X_test.reshape(X_test.shape[0], -1), cfg.dtype)
        if class_names is None:
            class_names = [str(c) for c in range(int(y.max()) + 1)]
        return cls(name, str(source), norm.transform(Xtr, cfg.dtype), ytr, Xv, yv, Xte, y_test, norm,
                   tuple(class_names), tuple(image_shape) if image_shape is not None else (), 0.0)

    def summary(self) -> str:
        parts = [f"{len(self.X_train):,} train"]
        if self.X_val is not None:
            parts.append(f"{len(self.X_val):,} val")
        if self.X_test is not None:
            parts.append(f"{len(self.X_test):,} test")
        return f"{self.name}: {' / '.join(parts)} from {self.source} ({self.load_s:.1f}s)"


def prepare_split(config: RunConfig, progress: bool = False, dataset=None) -> Split:
    """The one data path: load (or take ``dataset``), flatten, split off validation (stratified, the
    config's seed), fit the normalizer on the training part, transform all three to the dtype."""
    import time

    from xpnet.data import load_dataset

    cfg = config.resolve()
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(cfg.dataset, data_dir=cfg.data_dir, progress=progress)
    split = Split.from_arrays(ds.X_train, ds.y_train, cfg, X_test=ds.X_test, y_test=ds.y_test,
                              class_names=ds.class_names, image_shape=ds.image_shape, name=ds.name, source=str(ds.source))
    split.load_s = time.perf_counter() - t0
    return split


@dataclass
class RunResult:
    """What :func:`run` returns: the trained network, its history, test scores (or None) and the
    resolved config; ``trainer`` for callers that checkpoint or inspect the loop."""

    net: object
    history: object
    scores: dict | None
    config: RunConfig
    split: Split
    trainer: object = field(repr=False, default=None)


def make_run_trainer(cfg: RunConfig, split: Split, net=None, opt=None, *, callbacks=(), progress: bool = False):
    """The trainer of a resolved config on ``split``: the CUDA-graph trainer on a GPU where the
    configuration allows it (``cfg.graph``), else the eager one."""
    from xpnet.training.graph import make_trainer
    from xpnet.training.trainer import EarlyStopping

    if net is None:
        net = cfg.build_net(split.n_features, split.n_classes)
    net.normalizer, net.class_names, net.dataset = split.normalizer, list(split.class_names), split.name
    opt = opt if opt is not None else cfg.build_optimizer(len(split.X_train))
    augment = None
    if cfg.augment:
        from xpnet.data.augment import Augmenter

        augment = Augmenter(image_shape=split.image_shape, seed=cfg.seed)
    val = (split.X_val, split.y_val) if split.X_val is not None else None
    return make_trainer(net, opt, split.X_train, split.y_train, graph=cfg.graph and net.device.is_gpu,
                        batch_size=cfg.batch_size, val=val, l2=cfg.l2,
                        early_stopping=EarlyStopping(patience=cfg.patience) if cfg.patience else None,
                        seed=cfg.seed, callbacks=list(callbacks), progress=progress, augment=augment)


def run(config: RunConfig | dict | None = None, split: Split | None = None, *, callbacks=(), progress: bool = False,
        evaluate_test: bool = True, **overrides) -> RunResult:
    """Train one configuration: ``xpnet.run(RunConfig(dataset="mnist", hidden=(256,), epochs=5))``.

    ``config`` (a :class:`RunConfig`, a mapping, or None for the default recipe) with ``overrides``
    applied is resolved and validated; ``split`` reuses data already prepared by
    :func:`prepare_split` (a sweep prepares it once). Returns a :class:`RunResult`.
    """
    from xpnet.training.trainer import evaluate

    if config is None:
        config = RunConfig()
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config)
    cfg = config.replace(**overrides).resolve()
    split = split if split is not None else prepare_split(cfg, progress=progress)
    trainer = make_run_trainer(cfg, split, callbacks=callbacks, progress=progress)
    history = trainer.run(cfg.epochs)
    scores = None
    if evaluate_test and split.X_test is not None:
        scores = evaluate(trainer.net, split.X_test, split.y_test)
    return RunResult(trainer.net, history, scores, cfg, split, trainer)


# ---------------------------------------------------------------------------- helpers
def _hidden_tuple(value) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral):
        value = (value,)
    elif isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        sizes = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"hidden must be a list of positive integers, got {value!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise ConfigError(f"hidden must be a list of positive integers, got {list(sizes)}")
    return sizes


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string is a JSON string


def _toml_loads(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)
