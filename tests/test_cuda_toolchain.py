"""The GPU path's toolchain, checked on a machine without a GPU (each part skips, with its
reason, where its library is missing, as on CI). A real GPU run covers the rest.

* NVRTC, through NVIDIA's ``cuda-bindings`` (``cuda.bindings.nvrtc``): every kernels/*.cu
  compiles exactly as ``ops/cuda.py`` hands it to ``cupy.RawModule`` (the text of
  ``kernel_source``, ``NVRTC_OPTIONS``, no include path) for sm_90 (H100/H200) and sm_80,
  warning-free, with every ``KERNEL_NAMES`` entry; also with the options CuPy 14 adds itself
  (``-ftz=true``, ``--device-as-default-execution-space``, ``-arch=sm_XX``: a cubin).
* CuPy without a device: its own NVRTC binding compiles the files; a missing device and
  out-of-memory errors become one clear line.
* nvmath-python: the cuBLAS entry points ``ops/cublas.py`` calls exist with the arity used.
"""

from __future__ import annotations

import inspect
import io
import re

import pytest
from conftest import run_cli, write_synthetic_idx

from xpnet.backend import _cupy_device_count
from xpnet.ops import cuda

ARCHS = ("90", "80")  # H100/H200, A100


# ---- NVRTC, through cuda-bindings ----------------------------------------------------------


@pytest.fixture(scope="module")
def nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        pytest.skip(f"cuda-bindings not installed ({exc}): pip install -e '.[dev]' (cuda-bindings, nvidia-cuda-nvrtc)")
    try:
        _ok(nvrtc, nvrtc.nvrtcVersion())
    except Exception as exc:  # the bindings import, but libnvrtc is nowhere to be found
        pytest.skip(f"libnvrtc not loadable ({exc}): pip install nvidia-cuda-nvrtc, or a CUDA toolkit")
    return nvrtc


def _ok(nvrtc, result):
    err, *values = result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC error {err}")
    return values[0] if len(values) == 1 else values


def _archs(nvrtc) -> set[str]:
    return {str(a) for a in _ok(nvrtc, nvrtc.nvrtcGetSupportedArchs())}


