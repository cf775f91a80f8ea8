"""The GPU path's toolchain and API contract, checked on a machine without a GPU.

The CUDA code (kernels/*.cu through ``cupy.RawModule``, cuBLAS through ctypes, the CUDA-graph
trainer) only runs where there is a device, which CI and the developers' machines lack. What
can go wrong there without one is checked here, each part skipping with its reason when its
piece is missing (as on CI, which has none of CuPy, NVRTC or libcublas):

* NVRTC (libnvrtc via ctypes): every kernels/*.cu compiles exactly as ``ops/cuda.py::_module``
  hands it to ``cupy.RawModule`` (the text of ``kernel_source``, ``NVRTC_OPTIONS``, no include
  path) for sm_90 (H100/H200) and sm_80, warning-free, with every ``KERNEL_NAMES`` entry. Also
  with the options CuPy 14 adds itself (``-ftz=true``, ``--device-as-default-execution-space``,
  ``-arch=sm_XX``, producing a cubin), and through CuPy's own NVRTC binding when CuPy imports.
* CuPy: every ``xp.*`` / ``cupy.*`` call in ``xpnet/`` (found by walking the AST) and the
  methods the GPU path calls on CuPy objects exist in the installed CuPy and accept the
  positional/keyword arguments used. CuPy's Cython functions carry their signature in the first
  line of ``__doc__`` (``embedsignature``); that is parsed when ``inspect.signature`` fails.
* cuBLAS: ``ops/cublas.py`` finds and loads the ``nvidia-cublas`` wheel's library (what CuPy
  itself uses), every symbol it declares exists, its ctypes prototypes and enum constants match
  ``cublas_api.h`` (wherever a CUDA toolkit or the wheel put it), and ``Cublas.gemm`` marshals
  its arguments through those prototypes (checked with ctypes callbacks, no library needed).
  Nothing here calls ``cublasCreate``: that needs a driver.
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import glob
import inspect
import io
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_synthetic_idx

from xpnet.backend import _cupy_device_count
from xpnet.ops import cublas, cuda

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "xpnet"
ARCHS = ("90", "80")  # H100/H200, A100

# ---- finding NVIDIA's libraries and headers -------------------------------------------


def _wheel_dirs(sub: str) -> list[str]:
    """``nvidia/*/<sub>`` folders of pip wheels (nvidia/cu13/lib, nvidia/cuda_nvrtc/lib, ...)."""
    found = []
    for base in sys.path:
        if base and os.path.isdir(os.path.join(base, "nvidia")):
            found += sorted(glob.glob(os.path.join(base, "nvidia", "*", sub)))
    return list(dict.fromkeys(found))


def _toolkit_dirs(sub: str) -> list[str]:
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    roots += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    return [os.path.join(r, sub) for r in dict.fromkeys(r for r in roots if r) if os.path.isdir(os.path.join(r, sub))]


def _nvrtc_candidates() -> list[str]:
    out = []
    for folder in _wheel_dirs("lib") + _toolkit_dirs("lib64") + _toolkit_dirs("lib"):
        out += sorted(p for p in glob.glob(os.path.join(folder, "libnvrtc.so*")) if ".alt." not in p)
    found = ctypes.util.find_library("nvrtc")
    if found:
        out.append(found)
    return list(dict.fromkeys(out))


def _header(name: str) -> Path | None:
    """``name`` from a CUDA toolkit's include folder or an nvidia wheel's (cublas_api.h ships with nvidia-cublas)."""
    for folder in _toolkit_dirs("include") + _wheel_dirs("include"):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def _xpnet_sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


# ---- NVRTC through ctypes -----------------------------------------------------------


class Nvrtc:
    """The few libnvrtc entry points a compile needs (the NVRTC C API, via ctypes)."""

    def __init__(self, path: str):
        # libnvrtc dlopens libnvrtc-builtins by soname at compile time; a wheel's folder is not on
        # the loader's path, so map it first (CuPy's cuda-pathfinder does the same).
        for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))):
            if ".alt." not in builtins:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(path)
        vp, cp, sz, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
        for name, argtypes in {
            "nvrtcVersion": [ctypes.POINTER(ci), ctypes.POINTER(ci)],
            "nvrtcGetNumSupportedArchs": [ctypes.POINTER(ci)],
            "nvrtcGetSupportedArchs": [ctypes.POINTER(ci)],
            "nvrtcCreateProgram": [ctypes.POINTER(vp), cp, cp, ci, ctypes.POINTER(cp), ctypes.POINTER(cp)],
            "nvrtcCompileProgram": [vp, ci, ctypes.POINTER(cp)],
            "nvrtcGetProgramLogSize": [vp, ctypes.POINTER(sz)],
            "nvrtcGetProgramLog": [vp, cp],
            "nvrtcGetPTXSize": [vp, ctypes.POINTER(sz)],
            "nvrtcGetPTX": [vp, cp],
            "nvrtcGetCUBINSize": [vp, ctypes.POINTER(sz)],
            "nvrtcGetCUBIN": [vp, cp],
            "nvrtcDestroyProgram": [ctypes.POINTER(vp)],
        }.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ci
        lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [ci], cp
        self.lib, self.path = lib, path

    @property
    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    @property
    def archs(self) -> set[str]:
        n = ctypes.c_int()
        self._ok(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        arr = (ctypes.c_int * n.value)()
        self._ok(self.lib.nvrtcGetSupportedArchs(arr), "nvrtcGetSupportedArchs")
        return {str(a) for a in arr}

    def _ok(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(status).decode()} ({status})")

    def _blob(self, prog, size_fn, get_fn) -> bytes:
        size = ctypes.c_size_t()
        self._ok(size_fn(prog, ctypes.byref(size)), size_fn.__name__)
        buf = ctypes.create_string_buffer(size.value)
        self._ok(get_fn(prog, buf), get_fn.__name__)
        return buf.raw[: size.value]

    def compile(self, source: str, name: str, options) -> types.SimpleNamespace:
        """Compile like ``nvrtcCreateProgram(src, name, 0 headers)`` + ``nvrtcCompileProgram(options)``."""
        prog = ctypes.c_void_p()
        self._ok(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None), "nvrtcCreateProgram")
        try:
            opts = [o.encode() for o in options]
            status = self.lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            log = self._blob(prog, self.lib.nvrtcGetProgramLogSize, self.lib.nvrtcGetProgramLog).rstrip(b"\0").decode()
            ptx = cubin = None
            if status == 0:
                ptx = self._blob(prog, self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX).rstrip(b"\0").decode()
                if any(o.startswith(("-arch=sm_", "--gpu-architecture=sm_")) for o in options):
                    cubin = self._blob(prog, self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN)
            return types.SimpleNamespace(status=status, error=self.lib.nvrtcGetErrorString(status).decode(), log=log, ptx=ptx, cubin=cubin, options=tuple(options))
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.fixture(scope="module")
def nvrtc() -> Nvrtc:
    tried = []
    for cand in _nvrtc_candidates():
        try:
            lib = Nvrtc(cand)
            lib.version  # noqa: B018 - a library that loads but cannot answer is no use
            return lib
        except (OSError, AttributeError, RuntimeError) as exc:
            tried.append(f"{cand}: {exc}")
    pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc, or a CUDA toolkit with NVRTC)" + (f"; tried {tried}" if tried else ""))


# CuPy 14 compiles a RawModule's code with the caller's options plus these (cupy/cuda/compiler.py:
# _compile_with_cache_cuda adds -ftz=true, _compile_using_nvrtc_no_warning the -arch and
# --device-as-default-execution-space; -arch=sm_XX, i.e. a cubin, for any arch NVRTC supports).
# test_cupy_still_adds_the_mirrored_options checks the installed CuPy still does.
def _cupy_like_options(arch: str) -> tuple[str, ...]:
    return (*cuda.NVRTC_OPTIONS, "-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")


@pytest.fixture(scope="module")
def compiled(nvrtc) -> dict:
    """Every kernel file compiled for every arch, two ways: with ``NVRTC_OPTIONS`` alone (PTX) and
    as CuPy would (cubin). Serial: about 0.1 s a compile, so a thread pool would save little."""
    out = {}
    for filename in sorted(cuda.KERNEL_NAMES):
        source = cuda.kernel_source(filename)
        for arch in ARCHS:
            if arch not in nvrtc.archs:
                continue
            out[filename, arch, "ptx"] = nvrtc.compile(source, filename, (*cuda.NVRTC_OPTIONS, f"--gpu-architecture=compute_{arch}"))
            out[filename, arch, "cupy"] = nvrtc.compile(source, filename, _cupy_like_options(arch))
    return out


def _result(compiled, nvrtc, filename, arch, how):
    if (filename, arch, how) not in compiled:
        pytest.skip(f"NVRTC {nvrtc.version} at {nvrtc.path} does not support sm_{arch} (supports {sorted(nvrtc.archs, key=int)})")
    return compiled[filename, arch, how]


def _assert_clean(res, filename) -> None:
    assert res.status == 0, f"NVRTC {' '.join(res.options)} failed on {filename}: {res.error}\n{res.log}"
    assert "warning" not in res.log.lower(), f"NVRTC warnings for {filename} ({' '.join(res.options)}):\n{res.log}"


def _ptx_entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


def test_nvrtc_supports_the_target_archs(nvrtc):
    major, _ = nvrtc.version
    assert major >= 12, f"NVRTC {nvrtc.version} ({nvrtc.path}) is older than CUDA 12"
    assert set(ARCHS) <= nvrtc.archs, f"NVRTC {nvrtc.version} supports {sorted(nvrtc.archs, key=int)}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(cuda.KERNEL_NAMES))
def test_nvrtc_compiles_kernel_file(compiled, nvrtc, filename, arch):
    """The text and options RawModule gets, --gpu-architecture=compute_XX: clean PTX with every entry."""
    res = _result(compiled, nvrtc, filename, arch, "ptx")
    _assert_clean(res, filename)
    missing = set(cuda.KERNEL_NAMES[filename]) - _ptx_entries(res.ptx)
    assert not missing, f"{filename} (compute_{arch}): kernels {sorted(missing)} not in NVRTC's PTX"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(cuda.KERNEL_NAMES))
def test_nvrtc_compiles_kernel_file_with_cupys_options(compiled, nvrtc, filename, arch):
    """As CuPy 14 really compiles it on that GPU: extra options, a cubin (ELF) holding every kernel."""
    res = _result(compiled, nvrtc, filename, arch, "cupy")
    _assert_clean(res, filename)
    assert res.cubin and res.cubin[:4] == b"\x7fELF", f"{filename}: NVRTC gave no sm_{arch} cubin"
    missing = {k for k in cuda.KERNEL_NAMES[filename] if b".text." + k.encode() + b"\0" not in res.cubin}
    assert not missing, f"{filename} (sm_{arch}): kernels {sorted(missing)} not in the cubin"


# ---- CuPy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cp():
    try:
        import cupy
    except Exception as exc:  # ImportError, or broken CUDA libraries
        pytest.skip(f"CuPy does not import ({type(exc).__name__}: {exc})")
    return cupy


def test_cupy_still_adds_the_mirrored_options(cp):
    """What test_nvrtc_compiles_kernel_file_with_cupys_options assumes about CuPy's compiler."""
    source = inspect.getsource(cp.cuda.compiler)
    for option in ("'-ftz=true'", "'--device-as-default-execution-space'", "f'-arch=sm_{arch}'"):
        assert option in source, f"cupy/cuda/compiler.py no longer adds {option}: update _cupy_like_options"


@pytest.mark.parametrize("filename", sorted(cuda.KERNEL_NAMES))
def test_cupy_nvrtc_binding_compiles_kernel_file(cp, filename):
    """CuPy's own NVRTC binding and libnvrtc (loaded by CuPy) compile each file for sm_90.

    ``compiler.compile_using_nvrtc(source, options=(), arch=None, ...)`` needs a device even
    with ``arch`` given (it memoizes the -arch choice per device, calling cudaGetDevice), so
    without one this goes one level down to the ``_NVRTCProgram`` it wraps, with the options
    that function would add."""
    from cupy.cuda import compiler

    source, log = cuda.kernel_source(filename), io.StringIO()
    if _cupy_device_count(cp):
        result, _ = compiler.compile_using_nvrtc(source, options=cuda.NVRTC_OPTIONS, arch="90", filename=filename, log_stream=log)
    else:
        if not hasattr(compiler, "_NVRTCProgram"):
            pytest.skip("no device, and this CuPy has no cupy.cuda.compiler._NVRTCProgram to compile without one")
        options = (*cuda.NVRTC_OPTIONS, "-ftz=true", "-arch=compute_90", "--device-as-default-execution-space")
        result, _ = compiler._NVRTCProgram(source, filename, method="ptx").compile(options, log_stream=log)
    assert "warning" not in log.getvalue().lower(), log.getvalue()
    text = result.decode("latin-1") if isinstance(result, bytes) else result
    if text.startswith("\x7fELF"):
        found = {k for k in cuda.KERNEL_NAMES[filename] if f".text.{k}\0" in text}
    else:
        found = _ptx_entries(text)
    missing = set(cuda.KERNEL_NAMES[filename]) - found
    assert not missing, f"{filename}: kernels {sorted(missing)} missing from CuPy's NVRTC output"


def test_rawmodule_options_are_a_tuple_of_str():
    # RawModule(..., tuple options=()) is typed in Cython: a list raises TypeError at the first launch.
    assert isinstance(cuda.NVRTC_OPTIONS, tuple) and all(isinstance(o, str) for o in cuda.NVRTC_OPTIONS)
    assert not any(o.startswith(("-I", "--include-path")) for o in cuda.NVRTC_OPTIONS)


# -- signatures -----------------------------------------------------------------------

class _Any:
    def __repr__(self) -> str:
        return "…"


_ANY = _Any()  # stands for any argument and any default
_P = inspect.Parameter


def _split_params(text: str) -> list[str]:
    """Split a parameter list at top-level commas (defaults may hold brackets or quoted commas)."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def _doc_signature(obj) -> inspect.Signature | None:
    """The signature Cython's ``embedsignature`` put in the first line of ``__doc__``.

    ``RawModule(str code=None, *, str path=None, tuple options=(), ...)`` → (code=, *, path=, options=, ...):
    C types before a name are dropped; ``\\*`` (escaped for Sphinx in ufunc docs) is ``*``.
    """
    first = (getattr(obj, "__doc__", None) or "").strip().split("\n", 1)[0].replace("\\*", "*")
    m = re.match(r"^[\w.]+\((.*)\)\s*(->.*)?$", first)
    if not m:
        return None
    params, kind = [], _P.POSITIONAL_OR_KEYWORD
    for raw in _split_params(m.group(1)):
        if raw == "/":
            params = [p.replace(kind=_P.POSITIONAL_ONLY) for p in params]
        elif raw == "*":
            kind = _P.KEYWORD_ONLY
        elif raw.startswith("**"):
            params.append(_P(raw[2:].split()[-1], _P.VAR_KEYWORD))
        elif raw.startswith("*"):
            params.append(_P(raw[1:].split()[-1], _P.VAR_POSITIONAL))
            kind = _P.KEYWORD_ONLY
        else:
            decl, eq, _ = raw.partition("=")
            params.append(_P(decl.split()[-1], kind, default=_ANY if eq else _P.empty))
    return inspect.Signature(params)


def _signature(obj) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return _doc_signature(obj)


def _assert_accepts(obj, what: str, n_args: int, keywords, *, bound: bool, where: str = "") -> None:
    """``obj`` can be called with ``n_args`` positionals and these keywords (``bound``: via an instance)."""
    assert callable(obj), f"{what} is not callable in this CuPy ({where})"
    sig = _signature(obj)
    if sig is None:
        pytest.skip(f"{what}: exists, but its signature cannot be introspected (no __text_signature__ nor embedded doc line)")
    args = [_ANY] * n_args
    if bound and sig.parameters and next(iter(sig.parameters)) == "self":
        args.insert(0, _ANY)
    try:
        sig.bind(*args, **dict.fromkeys(keywords, _ANY))
    except TypeError as exc:
        pytest.fail(f"{what}: CuPy's signature {sig} does not accept {n_args} positional argument(s) "
                    f"and keywords {sorted(keywords)} ({exc}); used at {where}")


# -- every xp.* / cupy.* call and attribute in xpnet/, from the AST ------------------

_ROOTS = ("xp", "cupy")


def _chain(node) -> list[str] | None:
    """``a.b(...).c`` → ['a', 'b', '()', 'c']; None for anything not rooted at a plain name."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return None


def _cupy_path(chain: list[str]) -> list[str] | None:
    """The part of ``chain`` after the CuPy module: ``xp.``, ``self.xp.``, ``cupy.``, ``_import_cupy().``."""
    if chain[:2] == ["_import_cupy", "()"]:
        return chain[2:]
    for i, part in enumerate(chain):
        if part == "()":
            return None
        if part in _ROOTS:
            return chain[i + 1 :]
    return None


def _scan_cupy_uses():
    """{(path tuple, kind, n_args, keywords): [file:line, ...]} for every CuPy call/attribute in xpnet/."""
    uses: dict = {}
    for path, text in _xpnet_sources().items():
        tree = ast.parse(text)
        funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                chain = _chain(node.func)
                rest = _cupy_path(chain) if chain else None
                if not rest:
                    continue
                if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                    continue  # *args / **kwargs: nothing to bind
                key = (tuple(rest), "call", len(node.args), tuple(sorted(k.arg for k in node.keywords)))
                uses.setdefault(key, []).append(where)
            elif isinstance(node, ast.Attribute) and id(node) not in funcs:
                chain = _chain(node)
                rest = _cupy_path(chain) if chain else None
                if rest and "()" not in rest:
                    uses.setdefault((tuple(rest), "attr", 0, ()), []).append(where)
    # ``xp.cuda.Stream(...)`` also lists ``xp.cuda``: drop attributes that are the start of a longer use
    paths = {k[0] for k in uses}
    return {k: v for k, v in sorted(uses.items()) if k[1] == "call" or not any(o[: len(k[0])] == k[0] and o != k[0] for o in paths)}


CUPY_USES = _scan_cupy_uses()


def _use_id(key) -> str:
    path, kind, n_args, keywords = key
    name = "cupy." + ".".join(path).replace(".()", "()")
    if kind == "attr":
        return name
    return f"{name}({', '.join(['_'] * n_args + [k + '=' for k in keywords])})"


def test_scan_finds_the_gpu_path_calls():
    """The scan sees what it must (a guard against it silently finding nothing)."""
    names = {_use_id(k).split("(")[0] for k in CUPY_USES}
    for expected in ("cupy.RawModule", "cupy.cuda.Stream", "cupy.cuda.runtime.getDeviceCount", "cupy.matmul", "cupy.empty"):
        assert expected in names, f"{expected} not found by the AST scan of xpnet/ (found {sorted(names)})"


def _returns(cupy, obj, dotted: str):
    """What calling ``obj`` (reached as cupy.<dotted>) returns, as the class to look attributes up on."""
    if isinstance(obj, type):
        return obj
    if dotted == "cuda.get_current_stream":
        return cupy.cuda.Stream
    if isinstance(obj, cupy.ufunc) or dotted in ("asarray", "empty", "zeros", "ones", "arange"):
        return cupy.ndarray
    return None


@pytest.mark.parametrize("key", list(CUPY_USES), ids=_use_id)
def test_cupy_has_what_xpnet_uses(cp, key):
    path, kind, n_args, keywords = key
    where = ", ".join(CUPY_USES[key][:3])
    obj, via_instance, done = cp, False, []
    for part in path:
        if part == "()":
            cls = _returns(cp, obj, ".".join(done))
            if cls is None:
                pytest.skip(f"cupy.{'.'.join(done)}() returns something this test cannot type; used at {where}")
            obj, via_instance = cls, True
        else:
            name = "cupy." + ".".join(done + [part]).replace(".()", "()")
            assert hasattr(obj, part), f"{name} does not exist in CuPy {cp.__version__} (used at {where})"
            obj, via_instance = getattr(obj, part), via_instance and not isinstance(getattr(obj, part), type)
        done.append(part)
    if kind == "call":
        _assert_accepts(obj, _use_id(key), n_args, keywords, bound=via_instance, where=where)


# -- methods and attributes the GPU path uses on CuPy objects (not reachable from the AST) ----
# (what, regex that finds the use in xpnet/, attribute path on cupy, positional count, keywords)
METHOD_USES = [
    ("RawModule.get_function(name)", r"\.get_function\(\w+\)", "RawModule.get_function", 1, ()),
    ("RawKernel(grid, block, args) launch", r"_kernel\([^()]*\)\(", "RawKernel.__call__", 3, ()),
    ("Stream.begin_capture()", r"\.begin_capture\(\)", "cuda.Stream.begin_capture", 0, ()),
    ("Stream.end_capture()", r"\.end_capture\(\)", "cuda.Stream.end_capture", 0, ()),
    ("Stream.synchronize()", r"stream\.synchronize\(\)", "cuda.Stream.synchronize", 0, ()),
    ("Graph.launch(stream)", r"graph\.launch\(\w", "cuda.Graph.launch", 1, ()),
    ("ndarray.set(arr, stream=)", r"\.set\(\S+, stream=", "ndarray.set", 1, ("stream",)),
    ("ndarray.get()", r"\.get\(\)", "ndarray.get", 0, ()),
    ("ndarray.fill(value)", r"\.fill\(", "ndarray.fill", 1, ()),
    ("ndarray.take(idx, axis=, out=)", r"\.take\(idx, axis=0, out=out\)", "ndarray.take", 1, ("axis", "out")),
    ("ndarray.sum(axis=, out=)", r"\.sum\(axis=0, out=", "ndarray.sum", 0, ("axis", "out")),
    ("ndarray.sum(axis=, keepdims=)", r"\.sum\(axis=1, keepdims=True\)", "ndarray.sum", 0, ("axis", "keepdims")),
    ("ndarray.sum(dtype=)", r"\.sum\(dtype=", "ndarray.sum", 0, ("dtype",)),
    ("ndarray.argmax(axis=)", r"\.argmax\(axis=1\)", "ndarray.argmax", 0, ("axis",)),
    ("ndarray.astype(dtype, copy=)", r"\.astype\([^()]*copy=False\)", "ndarray.astype", 1, ("copy",)),
    ("ndarray.reshape(-1)", r"\.reshape\(-1\)", "ndarray.reshape", 1, ()),
    ("random.Generator.random(out=, dtype=)", r"rng\.random\(out=\w+, dtype=", "random.Generator.random", 0, ("out", "dtype")),
]


@pytest.mark.parametrize("what, pattern, attr, n_args, keywords", METHOD_USES, ids=[m[0] for m in METHOD_USES])
def test_cupy_methods_xpnet_calls(cp, what, pattern, attr, n_args, keywords):
    text = "\n".join(_xpnet_sources().values())
    if not re.search(pattern, text):
        pytest.skip(f"xpnet/ no longer uses {what}")
    obj = cp
    for part in attr.split("."):
        assert hasattr(obj, part), f"cupy.{attr} does not exist in CuPy {cp.__version__} (xpnet/ uses {what})"
        obj = getattr(obj, part)
    _assert_accepts(obj, f"cupy.{attr}", n_args, keywords, bound=True, where=f"/{pattern}/ in xpnet/")


def test_cupy_attributes_the_gpu_path_reads(cp):
    # Stream.ptr (cublasSetStream), ndarray.data.ptr / .nbytes / .flags.c_contiguous (cuBLAS and kernel
    # arguments), streams and devices as context managers (``with stream:``, backend.use_device).
    assert isinstance(cp.cuda.Stream.null.ptr, int)  # the null stream exists without a device
    assert cp.cuda.Stream.end_capture.__doc__ and "Graph" in cp.cuda.Stream.end_capture.__doc__
    for cls, name in ((cp.ndarray, "data"), (cp.ndarray, "nbytes"), (cp.ndarray, "flags"), (cp.cuda.MemoryPointer, "ptr"),
                      (cp.cuda.Stream, "__enter__"), (cp.cuda.Stream, "__exit__"),
                      (cp.cuda.Device, "__enter__"), (cp.cuda.Device, "__exit__"), (cp.cuda.Device, "use")):
        assert hasattr(cls, name), f"{cls.__module__}.{cls.__name__}.{name} is gone"
    assert hasattr(cp._core.flags.Flags, "c_contiguous")
    # backend.get_array_module / is_gpu_array / ops.cuda._on_device tell CuPy arrays by their type's module.
    assert cp.ndarray.__module__.startswith("cupy")
    assert cp.random.Generator.__module__.startswith("cupy")


def test_cupy_errors_are_recognised(cp):
    """backend.is_out_of_memory and the CLI's one-line OOM message match CuPy's real exceptions."""
    from xpnet.backend import is_out_of_memory

    oom = cp.cuda.memory.OutOfMemoryError(1 << 30, 0, 0)
    assert type(oom).__name__ == "OutOfMemoryError" and is_out_of_memory(oom), str(oom)
    alloc, invalid = cp.cuda.runtime.CUDARuntimeError(2), cp.cuda.runtime.CUDARuntimeError(1)  # cudaError_t values
    assert str(alloc).startswith("cudaErrorMemoryAllocation") and is_out_of_memory(alloc), str(alloc)
    assert str(invalid).startswith("cudaErrorInvalidValue") and not is_out_of_memory(invalid), str(invalid)


def test_backend_says_no_cuda_device(cp, tmp_path, capsys):
    """CuPy installed, no device: a DeviceError naming the problem, and one CLI ``error:`` line."""
    if _cupy_device_count(cp):
        pytest.skip("a CUDA device is visible")
    from xpnet import backend
    from xpnet.errors import DeviceError
    from xpnet.train_graph import capture_supported

    assert backend.gpu_available() is False
    with pytest.raises(DeviceError, match="CuPy is installed but sees no CUDA device"):
        backend.get_xp("gpu")
    info = backend.gpu_info()
    assert info["cupy"] == cp.__version__ and info["devices"] == [] and "no CUDA device" in info["error"]
    assert capture_supported() == (False, "no CuPy or no CUDA device")
    data = write_synthetic_idx(tmp_path / "data", n_train=40, n_test=10)
    code, _, err = run_cli(["train", "--data-dir", data, "--device", "gpu", "--epochs", "1", "--out", tmp_path / "m.npz"], capsys)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and "no CUDA device" in lines[0], err


# ---- cuBLAS through ctypes ------------------------------------------------------------


def _declared() -> dict[str, types.SimpleNamespace]:
    """The ctypes prototypes ``cublas._declare`` sets, captured on a stand-in library."""

    class Recorder:
        def __init__(self):
            self.fns = {}

        def __getattr__(self, name):
            return self.fns.setdefault(name, types.SimpleNamespace())

    rec = Recorder()
    cublas._declare(rec)
    assert rec.fns, "cublas._declare declared nothing"
    return rec.fns


@pytest.fixture(scope="module")
def cublas_header() -> str:
    path = _header("cublas_api.h")
    if path is None:
        pytest.skip("cublas_api.h not found (in a CUDA toolkit's include/ with cuBLAS, or the nvidia-cublas wheel's)")
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", path.read_text(encoding="utf-8", errors="replace"), flags=re.S)


def _enum_values(text: str) -> dict[str, int]:
    values = {}
    for body in re.findall(r"typedef\s+enum\s*\w*\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"\b(\w+)\s*=\s*(-?(?:0x[0-9a-fA-F]+|\d+))\b", body):
            values.setdefault(name, int(value, 0))
    return values


def test_cublas_constants_match_the_headers(cublas_header):
    """Every CUBLAS_*/CUDA_* int constant and status code in ops/cublas.py has the header's value."""
    values = _enum_values(cublas_header)
    lib_types = _header("library_types.h")
    if lib_types is not None:
        values.update(_enum_values(lib_types.read_text(encoding="utf-8", errors="replace")))
    constants = {n: v for n, v in vars(cublas).items() if re.fullmatch(r"(CUBLAS|CUDA)_[A-Z0-9_]+", n) and isinstance(v, int)}
    constants.update({name: code for code, name in cublas._STATUS.items()})
    assert {"CUBLAS_OP_N", "CUBLAS_OP_T", "CUBLAS_DEFAULT_MATH", "CUBLAS_POINTER_MODE_HOST"} <= set(constants)
    unknown = sorted(set(constants) - set(values))
    assert not unknown, f"not in the CUDA headers: {unknown}"
    wrong = {n: (v, values[n]) for n, v in constants.items() if values[n] != v}
    assert not wrong, f"ops/cublas.py value vs header value: {wrong}"
    # _STATUS covers every status the header defines, so no error shows as a bare number
    header_status = {n for n in values if n.startswith("CUBLAS_STATUS_")}
    assert header_status <= set(cublas._STATUS.values()), sorted(header_status - set(cublas._STATUS.values()))


