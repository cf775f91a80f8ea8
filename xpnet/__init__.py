"""xpnet: a from-scratch multilayer perceptron, one NumPy-API code path on CPU or GPU.

>>> import xpnet
>>> net = xpnet.MLP([784, 1024, 10], device="cpu")
>>> history = xpnet.fit(net, xpnet.optim.optimizers.Adam(1e-3), X, y, epochs=5, val=0.1)

Heavy submodules load on first use so ``import xpnet`` (and the CLI) start fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "MLP": ("nn.model", "MLP"),
    "fit": ("training.trainer", "fit"),
    "evaluate": ("training.trainer", "evaluate"),
    "Trainer": ("training.trainer", "Trainer"),
    "History": ("training.trainer", "History"),
    "EarlyStopping": ("training.trainer", "EarlyStopping"),
    "load": ("io.npz", "load"),
    "save": ("io.npz", "save"),
    "run": ("training.recipe", "run"),
    "RunConfig": ("training.recipe", "RunConfig"),
    "RECIPES": ("training.recipe", "RECIPES"),
    "gradcheck": ("training.gradcheck", "gradcheck"),
    "Normalizer": ("data.preprocess", "Normalizer"),
    "train_val_split": ("data.preprocess", "train_val_split"),
    "Classifier": ("sklearn", "Classifier"),
    "get_xp": ("backend", "get_xp"),
    "to_numpy": ("backend", "to_numpy"),
    "to_device": ("backend", "to_device"),
    "load_dataset": ("data", "load_dataset"),
    "find_lr": ("training.lr_find", "lr_find"),  # not "lr_find": importing xpnet.training.lr_find (the module) would shadow it
    "export_onnx": ("io.interop", "export_onnx"),
    "export_torch": ("io.interop", "export_torch"),
    "from_torch": ("io.interop", "from_torch"),
}

# Subpackages reachable as attributes (``xpnet.optim.Adam``); ``schedules`` is the older spelling
# of ``xpnet.optim.schedules``, kept for the README's examples.
_SUBPACKAGES = {name: name for name in ("optim", "errors", "backend", "data", "experiments", "ops", "nn", "training", "io")}
_SUBPACKAGES["schedules"] = "optim.schedules"

__all__ = sorted(_LAZY) + ["optim", "errors", "__version__"]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{_SUBPACKAGES[name]}", __name__)
    raise AttributeError(f"module 'xpnet' has no attribute {name!r}")


def __dir__():
    return __all__
