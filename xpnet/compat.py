"""Optional dependencies and their install hints (imported lazily, on first use).

``require("onnx", "ONNX export")`` returns the module or raises one typed error naming the pip
extra that brings it, so a missing package is one clear ``error:`` line in the CLI.
"""

from __future__ import annotations

import importlib

from xpnet.errors import ConfigError

# module -> (pip extra or command, what it is for by default). The imports that raise a more specific
# error (CuPy's DeviceError with the driver's CUDA major, Pillow's DataError, Optuna's storage hint)
# keep their own messages where they are raised.
EXTRAS = {
    "matplotlib": ("xpnet[plot]", "plots"),
    "onnx": ("xpnet[onnx]", "ONNX export"),
    "onnxruntime": ("xpnet[onnx]", "checking an ONNX export"),
    "torch": ("torch", "PyTorch interop"),
}


def hint(module: str, what: str | None = None) -> str:
    """``"<what>: <package> is not installed (pip install '<extra>')"``."""
    name = module.split(".")[0]
    extra, default_what = EXTRAS.get(name, (name, name))
    return f"{what or default_what}: {name} is not installed (pip install '{extra}')"


def require(module: str, what: str | None = None, error=ConfigError):
    """Import ``module`` or raise ``error`` (an XpnetError subclass) with its install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(hint(module, what)) from None