def _c_kind(ctype_text: str, enums: set[str]) -> str:
    t = re.sub(r"\b(const|CUBLASWINAPI|CUBLASAPI)\b", " ", ctype_text).strip()
    if "*" in t or t.split()[0] in ("cublasHandle_t", "cudaStream_t"):
        return "pointer"  # opaque handles are pointers
    base = t.split()[0]
    if base == "size_t":
        return "size_t"
    if base == "int64_t":
        return "int64"
    if base in ("int", "int32_t") or base in enums:
        return "int"
    return base


def _ctypes_kind(ct) -> str:
    if ct is ctypes.c_void_p or ct is ctypes.c_char_p or (isinstance(ct, type) and issubclass(ct, ctypes._Pointer)):
        return "pointer"
    return {ctypes.c_int: "int", ctypes.c_size_t: "size_t", ctypes.c_int64: "int64"}.get(ct, ct.__name__)


def test_cublas_prototypes_match_the_header(cublas_header):
    """Each function ``_declare`` types has the header's arity and argument kinds, and returns cublasStatus_t."""
    protos = {
        name: [p.strip() for p in params.split(",") if p.strip() and p.strip() != "void"]
        for ret, name, params in re.findall(r"\b(\w+)\s+CUBLASWINAPI\s+(\w+)\s*\(([^;{]*?)\)\s*;", cublas_header, flags=re.S)
        if ret == "cublasStatus_t"
    }
    enums = set(re.findall(r"typedef\s+enum\s*\w*\s*\{.*?\}\s*(\w+)\s*;", cublas_header, flags=re.S))
    enums |= {"cudaDataType", "cudaDataType_t", "cublasComputeType_t"}
    for name, fn in _declared().items():
        assert name in protos, f"{name} is not declared in cublas_api.h"
        header = [_c_kind(re.sub(r"\s*\b\w+\s*$", "", p) if "*" not in p.split()[-1] else p, enums) for p in protos[name]]
        declared = [_ctypes_kind(t) for t in fn.argtypes]
        assert declared == header, f"{name}: ctypes {declared} vs cublas_api.h {header} ({protos[name]})"
        assert fn.restype is ctypes.c_int, f"{name} must return c_int (cublasStatus_t)"


