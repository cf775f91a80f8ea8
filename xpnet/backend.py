"""The one module that knows about CuPy.

Everything else receives an array module ``xp`` (``numpy`` or ``cupy``) and writes
NumPy-style code once. CuPy is imported lazily, only when a GPU is asked for, so
``import xpnet`` and ``xpnet --help`` stay fast on machines without CUDA.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from xpnet.errors import ConfigError, DeviceError

DTYPES = {"float32": np.float32, "float64": np.float64}

_INSTALL_HINT = (
    "install CuPy for your driver's CUDA major (pip install 'xpnet[gpu]', the same as 'xpnet[gpu-cuda12]', "
    "or 'xpnet[gpu-cuda13]') and check that `nvidia-smi` sees a GPU"
)


@dataclass(frozen=True)
class Device:
    """A parsed device string: ``cpu``, ``gpu`` or ``gpu:N``."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"


def parse_device(device) -> Device:
    """Accept ``"cpu"``, ``"gpu"``, ``"gpu:1"``, ``"cuda"`` or a :class:`Device`."""
    if isinstance(device, Device):
        return device
    text = str(device).strip().lower()
    if text == "cpu":
        return Device("cpu")
    kind, _, index = text.partition(":")
    if kind in ("gpu", "cuda"):
        if index == "":
            return Device("gpu", 0)
        if index.isdigit():
            return Device("gpu", int(index))
    raise ConfigError(f"unknown device {device!r}: use 'cpu', 'gpu' or 'gpu:N'")


def resolve_dtype(dtype) -> np.dtype:
    """float32 (default) or float64; anything else is a ConfigError."""
    if dtype is None:
        return np.dtype(np.float32)
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}: use 'float32' or 'float64'")
    return np.dtype(DTYPES[name])


def _import_cupy():
    try:
        import cupy  # noqa: PLC0415 - lazy on purpose
    except ImportError as exc:
        raise DeviceError(f"--device gpu needs CuPy, which is not installed: {_INSTALL_HINT}") from exc
    except Exception as exc:  # broken CUDA libraries raise all sorts of things at import
        raise DeviceError(f"CuPy failed to import ({exc}); {_INSTALL_HINT}") from exc
    return cupy


def _cupy_device_count(cupy) -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cupy = _import_cupy()
    except DeviceError:
        return False
    return _cupy_device_count(cupy) > 0


def get_xp(device="cpu"):
    """The array module for ``device``: numpy for cpu, cupy (with the device selected) for gpu."""
    dev = parse_device(device)
    if not dev.is_gpu:
        return np
    cupy = _import_cupy()
    count = _cupy_device_count(cupy)
    if count == 0:
        raise DeviceError(f"--device gpu: CuPy is installed but sees no CUDA device; {_INSTALL_HINT}")
    if dev.index >= count:
        raise DeviceError(f"--device {dev}: only {count} CUDA device(s) visible (indices 0..{count - 1})")
    cupy.cuda.Device(dev.index).use()
    return cupy


def get_array_module(x):
    """numpy or cupy, whichever owns ``x`` (the CuPy/Chainer idiom), without importing CuPy."""
    if type(x).__module__.startswith("cupy"):
        import cupy  # noqa: PLC0415

        return cupy
    return np


def is_gpu_array(x) -> bool:
    return type(x).__module__.startswith("cupy")


def to_device(x, device="cpu", dtype=None):
    """Copy ``x`` onto ``device`` (optionally casting); a no-op when it is already there."""
    xp = get_xp(device)
    if dtype is not None:
        dtype = np.dtype(dtype)
    if xp is np:
        return to_numpy(x) if dtype is None else to_numpy(x).astype(dtype, copy=False)
    return xp.asarray(x, dtype=dtype)


def to_numpy(x):
    """A NumPy array from a NumPy or CuPy array (or anything array-like)."""
    if is_gpu_array(x):
        return x.get()
    return np.asarray(x)


def scalar(x) -> float:
    """A Python float from a 0-d array on either device (one host sync on GPU)."""
    return float(to_numpy(x))


def use_device(device):
    """A context that makes ``device`` current (CuPy) or does nothing (CPU)."""
    dev = parse_device(device)
    if not dev.is_gpu:
        return contextlib.nullcontext()
    return _import_cupy().cuda.Device(dev.index)


def device_name(device="cpu") -> str:
    """A human description for logs: the CPU model, or the GPU's name and memory."""
    dev = parse_device(device)
    if not dev.is_gpu:
        import platform  # noqa: PLC0415

        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        import os  # noqa: PLC0415

        return f"{name} ({os.cpu_count()} cores)"
    cupy = _import_cupy()
    props = cupy.cuda.runtime.getDeviceProperties(dev.index)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"{name} ({props['totalGlobalMem'] / 2**30:.0f} GiB)"


def gpu_info() -> dict | None:
    """Versions and devices of the CUDA stack, or None without CuPy/CUDA (for ``xpnet info``)."""
    try:
        cupy = _import_cupy()
    except DeviceError:
        return None
    info = {"cupy": cupy.__version__}
    try:
        info["nvrtc"] = ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion())
    except Exception as exc:  # libnvrtc missing: every kernel compile would fail
        info["nvrtc"] = f"not loadable ({type(exc).__name__}: {exc})"
    try:
        info["cuda_runtime"] = cuda_version(cupy.cuda.runtime.runtimeGetVersion())
        info["cuda_driver"] = cuda_version(cupy.cuda.runtime.driverGetVersion())
        info["devices"] = [device_name(f"gpu:{i}") for i in range(_cupy_device_count(cupy))]
        if not info["devices"]:  # say why --device gpu will fail (`xpnet info` prints it)
            no_driver = " (no NVIDIA driver: its version reads 0)" if info["cuda_driver"] == "0.0" else ""
            info["error"] = f"CuPy sees no CUDA device{no_driver}"
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def cuda_version(code: int) -> str:
    """CUDA's integer version (12040) as text ("12.4")."""
    code = int(code)
    return f"{code // 1000}.{code % 1000 // 10}"


def data_ptr(x) -> int:
    """The address of an array's first element, device or host (a CUDA graph bakes these in)."""
    return int(x.data.ptr) if is_gpu_array(x) else int(x.ctypes.data)


def synchronize(xp) -> None:
    """Wait for queued GPU work (a no-op on CPU); needed before reading a wall clock."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CuPy's out-of-memory errors, without importing CuPy."""
    return type(exc).__name__ in ("OutOfMemoryError", "CUDARuntimeError") and "memory" in str(exc).lower()


def take_rows(X, idx, out):
    """``out[:] = X[idx]`` without allocating: the mini-batch gather.

    NumPy's ``take`` with ``out=`` and the default ``mode='raise'`` buffers the whole result
    to check indices first (3x slower, measured); the trainer's indices come from a
    permutation, so ``'clip'`` is safe. CuPy's ``take`` has no ``mode`` and needs none.
    """
    if is_gpu_array(X):
        return X.take(idx, axis=0, out=out)
    return np.take(X, idx, axis=0, out=out, mode="clip")


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS has none (Windows): results record how busy
    the machine was without making any command POSIX-only."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