def _compile(nvrtc, source: str, name: str, options) -> tuple[bool, str, bytes]:
    """(compiled?, log, PTX or cubin) for the text alone, no headers, like RawModule."""
    prog = _ok(nvrtc, nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []))
    try:
        opts = [o.encode() for o in options]
        status, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        # bytearray: NVRTC writes into the buffer (a bytes object would be mutated in place, and a
        # 1-byte b" " is CPython's shared singleton: corrupting it broke torch.save later in the run)
        log = bytearray(_ok(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog)))
        _ok(nvrtc, (nvrtc.nvrtcGetProgramLog(prog, log)[0], None))
        out = b""
        if status == nvrtc.nvrtcResult.NVRTC_SUCCESS:
            cubin = any(o.startswith("-arch=sm_") for o in options)
            size_fn, get_fn = (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if cubin else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
            out = bytearray(_ok(nvrtc, size_fn(prog)))
            _ok(nvrtc, (get_fn(prog, out)[0], None))
        return status == nvrtc.nvrtcResult.NVRTC_SUCCESS, bytes(log).rstrip(b"\0").decode(), bytes(out)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


# CuPy 14 compiles a RawModule's code with the caller's options plus these (cupy/cuda/compiler.py);
# test_cupy_still_adds_the_mirrored_options checks the installed CuPy still does.
def _cupy_like_options(arch: str) -> tuple[str, ...]:
    return (*cuda.NVRTC_OPTIONS, "-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")


def _ptx_entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


def test_nvrtc_supports_the_target_archs(nvrtc):
    major, _ = _ok(nvrtc, nvrtc.nvrtcVersion())
    assert major >= 12 and set(ARCHS) <= _archs(nvrtc), (major, sorted(_archs(nvrtc), key=int))


@pytest.mark.parametrize("how", ["ptx", "cupy"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(cuda.KERNEL_NAMES))
def test_nvrtc_compiles_kernel_file(nvrtc, filename, arch, how):
    """The text and options RawModule gets (PTX for compute_XX), and as CuPy 14 really compiles
    it on that GPU (its extra options, a cubin): clean, holding every kernel."""
    if arch not in _archs(nvrtc):
        pytest.skip(f"this NVRTC does not support sm_{arch}")
    options = (*cuda.NVRTC_OPTIONS, f"--gpu-architecture=compute_{arch}") if how == "ptx" else _cupy_like_options(arch)
    ok, log, out = _compile(nvrtc, cuda.kernel_source(filename), filename, options)
    assert ok, f"NVRTC {' '.join(options)} failed on {filename}:\n{log}"
    assert "warning" not in log.lower(), f"NVRTC warnings for {filename} ({' '.join(options)}):\n{log}"
    if how == "ptx":
        found = _ptx_entries(out.rstrip(b"\0").decode())
    else:
        assert out[:4] == b"\x7fELF", f"{filename}: NVRTC gave no sm_{arch} cubin"
        found = {k for k in cuda.KERNEL_NAMES[filename] if b".text." + k.encode() + b"\0" in out}
    missing = set(cuda.KERNEL_NAMES[filename]) - found
    assert not missing, f"{filename} ({how}, {arch}): kernels {sorted(missing)} missing"


def test_nvrtc_options_forbid_fma_contraction(nvrtc):
    """With NVRTC's default --fmad=true, l2_grad's double sum of squares (and softmax's smoothing
    term) compile to fused multiply-adds, which round once where NumPy and the emulator round
    twice. ops/cuda.py's options turn that off: step.cu (no math-library calls, whose own FMAs
    are deliberate) then holds no fma instruction at all."""
    arch = f"--gpu-architecture=compute_{ARCHS[0]}"
    source = cuda.kernel_source("step.cu")
    default = tuple(o for o in cuda.NVRTC_OPTIONS if not o.startswith("--fmad"))
    ok, log, ptx = _compile(nvrtc, source, "step.cu", (*default, arch))
    assert ok, log
    assert re.search(rb"\bfma\.rn\.f64\b", ptx), "NVRTC no longer contracts by default: update this test"
    ok, log, ptx = _compile(nvrtc, source, "step.cu", (*cuda.NVRTC_OPTIONS, arch))
    assert ok, log
    assert not re.search(rb"\bfma\.rn", ptx), "a*b + c fused into an FMA despite NVRTC_OPTIONS"


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
    from xpnet.training.graph import capture_supported

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


# ---- nvmath-python's cuBLAS bindings ---------------------------------------------------------


def test_nvmath_cublas_has_what_ops_cublas_calls():
    from xpnet.ops import cublas

    try:
        lib = cublas.bindings()
    except Exception as exc:
        pytest.skip(str(exc))
    arity = {"create": 0, "destroy": 1, "set_stream": 2, "set_workspace": 3, "set_math_mode": 2,
             "set_pointer_mode": 2, "sgemm": 14, "dgemm": 14}
    for name, n in arity.items():
        doc = getattr(lib, name).__doc__.splitlines()[0]  # Cython embeds the signature
        params = [p for p in doc[doc.index("(") + 1 : doc.rindex(")")].split(",") if p.strip()]
        assert len(params) == n, doc
    assert int(lib.Math.DEFAULT_MATH) == 0 and int(lib.PointerMode.HOST) == 0
    assert int(lib.Operation.N) == cublas.CUBLAS_OP_N and int(lib.Operation.T) == cublas.CUBLAS_OP_T


# ---- what `xpnet info` says about the GPU stack -----------------------------------------------


def test_info_without_cupy_names_the_gpu_stack_and_why_the_graph_is_off():
    """No CuPy (as on CI): `xpnet info` says so, with the per-CUDA-major extras, says whether
    nvmath is there, and why the CUDA-graph step is unavailable."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.modules['cupy'] = None; sys.modules['cupy_backends'] = None\n"
            "from xpnet.cli import main; sys.exit(main(['info']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "not installed" in lines["cupy"] and "xpnet[gpu-cuda12]" in lines["cupy"] and "gpu-cuda13" in lines["cupy"]
    assert lines["nvmath"].startswith("nvmath  ")
    assert lines["graph"] == "graph   CUDA-graph training step unavailable: no CuPy or no CUDA device"


def test_graph_unavailable_reason_carries_the_full_exception(monkeypatch):
    """With a GPU but no importable nvmath-python, the reason names the exception type and text
    (what `xpnet info`, `xpnet train` and the bench print), not a bare 'unavailable'."""
    import sys

    from xpnet import backend
    from xpnet.training.graph import capture_supported

    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    monkeypatch.setitem(sys.modules, "nvmath", None)
    monkeypatch.setitem(sys.modules, "nvmath.bindings", None)
    ok, reason = capture_supported()
    assert not ok
    assert "nvmath-python" in reason and "ModuleNotFoundError: import of nvmath" in reason and "gpu-cuda12" in reason


def test_gpu_extras_one_per_cuda_major():
    """pyproject: a GPU extra per CUDA major with the matching CuPy and nvmath's matching extra
    (which brings libcublas), `gpu` an alias of the CUDA 12 one; [dev] brings NVRTC."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    extras = project["project"]["optional-dependencies"]
    assert extras["gpu"] == ["xpnet[gpu-cuda12]"]
    for major in ("12", "13"):
        deps = extras[f"gpu-cuda{major}"]
        assert any(d.startswith(f"cupy-cuda{major}x") for d in deps), deps
        assert any(d.startswith(f"nvmath-python[cu{major}]") for d in deps), deps
    assert any(d.startswith("cuda-bindings") for d in extras["dev"]) and any(d.startswith("nvidia-cuda-nvrtc") for d in extras["dev"])