def test_gemm_marshals_through_the_declared_prototypes():
    """``Cublas.gemm``/``matmul_rowmajor``/``version``/``close`` called through C callbacks typed
    by ``_declare``: the values that arrive are the cuBLAS arguments ``gemm_args`` promises,
    alpha/beta point at a float of the GEMM's type, and the handle is passed as is. No library."""
    calls, keep = [], []

    def stub(name, argtypes):
        def impl(*args):
            calls.append((name, args))
            if name == "cublasGetVersion_v2":
                args[1].contents.value = 130100  # POINTER(c_int) arrives as a pointer object
            if name in ("cublasSgemm_v2", "cublasDgemm_v2"):  # read the host scalars while they live
                scal = ctypes.c_float if name == "cublasSgemm_v2" else ctypes.c_double
                calls[-1] = (name, args, scal.from_address(args[6]).value, scal.from_address(args[11]).value)
            return 0

        fn = ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)(impl)
        keep.append(fn)
        return fn

    lib = types.SimpleNamespace(**{name: stub(name, fn.argtypes) for name, fn in _declared().items()})
    cublas._declare(lib)
    blas = cublas.Cublas.__new__(cublas.Cublas)
    blas._lib, blas._handle = lib, ctypes.c_void_p(0xABC0)

    def dev(shape, dtype, ptr):
        return types.SimpleNamespace(shape=shape, ndim=len(shape), dtype=np.dtype(dtype), data=types.SimpleNamespace(ptr=ptr),
                                     flags=types.SimpleNamespace(c_contiguous=True))

    for dtype, name in ((np.float32, "cublasSgemm_v2"), (np.float64, "cublasDgemm_v2")):
        A, W, Z = dev((64, 784), dtype, 0x1000), dev((256, 784), dtype, 0x2000), dev((64, 256), dtype, 0x3000)
        calls.clear()
        blas.matmul_rowmajor(A, W, Z, trans_b=True, alpha=0.5, beta=0.25)  # Z = A @ W.T, as in GraphTrainer._step
        g = cublas.gemm_args(A.shape, W.shape, trans_b=True)
        ((got, args, alpha, beta),) = calls
        assert got == name
        assert args == (0xABC0, g.transa, g.transb, g.m, g.n, g.k, args[6], 0x2000, g.lda, 0x1000, g.ldb, args[11], 0x3000, g.ldc)
        assert (alpha, beta) == (0.5, 0.25)
    assert blas.version == 130100
    blas.close()
    assert calls[-1] == ("cublasDestroy_v2", (0xABC0,)) and blas._handle is None


