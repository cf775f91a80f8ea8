"""Every optional dependency and its install hint, in one place (imported lazily, on first use).

``require("onnx", "ONNX export")`` returns the module or raises one typed error naming the pip
extra that brings it, so a missing package is one clear ``error:`` line in the CLI. The hints
below are the only place that knows which extra holds which package.
"""

from __future__ import annotations

import importlib

from xpnet.errors import ConfigError

# module -> (pip extra or command, what it is for by default)
EXTRAS = {
    "cupy": ("xpnet[gpu-cuda12] or xpnet[gpu-cuda13]", "--device gpu"),
    "nvmath": ("xpnet[gpu-cuda12] or xpnet[gpu-cuda13]", "the CUDA-graph training step (cuBLAS in a capture)"),
    "numba": ("xpnet[fast]", "the fused CPU kernels"),
    "PIL": ("xpnet[images]", "reading PNG/JPEG"),
    "matplotlib": ("xpnet[plot]", "plots"),
    "optuna": ("xpnet[tune]", "--method bayes and --storage"),
    "onnx": ("xpnet[onnx]", "ONNX export"),
    "onnxruntime": ("xpnet[onnx]", "checking an ONNX export"),
    "torch": ("torch", "PyTorch interop"),
    "sklearn": ("xpnet[bench]", "scikit-learn"),
    "jax": ("xpnet[bench]", "the JAX peer"),
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


def available(module: str) -> bool:
    """Whether ``module`` imports (without raising)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
