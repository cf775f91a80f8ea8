"""Run the real ``kernels/*.cu`` on the CPU, through the real ``xpnet.ops.cuda`` wrappers.

CI has no GPU, so without this the kernels would only ever be compile-checked. Each ``.cu``
file is compiled by g++ after ``cuda_emulator.h`` (an emulation of CUDA's thread, block,
warp-shuffle and barrier model), together with one generated ``launch_<kernel>`` function per
``__global__`` entry point. :class:`Emulator` then stands in for the GPU under
:func:`install`: the wrappers check and launch exactly as they would on a device, with
NumPy arrays as device memory.

Every launch is checked more strictly than CuPy would: each argument must have the exact
type of the kernel parameter (a ``float`` where the kernel takes ``float`` rather than
``double``, an ``int32`` array for ``const int*``), and each array is copied into a buffer
with NaN-filled guard bytes on both sides, so an out-of-bounds write fails the launch and an
out-of-bounds read shows up as NaN in the result.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import threading
import types
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = Path(__file__).resolve().with_name("cuda_emulator.h")
GUARD = 4096  # bytes of 0xFF (NaN as float, -1 as int) before and after every array
GXX = shutil.which("g++")

_C_TYPES = {
    "float": (np.float32, ctypes.c_float),
    "double": (np.float64, ctypes.c_double),
    "int": (np.int32, ctypes.c_int32),
    "i64": (np.int64, ctypes.c_int64),
    "long long": (np.int64, ctypes.c_int64),
}


class EmulatorError(AssertionError):
    """A launch the emulator refused or a kernel fault it caught (out of bounds, bad sync)."""


@dataclass(frozen=True)
class Param:
    name: str
    base: str  # float / double / int / i64
    pointer: bool
    const: bool

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_C_TYPES[self.base][0])


def parse_kernels(source: str) -> dict[str, list[Param]]:
    """``{kernel name: parameters}`` of every ``__global__ void name(...)`` in ``source``."""
    kernels = {}
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", source):
        parsed = []
        for raw in (p.strip() for p in params.split(",") if p.strip()):
            m = re.fullmatch(r"(const\s+)?(float|double|int|i64|long long)\s*(\*?)\s*(\w+)", raw)
            if not m:
                raise EmulatorError(f"{name}: cannot emulate parameter {raw!r}")
            parsed.append(Param(m.group(4), m.group(2), bool(m.group(3)), bool(m.group(1))))
        kernels[name] = parsed
    return kernels


def _shim(cu: Path, kernels: dict[str, list[Param]]) -> str:
    lines = [f'#include "{HEADER}"', f'#include "{cu}"', ""]
    for name, params in kernels.items():
        decl = ", ".join(f"{'const ' if p.const else ''}{p.base}{'*' if p.pointer else ''} {p.name}" for p in params)
        args = ", ".join(p.name for p in params)
        lines += [
            f'extern "C" const char* launch_{name}(const unsigned* dims{", " if decl else ""}{decl}) {{',
            "    static std::string error;",
            f"    error = emu::launch(dims, [=] {{ {name}({args}); }});",
            "    return error.empty() ? nullptr : error.c_str();",
            "}",
        ]
    lines += [
        'extern "C" void emu_set_reverse(int on) { emu::reverse_order = on != 0; }',
        'extern "C" long long emu_switches() { return emu::switches; }',
    ]
    return "\n".join(lines) + "\n"


def kernel_defines(device_checks: bool = False) -> tuple[str, ...]:
    """The ``-D`` options ``xpnet.ops.cuda`` gives NVRTC (the launch constants' one source)."""
    from xpnet.ops import cuda

    return cuda.compile_defines(device_checks)


def compile_kernels(cu: Path, out_dir: Path, defines=None) -> tuple[ctypes.CDLL, dict[str, list[Param]]]:
    """Compile ``cu`` with the emulator into a shared library; returns it and the signatures.

    ``defines``: ``-D`` options, by default the ones NVRTC gets (:func:`kernel_defines`)."""
    if GXX is None:
        raise EmulatorError("g++ not found")
    defines = kernel_defines() if defines is None else tuple(defines)
    kernels = parse_kernels(cu.read_text(encoding="utf-8"))
    shim = out_dir / f"{cu.stem}_emu.cpp"
    lib = out_dir / f"{cu.stem}_emu.so"
    shim.write_text(_shim(cu.resolve(), kernels), encoding="utf-8")
    # -ffp-contract=off: no FMA contraction, as NVRTC's --fmad=false (ops/cuda.py); -fno-fast-math keeps NaN rules.
    cmd = [GXX, "-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", *defines,
           "-Wall", "-Wno-unused-function", "-o", str(lib), str(shim)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise EmulatorError(f"g++ could not compile {cu.name} for emulation:\n{proc.stderr}")
    dll = ctypes.CDLL(str(lib))
    for name, params in kernels.items():
        fn = getattr(dll, f"launch_{name}")
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.POINTER(ctypes.c_uint)] + [
            ctypes.c_void_p if p.pointer else _C_TYPES[p.base][1] for p in params
        ]
    dll.emu_set_reverse.argtypes = [ctypes.c_int]
    dll.emu_switches.restype = ctypes.c_longlong
    return dll, kernels


def _dims(grid, block) -> ctypes.Array:
    def three(v):
        v = tuple(int(x) for x in (v if isinstance(v, tuple) else (v,)))
        if not 1 <= len(v) <= 3:
            raise EmulatorError(f"launch dimension {v} must have 1 to 3 entries")
        return v + (1,) * (3 - len(v))

    return (ctypes.c_uint * 6)(*three(grid), *three(block))


class _Guarded:
    """An array's bytes between two NaN-filled guard zones; written back after the launch."""

    def __init__(self, array: np.ndarray, label: str):
        self.array, self.label = array, label
        self.buffer = np.full(array.nbytes + 2 * GUARD, 0xFF, np.uint8)
        self.buffer[GUARD:GUARD + array.nbytes] = array.reshape(-1).view(np.uint8)

    @property
    def pointer(self) -> int:
        return self.buffer.ctypes.data + GUARD

    def finish(self) -> None:
        head, tail = self.buffer[:GUARD], self.buffer[GUARD + self.array.nbytes:]
        if not (head == 0xFF).all() or not (tail == 0xFF).all():
            before = GUARD - int(np.flatnonzero(head != 0xFF)[0]) if (head != 0xFF).any() else 0
            after = int(np.flatnonzero(tail != 0xFF)[-1]) + 1 if (tail != 0xFF).any() else 0
            raise EmulatorError(f"{self.label}: out-of-bounds write ({before} bytes before, {after} bytes after the array)")
        self.array.reshape(-1).view(np.uint8)[...] = self.buffer[GUARD:GUARD + self.array.nbytes]


class EmulatedKernel:
    """Callable like ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, emulator: Emulator, filename: str, name: str):
        self.emulator, self.filename, self.name = emulator, filename, name
        self.params = emulator.signatures(filename)[name]

    def __call__(self, grid, block, args):
        if self.emulator.recording is not None:  # inside an emulated stream capture: record only
            weak = weak_args(args)
            self.emulator.recording.append(lambda: self._launch(grid, block, resolve_args(weak)))
            return
        self._launch(grid, block, args)

    def _launch(self, grid, block, args):
        if len(args) != len(self.params):
            raise EmulatorError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        guarded: dict[tuple[int, int], _Guarded] = {}
        converted = []
        for p, a in zip(self.params, args):
            label = f"{self.name}({p.name})"
            if p.pointer:
                if not isinstance(a, np.ndarray):
                    raise EmulatorError(f"{label}: expected an array for {p.base}*, got {type(a).__name__}")
                if a.dtype != p.dtype:
                    raise EmulatorError(f"{label}: array of {a.dtype} passed for {p.base}*")
                if not a.flags.c_contiguous:
                    raise EmulatorError(f"{label}: strided array passed to a kernel")
                key = (a.__array_interface__["data"][0], a.nbytes)
                for (start, size) in guarded:
                    if key != (start, size) and start < key[0] + key[1] and key[0] < start + size:
                        raise EmulatorError(f"{label}: partially overlaps another argument")
                if key not in guarded:  # the same array twice (dZ is Z) shares one guarded copy
                    guarded[key] = _Guarded(a, label)
                converted.append(guarded[key].pointer)
            else:
                if type(a) is not p.dtype.type:
                    raise EmulatorError(f"{label}: {type(a).__name__} passed for a {p.base} parameter")
                converted.append(a.item())
        lib = self.emulator.library(self.filename)
        with self.emulator.lock:
            lib.emu_set_reverse(int(self.emulator.reverse))
            error = getattr(lib, f"launch_{self.name}")(_dims(grid, block), *converted)
        if error:
            raise EmulatorError(f"{self.name}: {error.decode()}")
        for g in guarded.values():
            g.finish()
        self.emulator.launches.append(self.name)


class Emulator:
    """The emulated device: compiles each ``kernels/*.cu`` on first use, into ``out_dir``."""

    def __init__(self, kernels_dir: Path, out_dir: Path, reverse: bool = False, defines=None):
        self.kernels_dir, self.out_dir, self.reverse = Path(kernels_dir), Path(out_dir), reverse
        self.defines = kernel_defines() if defines is None else tuple(defines)
        self._libs: dict[str, tuple[ctypes.CDLL, dict]] = {}
        self.lock = threading.Lock()
        self.launches: list[str] = []
        self.recording: list | None = None  # set by FakeStream.begin_capture

    def library(self, filename: str) -> ctypes.CDLL:
        return self._load(filename)[0]

    def signatures(self, filename: str) -> dict[str, list[Param]]:
        return self._load(filename)[1]

    def _load(self, filename: str):
        with self.lock:
            if filename not in self._libs:
                self._libs[filename] = compile_kernels(self.kernels_dir / filename, self.out_dir, self.defines)
            return self._libs[filename]

    def build_all(self) -> None:
        """Compile every ``*.cu`` of the kernels folder now, in parallel (about 1 s each)."""
        from concurrent.futures import ThreadPoolExecutor

        files = sorted(p.name for p in self.kernels_dir.glob("*.cu"))
        with ThreadPoolExecutor(max_workers=len(files) or 1) as pool:
            built = list(pool.map(lambda f: compile_kernels(self.kernels_dir / f, self.out_dir, self.defines), files))
        with self.lock:
            self._libs.update(zip(files, built))

    def kernel(self, filename: str, name: str) -> EmulatedKernel:
        if name not in self.signatures(filename):
            raise KeyError(f"{name} is not a kernel of {filename}")
        return EmulatedKernel(self, filename, name)


# ---- an emulated CUDA-graph capture (for GraphTrainer's epoch loop) -------------------


class FreedMemoryError(EmulatorError):
    """A graph replay would touch memory freed since its capture (a use-after-free on a GPU)."""


class _WeakArray:
    """What a CUDA graph keeps of an array: its address, not a reference. Holds the array's
    memory owner weakly and rebuilds the same view at replay, or raises FreedMemoryError."""

    def __init__(self, a: np.ndarray):
        owner = a
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        self.ref = weakref.ref(owner)
        self.offset = a.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
        self.shape, self.strides, self.dtype = a.shape, a.strides, a.dtype

    def get(self) -> np.ndarray:
        owner = self.ref()
        if owner is None:
            raise FreedMemoryError(f"a graph replay writes through freed memory (a captured {self.dtype} array "
                                   f"of shape {self.shape} was released after the capture)")
        return np.ndarray(self.shape, self.dtype, buffer=owner, offset=self.offset, strides=self.strides)


def weak_args(args) -> tuple:
    """``args`` with every array replaced by a :class:`_WeakArray` (scalars kept)."""
    return tuple(_WeakArray(a) if isinstance(a, np.ndarray) else a for a in args)


def resolve_args(args) -> tuple:
    return tuple(a.get() if isinstance(a, _WeakArray) else a for a in args)


class HostArray(np.ndarray):
    """A NumPy array with the CuPy methods GraphTrainer's epoch loop calls on device buffers."""

    def set(self, array, stream=None):
        self[...] = array

    def get(self, stream=None):
        return np.array(self)


class FakeGraph:
    """The launches recorded during a capture; ``launch`` replays them in order."""

    def __init__(self, operations: list):
        self.operations = operations

    def launch(self, stream=None):
        for operation in self.operations:
            operation()


class FakeStream:
    """A stream whose capture records emulated kernel launches (and :class:`NumpyBlas` GEMMs)
    instead of running them, like ``cupy.cuda.Stream.begin_capture``. Anything else a
    captured step does (a NumPy operation, a host read) runs once at capture time and is
    missing from every replay, so a test comparing replays with eager steps catches it.
    Like a real graph, the recording holds its arrays' addresses only (weakly): a buffer freed
    after the capture, by the caller or because it was a temporary allocated during it, makes
    the next replay raise :class:`FreedMemoryError`, where a GPU would corrupt memory."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self):
        if self.emulator.recording is not None:
            raise RuntimeError("capture already in progress")
        self.emulator.recording = []

    def end_capture(self) -> FakeGraph:
        operations, self.emulator.recording = self.emulator.recording, None
        return FakeGraph(operations)

    def synchronize(self):
        pass


class NumpyBlas:
    """cuBLAS's row-major GEMM as GraphTrainer calls it, through xpnet's tested emulation;
    recorded, not run, during an emulated capture."""

    def __init__(self, emulator: Emulator | None = None):
        self.emulator = emulator

    def matmul_rowmajor(self, A, B, C, trans_a=False, trans_b=False):
        if self.emulator is not None and self.emulator.recording is not None:
            weak = weak_args((A, B, C))
            self.emulator.recording.append(
                lambda: emulate_matmul_rowmajor(*resolve_args(weak), trans_a=trans_a, trans_b=trans_b))
        else:
            emulate_matmul_rowmajor(A, B, C, trans_a=trans_a, trans_b=trans_b)

    def close(self):
        pass


def fake_cupy() -> types.SimpleNamespace:
    """The little of CuPy the wrappers touch besides kernels (scratch buffers, device id)."""
    runtime = types.SimpleNamespace(getDevice=lambda: -1)  # -1: never collides with a real device's caches
    return types.SimpleNamespace(empty=np.empty, zeros=np.zeros, cuda=types.SimpleNamespace(runtime=runtime))


def install(monkeypatch, emulator: Emulator) -> None:
    """Route ``xpnet.ops.cuda``'s launches to ``emulator``, with NumPy arrays as device memory."""
    from xpnet.ops import cuda

    monkeypatch.setattr(cuda, "_kernel", emulator.kernel)
    monkeypatch.setattr(cuda, "_is_device_array", lambda a: isinstance(a, np.ndarray))
    monkeypatch.setattr(cuda, "_import_cupy", fake_cupy)


# ---- cuBLAS's column-major GEMM in NumPy: checks xpnet.ops.cublas.gemm_args' mapping ----------


def _colmajor_view(flat: np.ndarray, rows: int, cols: int, ld: int) -> np.ndarray:
    """The (rows, cols) column-major matrix with leading dimension ``ld`` inside ``flat``."""
    item = flat.itemsize
    if rows and cols:
        assert (rows - 1) + (cols - 1) * ld < flat.size, "column-major view runs past the buffer"
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(item, ld * item))


def emulate_colmajor_gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc) -> None:
    """What ``cublas?gemm`` does, on flat 1-D buffers: ``C[:m, :n] = alpha op(A) op(B) + beta C``,
    every matrix column-major (element (i, j) of a matrix with leading dimension ld is ``buf[i + j*ld]``)."""
    from xpnet.ops.cublas import CUBLAS_OP_T

    a = _colmajor_view(A, *((k, m) if transa == CUBLAS_OP_T else (m, k)), lda)
    b = _colmajor_view(B, *((n, k) if transb == CUBLAS_OP_T else (k, n)), ldb)
    op_a = a.T if transa == CUBLAS_OP_T else a
    op_b = b.T if transb == CUBLAS_OP_T else b
    c = _colmajor_view(C, m, n, ldc)
    c[...] = alpha * (op_a @ op_b) + (beta * c if beta else 0)


def emulate_matmul_rowmajor(A: np.ndarray, B: np.ndarray, C: np.ndarray, trans_a=False, trans_b=False) -> None:
    """``Cublas.matmul_rowmajor`` with the GEMM done by :func:`emulate_colmajor_gemm` (same argument mapping)."""
    from xpnet.ops.cublas import gemm_args

    g = gemm_args(A.shape, B.shape, trans_a, trans_b)
    if C.shape != (g.n, g.m):
        raise EmulatorError(f"C has shape {C.shape}, expected {(g.n, g.m)}")
    emulate_colmajor_gemm(g.transa, g.transb, g.m, g.n, g.k, 1.0, B.reshape(-1), g.lda, A.reshape(-1), g.ldb, 0.0,
                          C.reshape(-1), g.ldc)