# -- the real library (the nvidia-cublas wheel, a CuPy 14 dependency) --------------------


def _wheel_cublas() -> list[str]:
    return [p for d in _wheel_dirs("lib") for p in sorted(glob.glob(os.path.join(d, "libcublas.so*"))) if "libcublasLt" not in p]


@pytest.fixture
def libcublas(monkeypatch):
    monkeypatch.setattr(cublas, "_LIB", None)  # find it afresh; restored after the test
    try:
        return cublas.find_library()
    except Exception as exc:
        pytest.skip(f"libcublas not loadable (pip install nvidia-cublas, or a CUDA toolkit): {str(exc)[:160]}")


def test_find_library_uses_the_nvidia_cublas_wheel(libcublas):
    wheel = _wheel_cublas()
    if not wheel:
        pytest.skip("the nvidia-cublas wheel is not installed (libcublas came from elsewhere)")
    assert any(os.path.exists(c) and os.path.samefile(c, w) for c in cublas._candidates(cublas._runtime_major()) for w in wheel)
    mapped = cublas._loaded_paths()
    assert any(os.path.samefile(m, w) for m in mapped if os.path.exists(m) for w in wheel), f"mapped {mapped}, wheel {wheel}"


def test_cublas_symbols_exist(libcublas):
    missing = [name for name in _declared() if not hasattr(libcublas, name)]
    assert not missing, f"{libcublas._name} lacks {missing}"


def test_loaded_cublas_matches_cupys_cuda_major(libcublas, cp):
    """Sorting the candidates by CuPy's CUDA major must give a libcublas of that major."""
    major = ctypes.c_int()
    libcublas.cublasGetProperty.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    assert libcublas.cublasGetProperty(0, ctypes.byref(major)) == 0  # MAJOR_VERSION: no handle, no driver
    assert major.value == cublas._runtime_major() == cp.cuda.runtime.runtimeGetVersion() // 1000, libcublas._name


def test_candidates_map_cupys_own_cublas(cp):
    """In a fresh process, ``_candidates`` imports CuPy's cuBLAS binding (the library CuPy uses comes
    first). CuPy >= 14 loads libcublas lazily, so the binding must be reached by attribute."""
    try:
        from cupy_backends.cuda.libs import cublas as _  # noqa: F401
    except Exception as exc:
        pytest.skip(f"CuPy's cuBLAS binding does not import here ({exc})")
    code = (
        "import sys\n"
        "import xpnet.ops.cublas as cb\n"
        "cb._candidates()\n"
        "assert 'cupy_backends.cuda.libs.cublas' in sys.modules, 'binding not imported'\n"
        "assert cb._loaded_paths(), 'libcublas not mapped'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
