"""xpnet: a from-scratch multilayer perceptron, one NumPy-API code path on CPU or GPU.

>>> import xpnet
>>> net = xpnet.MLP([784, 1024, 10], device="cpu")
>>> history = xpnet.fit(net, xpnet.optim.Adam(1e-3), X, y, epochs=5, val=0.1)

Heavy submodules load on first use so ``import xpnet`` (and the CLI) start fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "MLP": ("model", "MLP"),
    "fit": ("train", "fit"),
    "evaluate": ("train", "evaluate"),
    "Trainer": ("train", "Trainer"),
    "History": ("train", "History"),
    "EarlyStopping": ("train", "EarlyStopping"),
    "load": ("serialize", "load"),
    "gradcheck": ("gradient_check", "gradcheck"),
    "Normalizer": ("preprocess", "Normalizer"),
    "train_val_split": ("preprocess", "train_val_split"),
    "Classifier": ("estimator", "Classifier"),
    "get_xp": ("backend", "get_xp"),
    "to_numpy": ("backend", "to_numpy"),
    "to_device": ("backend", "to_device"),
    "load_dataset": ("data", "load_dataset"),
    "find_lr": ("lr_find", "lr_find"),  # not "lr_find": importing xpnet.lr_find (the module) would shadow it
    "export_onnx": ("interop", "export_onnx"),
    "export_torch": ("interop", "export_torch"),
    "from_torch": ("interop", "from_torch"),
}

__all__ = sorted(_LAZY) + ["optim", "errors", "__version__"]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    if name in ("optim", "errors", "backend", "data", "analysis", "ops", "schedules"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'xpnet' has no attribute {name!r}")


def __dir__():
    return __all__
