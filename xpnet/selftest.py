"""``xpnet selftest``: the GPU path (or the CPU kernels) checks itself wherever it runs.

No line of the GPU path had run on a GPU when it was written, so the first thing a user with
one runs is this. Five sections, each a list of :class:`Check` rows:

* (a) ``environment``: versions, the device, the variables that change numerics, and whether the
  CUDA-graph path is available (with the full reason when not);
* (b) ``ops``: every op of the contract (:mod:`xpnet.ops.reference`) of this device's
  implementation against the NumPy reference, outputs NaN-filled first (an unwritten element
  shows), each tolerance argued where it is set; the GEMM in all four transpositions;
* (c) ``graph``: the captured step against the same step run eagerly, over an epoch boundary,
  with dropout, label smoothing, L2 and a one-cycle lr table; allocations during the capture
  counted; the graph's nodes counted by type;
* (d) ``training``: a short run on synthetic data, and one float64 epoch of the device's
  trainer against the CPU;
* (e) ``timings``: reported, never asserted.

A FAIL anywhere is a correctness failure (the CLI exits non-zero); speed never fails. Errors
are reported in units of the dtype's unit roundoff ``u`` times a per-element magnitude named in
each row (``u·|ref|``, ``u·Σ|a||b|`` ...), against the number of roundings argued for that op.
On the CPU the ops are the Numba kernels (``ops/cpu.py``) and the graph rows say "not applicable".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from xpnet import __version__, backend
from xpnet.ops import reference

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"
SECTIONS = {
    "environment": "(a) environment",
    "ops": "(b) every op of the contract against the NumPy reference",
    "graph": "(c) the captured step against the eager step",
    "training": "(d) training",
    "timings": "(e) timings (reported, not asserted)",
}
SHAPES = [(1, 1), (7, 33), (3, 1023), (128, 1024)]
DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
# GEMM (M, K, N) per op shape (M, N): odd inner sizes, and the 784-1024 layer's.
GEMM_K = {(1, 1): 1, (7, 33): 1023, (3, 1023): 33, (128, 1024): 784}
# Environment variables that change numerics or what runs (reported in section a).
NUMERICS_PREFIXES = ("CUPY_", "CUBLAS_", "CUDA_", "NVIDIA_TF32", "TORCH_", "NUMBA_", "OMP_", "OPENBLAS_", "MKL_",
                     "XPNET_")
TF32_VARIABLES = ("NVIDIA_TF32_OVERRIDE", "CUPY_TF32")


@dataclass
class Check:
    """One row of the report. ``error`` and ``tolerance`` are in ``unit`` (see the module doc)."""

    section: str
    name: str
    status: str
    error: float | None = None
    tolerance: float | None = None
    unit: str = ""
    detail: str = ""


@dataclass
class Report:
    device: str
    quick: bool
    checks: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> list:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def section(self, name: str) -> list:
        return [c for c in self.checks if c.section == name]

    def to_dict(self) -> dict:
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP, INFO)}
        return {"xpnet": __version__, "device": self.device, "quick": self.quick, "ok": self.ok, "counts": counts,
                "seconds": round(self.seconds, 3), "environment": self.environment, "timings": self.timings,
                "checks": [asdict(c) for c in self.checks]}

    def format_section(self, name: str) -> str:
        rows = self.section(name)
        counts = ", ".join(f"{sum(c.status == s for c in rows)} {s.lower()}" for s in (PASS, FAIL, SKIP)
                           if any(c.status == s for c in rows))
        lines = [f"== {SECTIONS[name]} · {self.device} ==" + (f" {counts}" if counts else "")]
        width = max([len(c.name) for c in rows] + [20])
        for c in rows:
            err = "" if c.error is None else _num(c.error)
            tol = "" if c.tolerance is None else _num(c.tolerance)
            measure = f"{err:>9} / {tol:<9}" if (err or tol) else " " * 21
            unit = f" {c.unit}" if c.unit and (err or tol) else ""
            note = f"  {c.detail}" if c.detail else ""
            lines.append(f"{c.status:<4}  {c.name:<{width}}  {measure}{unit}{note}".rstrip())
        return "\n".join(lines)

    def format(self) -> str:
        parts = [self.format_section(s) for s in SECTIONS if self.section(s)]
        d = self.to_dict()["counts"]
        verdict = "FAILED" if self.failed else "passed"
        parts.append(f"selftest {verdict} on {self.device}: {d[PASS]} pass, {d[FAIL]} fail, {d[SKIP]} skipped, "
                     f"{d[INFO]} info ({self.seconds:.1f} s); columns: error / tolerance in the unit shown")
        return "\n\n".join(parts)


def _strict(v):
    """Strict JSON has no Infinity/NaN: a non-finite number is written as the string "inf"/"nan"."""
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    if isinstance(v, (float, np.floating)) and not math.isfinite(v):
        return str(float(v))
    return v


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"


def write_json(report: Report, path) -> None:
    """The whole report as UTF-8 JSON, written atomically."""
    from xpnet.fileio import atomic_write  # noqa: PLC0415

    text = json.dumps(_strict(report.to_dict()), indent=1, default=_jsonable, allow_nan=False)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


# ---- the device under test ------------------------------------------------------------


@dataclass
class Target:
    """What is checked: an array module, the ops implementation, and the device string."""

    device: backend.Device
    xp: object
    ops: object

    @property
    def is_gpu(self) -> bool:
        return self.device.is_gpu

    def sync(self) -> None:
        """Wait for all queued device work (every stream): a wall clock or a host read follows."""
        if self.xp is not np:
            self.xp.cuda.runtime.deviceSynchronize()


def make_target(device) -> Target:
    """The target for ``cpu`` (NumPy + Numba ops) or ``gpu[:N]`` (CuPy + the CUDA kernels)."""
    dev = backend.parse_device(device)
    xp = backend.get_xp(dev)  # a DeviceError (one line in the CLI) without CuPy or a device
    if dev.is_gpu:
        from xpnet.ops import cuda  # noqa: PLC0415

        return Target(dev, xp, cuda)
    from xpnet.ops import get_ops  # noqa: PLC0415

    return Target(dev, xp, get_ops(np))


def run(device="cpu", quick: bool = False, on_section=None) -> Report:
    """Run every section on ``device``; ``on_section(report, name)`` after each (printing, saving)."""
    started = time.perf_counter()
    target = make_target(device)
    report = Report(str(target.device), bool(quick))
    for name, fn in (("environment", check_environment), ("ops", check_ops), ("graph", check_graph),
                     ("training", check_training), ("timings", check_timings)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # fallbacks are reported as rows instead
                report.checks.extend(fn(target, quick, report))
        except Exception as exc:  # one broken section must not hide the others
            report.checks.append(Check(name, "section crashed", FAIL, detail=_exc_line(exc)))
            report.environment.setdefault("tracebacks", {})[name] = traceback.format_exc()
        report.seconds = time.perf_counter() - started
        if on_section is not None:
            on_section(report, name)
    return report


def _exc_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


# ---- (a) environment -------------------------------------------------------------------


def check_environment(target: Target, quick: bool, report: Report) -> list:
    env = report.environment
    env["xpnet"] = __version__
    env["python"] = platform.python_version()
    env["numpy"] = np.__version__
    env["platform"] = platform.platform()
    env["cpu"] = backend.device_name("cpu")
    for dist in ("numba", "cupy-cuda13x", "cupy-cuda12x", "cupy", "nvmath-python", "cuda-bindings", "cuda-core",
                 "cuda-pathfinder", "nvidia-cublas", "nvidia-cuda-nvrtc", "torch"):
        version = _dist_version(dist)
        if version:
            env.setdefault("packages", {})[dist] = version
    env["numerics_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith(NUMERICS_PREFIXES)}
    env["ops"] = target.ops.__name__
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    rows = [Check("environment", "xpnet / python / numpy", INFO,
                  detail=f"{__version__} / {env['python']} / {np.__version__}"),
            Check("environment", "packages", INFO, detail=packages),
            Check("environment", "numerics variables", INFO,
                  detail=", ".join(f"{k}={v}" for k, v in env["numerics_env"].items()) or "none set")]
    if target.is_gpu:
        env.update(_gpu_environment(target))
        rows.append(Check("environment", "device", INFO, detail=env.get("device_summary", str(target.device))))
        rows.append(Check("environment", "CUDA stack", INFO, detail=env.get("stack_summary", "")))
        from xpnet.training.graph import capture_supported  # noqa: PLC0415

        ok, reason = capture_supported()
        env["graph_path"] = {"available": ok, "reason": reason}
        detail = "available (nvmath-python's cuBLAS inside the capture)" if ok else f"unavailable: {reason}"
        rows.append(Check("environment", "CUDA-graph path", INFO if ok else SKIP, detail=detail))
    else:
        from xpnet.ops import cpu  # noqa: PLC0415

        env["device_summary"] = env["cpu"]
        ops = "the Numba kernels (xpnet.ops.cpu)" if cpu.AVAILABLE else "numba not installed: the reference"
        rows.append(Check("environment", "device", INFO, detail=f"{env['cpu']}; ops: {ops}"))
        env["graph_path"] = {"available": False, "reason": "not applicable on CPU"}
        rows.append(Check("environment", "CUDA-graph path", SKIP, detail="not applicable on CPU"))
    return rows


def _dist_version(name: str) -> str | None:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _gpu_environment(target: Target) -> dict:
    """Device properties and CUDA versions; each read guarded (a missing one is reported, not fatal)."""
    xp, out = target.xp, {}
    if xp is np:  # the CPU emulator of kernels/*.cu (tests): no CUDA to ask
        out["device_summary"] = f"{backend.device_name(target.device)} (NumPy arrays: the kernel emulator)"
        out["stack_summary"] = "none (emulated)"
        return out
    rt = xp.cuda.runtime
    index = target.device.index
    props = rt.getDeviceProperties(index)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    dev = {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
           "sms": int(props["multiProcessorCount"]), "memory_gib": round(props["totalGlobalMem"] / 2**30, 1)}
    for key, attr in (("sm_clock_khz", 13), ("memory_clock_khz", 36), ("memory_bus_bits", 37)):
        with contextlib.suppress(Exception):  # cudaDevAttrClockRate / MemoryClockRate / GlobalMemoryBusWidth
            dev[key] = int(rt.deviceGetAttribute(attr, index))
    out["gpu"] = dev
    out["device_summary"] = (f"gpu:{index} {name}, compute capability {dev['compute_capability']}, {dev['sms']} SMs, "
                             f"{dev['memory_gib']} GiB")
    stack = {"cupy": xp.__version__}
    for key, fn in (("cuda_runtime", rt.runtimeGetVersion), ("cuda_driver", rt.driverGetVersion)):
        with contextlib.suppress(Exception):
            stack[key] = fn()
    with contextlib.suppress(Exception):
        stack["nvrtc"] = ".".join(map(str, xp.cuda.nvrtc.getVersion()))
    with contextlib.suppress(Exception):
        from cupy_backends.cuda.libs import cublas as cupy_cublas  # noqa: PLC0415

        stack["cublas"] = cupy_cublas.getVersion(xp.cuda.device.get_cublas_handle())
    stack["nvmath"] = _dist_version("nvmath-python") or "not installed"
    out["stack"] = stack
    out["stack_summary"] = ", ".join(f"{k} {v}" for k, v in stack.items())
    return out


# ---- (b) ops ---------------------------------------------------------------------------
# Error measure: max_i |got_i - want_i| / (u * s_i), u the dtype's unit roundoff and s_i a
# magnitude named per op ("unit" column); the tolerance is the number of roundings argued for
# that op. Exact ops have tolerance 0 (any difference, or a NaN left in an output, fails).


def _u(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def _measure(got, want, scale, u) -> tuple[float, str]:
    """(max |got - want| / (u·scale), note): NaN or inf where ``want`` is finite → inf, "N unwritten"."""
    got = np.asarray(backend.to_numpy(got))
    want = np.asarray(want)
    if got.shape != want.shape:
        return math.inf, f"shape {got.shape} != {want.shape}"
    if got.dtype.kind in "iub":
        bad = int(np.count_nonzero(got != want))
        return (math.inf if bad else 0.0), (f"{bad} of {got.size} differ" if bad else "")
    g, w = got.astype(np.longdouble), want.astype(np.longdouble)
    lost = ~np.isfinite(g) & np.isfinite(w)
    if lost.any():
        return math.inf, f"{int(lost.sum())} of {got.size} elements not finite (unwritten?)"
    diff = np.abs(g - w)
    if not diff.size:
        return 0.0, ""
    scale = np.broadcast_to(np.asarray(scale, dtype=np.longdouble), diff.shape)
    exact_needed = scale == 0
    if (diff[exact_needed] > 0).any():
        return math.inf, "differs where the result is 0"
    err = float(np.max(np.where(exact_needed, 0, diff / np.where(exact_needed, 1, scale)))) / u
    return err, ""


def _row(section, name, err_note, tol, unit) -> Check:
    err, note = err_note
    return Check(section, name, PASS if err <= tol else FAIL, err, tol, unit, note)


def check_ops(target: Target, quick: bool, report: Report) -> list:
    if not target.is_gpu:
        from xpnet.ops import cpu  # noqa: PLC0415

        if not cpu.AVAILABLE:
            return [Check("ops", "Numba kernels", SKIP, detail="numba not installed: the ops are the reference itself")]
    rows = []
    rng = np.random.default_rng(1234)
    gemms = _gemm_routes(target)
    for dtype in DTYPES:
        rows += _check_tf32_probe(target, gemms, dtype)
        for shape in SHAPES:
            for op in (_op_bias_add, _op_bias_relu_forward, _op_relu_backward, _op_bias_grad, _op_softmax_xent,
                       _op_step_metrics, _op_gather_batch, _op_dropout, _op_dropout_backward, _op_l2_grad,
                       _op_adam_step, _op_matmul):
                try:
                    rows += op(target, rng, dtype, shape, gemms)
                except Exception as exc:
                    rows.append(Check("ops", f"{op.__name__[4:]} {dtype.name} {shape}", FAIL, detail=_exc_line(exc)))
    for _, _, owner in gemms:
        if hasattr(owner, "close"):  # the GraphTrainer that holds the cuBLAS handle
            owner.close()
    return rows


def _dev(target, a):
    """A copy on the target's device (never the host array itself: ops write in place)."""
    return target.xp.array(a, copy=True)


def _nan(target, shape, dtype):
    return target.xp.full(shape, np.nan, dtype=dtype)


def _op_bias_add(target, rng, dt, shape, gemms):
    # One IEEE addition per element, in both: exact (tolerance 0).
    Z, b = rng.standard_normal(shape).astype(dt), rng.standard_normal(shape[1]).astype(dt)
    Zd = _dev(target, Z)
    target.ops.bias_add(Zd, _dev(target, b))
    return [_row("ops", f"bias_add {dt.name} {shape}", _measure(Zd, Z + b, np.abs(Z + b), _u(dt)), 0, "u·|ref|")]


def _op_bias_relu_forward(target, rng, dt, shape, gemms):
    # z = Z + b (one rounding), A = max(z, 0) (no rounding): exact.
    Z, b = rng.standard_normal(shape).astype(dt), rng.standard_normal(shape[1]).astype(dt)
    Zd, A = _dev(target, Z), _nan(target, shape, dt)
    target.ops.bias_relu_forward(Zd, _dev(target, b), A)
    ref_Z, ref_A = Z.copy(), np.full(shape, np.nan, dt)
    reference.bias_relu_forward(ref_Z, b, ref_A)
    name = f"bias_relu_forward {dt.name} {shape}"
    return [_row("ops", name + " Z", _measure(Zd, ref_Z, np.abs(ref_Z), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " A", _measure(A, ref_A, np.abs(ref_A), _u(dt)), 0, "u·|ref|")]


def _op_relu_backward(target, rng, dt, shape, gemms):
    # dA * (Z > 0) is dA or ±0 exactly: exact, out of place and in place (dZ is dA).
    dA, Z = rng.standard_normal(shape).astype(dt), rng.standard_normal(shape).astype(dt)
    Z.reshape(-1)[::5] = 0  # the boundary: Z == 0 is not > 0
    want = np.empty_like(dA)
    reference.relu_backward(dA, Z, want)
    return _exact_both_ways(target, "relu_backward", dA, Z, want, dt, shape)


def _op_bias_grad(target, rng, dt, shape, gemms):
    # A sum of m terms in any order (pairwise, blocked, double-accumulated) is within γ_m ≈ m·u
    # of the exact sum, relative to Σ|dZ_ij| (Higham, Accuracy and Stability, §4.2), plus one
    # final rounding: tolerance m + 1 in u·Σ|dZ|.
    m = shape[0]
    dZ = rng.standard_normal(shape).astype(dt)
    db = _nan(target, shape[1], dt)
    target.ops.bias_grad(_dev(target, dZ), db)
    exact = dZ.astype(np.longdouble).sum(axis=0)
    scale = np.abs(dZ).astype(np.longdouble).sum(axis=0)
    return [_row("ops", f"bias_grad {dt.name} {shape}", _measure(db, exact, scale, _u(dt)), m + 1, "u·Σ|dZ|")]


def _softmax_exact(Z, y, scale, smoothing):
    """Independent long-double formula: loss rows, dZ, and per-row p + q (the magnitude of dZ)."""
    Z = Z.astype(np.longdouble)
    m, k = Z.shape
    top = Z.max(axis=1, keepdims=True)
    e = np.exp(Z - top)
    lse = top[:, 0] + np.log(e.sum(axis=1))
    q = np.full((m, k), np.longdouble(smoothing) / k)
    q[np.arange(m), y] += 1 - np.longdouble(smoothing)
    p = e / e.sum(axis=1, keepdims=True)
    return lse - (q * Z).sum(axis=1), (p - q) * np.longdouble(scale), p + q


def _op_softmax_xent(target, rng, dt, shape, gemms):
    # Error argument: z - max rounds with error u·R (R = the row's max |z - max|), exp adds ≤ 2 ulp
    # (CUDA's expf), the row sum k·u, log and the division 1 ulp each, the smoothing term's sum k·u.
    # dZ = scale·(p - q): |Δ| ≤ (2k + 2R + 16)·u·scale·(p + q). loss: the same count of roundings
    # relative to 1 + |loss| + max|z| (the magnitudes the loss is computed from).
    m, k = shape
    rows = []
    Z = (3 * rng.standard_normal(shape)).astype(dt)
    y = rng.integers(0, k, m).astype(np.int32)
    R = float(np.max(Z.max(axis=1, keepdims=True) - Z)) if Z.size else 0.0
    tol = 2 * k + 2 * math.ceil(R) + 16
    scale = 1.0 / m
    for smoothing, in_place in ((0.0, False), (0.1, False), (0.1, True)):
        want_loss, want_dZ, pq = _softmax_exact(Z, y, scale, smoothing)
        Zd = _dev(target, Z)
        dZ = Zd if in_place else _nan(target, shape, dt)
        loss = _nan(target, m, dt)
        target.ops.softmax_xent(Zd, _dev(target, y), dZ, loss, scale, smoothing, validate=True)
        loss_scale = 1 + np.abs(want_loss) + np.abs(Z).max(axis=1)
        name = f"softmax_xent {dt.name} {shape} smoothing {smoothing:g}" + (" in place" if in_place else "")
        rows.append(_row("ops", name + " loss", _measure(loss, want_loss, loss_scale, _u(dt)), tol,
                         "u·(1+|loss|+max|z|)"))
        rows.append(_row("ops", name + " dZ", _measure(dZ, want_dZ, pq * np.longdouble(scale), _u(dt)), tol,
                         "u·scale·(p+q)"))
    return rows


def _op_step_metrics(target, rng, dt, shape, gemms):
    # correct count and t: integers, exact. loss_acc (float64): a sum of m + 1 terms, γ_{m+1}
    # relative to Σ|terms|: tolerance m + 1 in u64·Σ|terms|.
    m, k = shape
    Z = rng.standard_normal(shape).astype(dt)
    y = rng.integers(0, k, m).astype(np.int32)
    y[::2] = Z.argmax(axis=1)[::2]  # about half right
    loss_rows = rng.uniform(0, 3, m).astype(dt)
    xp = target.xp
    loss_acc, correct, t = xp.full(1, 0.25, np.float64), xp.full(1, 3, np.int64), xp.full(1, 5, np.int32)
    target.ops.step_metrics(_dev(target, Z), _dev(target, y), _dev(target, loss_rows), loss_acc, correct, t)
    want = np.longdouble(0.25) + loss_rows.astype(np.longdouble).sum()
    name = f"step_metrics {dt.name} {shape}"
    return [_row("ops", name + " correct, t", _measure(np.concatenate([backend.to_numpy(correct), backend.to_numpy(t)]),
                                                      np.array([3 + int((Z.argmax(axis=1) == y).sum()), 6]), 1, 1), 0,
                 "count"),
            _row("ops", name + " loss sum", _measure(loss_acc, np.array([want]), 0.25 + float(loss_rows.sum()),
                                                    _u(np.float64)), m + 1, "u64·Σ|loss|")]


def _op_gather_batch(target, rng, dt, shape, gemms):
    # Copies: exact. Batch 1 of the epoch (t - t0 = 1), so the offset is read on the device.
    m, nf = shape
    n = 2 * m + 3
    X = rng.standard_normal((n, nf)).astype(dt)
    y = rng.integers(0, 10, n).astype(np.int32)
    perm = rng.permutation(n).astype(np.int64)
    xp = target.xp
    Xb, yb = _nan(target, (m, nf), dt), xp.full(m, -1, np.int32)
    target.ops.gather_batch(_dev(target, X), _dev(target, y), _dev(target, perm), xp.full(1, 7, np.int32),
                            xp.full(1, 6, np.int32), m, Xb, yb)
    rows = perm[m:2 * m]
    name = f"gather_batch {dt.name} {shape}"
    return [_row("ops", name + " X", _measure(Xb, X[rows], np.abs(X[rows]), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " y", _measure(yb, y[rows], 1, 1), 0, "count")]


def _op_dropout(target, rng, dt, shape, gemms):
    # The mask is an integer hash, compared exactly; U is 0 or the one rounded 1/(1-rate); D = H·U
    # is one rounding: exact.
    H = rng.standard_normal(shape).astype(dt)
    D, U = _nan(target, shape, dt), _nan(target, shape, dt)
    seed, layer, step = 123_456_789_012, 1, 11
    target.ops.dropout(_dev(target, H), D, U, 0.3, seed, target.xp.full(1, step, np.int32), layer)
    want_D, want_U = np.empty_like(H), np.empty_like(H)
    reference.dropout(H, want_D, want_U, 0.3, seed, step, layer)
    name = f"dropout {dt.name} {shape}"
    return [_row("ops", name + " U", _measure(U, want_U, np.abs(want_U), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " D", _measure(D, want_D, np.abs(want_D), _u(dt)), 0, "u·|ref|")]


def _op_dropout_backward(target, rng, dt, shape, gemms):
    # One multiply: exact, out of place and in place.
    dD = rng.standard_normal(shape).astype(dt)
    U = (rng.random(shape) > 0.3).astype(dt) * dt.type(1 / 0.7)
    want = dD * U
    return _exact_both_ways(target, "dropout_backward", dD, U, want, dt, shape)


def _exact_both_ways(target, op, a, b, want, dt, shape):
    """``op(a, b) -> out`` out of place (into NaNs) and in place (``out is a``), both exact."""
    out = _nan(target, shape, dt)
    getattr(target.ops, op)(_dev(target, a), _dev(target, b), out)
    same = _dev(target, a)
    getattr(target.ops, op)(same, _dev(target, b), same)
    name = f"{op} {dt.name} {shape}"
    return [_row("ops", name, _measure(out, want, np.abs(want), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " in place", _measure(same, want, np.abs(want), _u(dt)), 0, "u·|ref|")]


def _op_l2_grad(target, rng, dt, shape, gemms):
    # dW + T(coef)·W: a rounded product then a rounded sum, the reference's two operations (the
    # kernel's __fmul_rn forbids an FMA): exact. The loss: the reference sums the n squares in the
    # dtype (vdot), the kernels in double: n + 2 roundings of the dtype relative to the loss.
    W, dW = rng.standard_normal(shape).astype(dt), rng.standard_normal(shape).astype(dt)
    coef, loss_coef = 1e-3 / 128, 5e-4
    dWd, loss = _dev(target, dW), target.xp.full(1, 0.5, np.float64)
    target.ops.l2_grad(dWd, _dev(target, W), coef, loss, loss_coef)
    want = dW + dt.type(coef) * W
    sq = np.longdouble(loss_coef) * (W.astype(np.longdouble) ** 2).sum()
    name = f"l2_grad {dt.name} {shape}"
    return [_row("ops", name + " dW", _measure(dWd, want, np.abs(want), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " loss", _measure(loss, np.array([0.5 + sq]), float(0.5 + sq), _u(dt)),
                 W.size + 2, "u·loss")]


def _op_adam_step(target, rng, dt, shape, gemms):
    # m and v: the reference's roundings in its order (products unfused by __fmul_rn): exact.
    # p: the bias corrections 1 - β^t come from the device's pow() (≤ 2 ulp in double, CPython's
    # may differ by 1), the square root and division are IEEE: each step's update may differ by a
    # few ulps of itself and p by one rounding: 8 per step, in u·(|p| + Σ lr_t/(1-β1^t)·4) (4 bounds
    # |m̂/(√v̂+ε)| for β1 = 0.9, β2 = 0.999).
    n = shape[0] * shape[1]
    steps, b1, b2, eps = 3, 0.9, 0.999, 1e-8
    lrs = np.array([1e-3, 3e-3, 2e-3])
    p0 = rng.standard_normal(n).astype(dt)
    grads = [rng.standard_normal(n).astype(dt) for _ in range(steps)]
    xp = target.xp
    p, m, v = _dev(target, p0), xp.zeros(n, dt), xp.zeros(n, dt)
    t, table = xp.zeros(1, np.int32), _dev(target, lrs)
    rp, rm, rv = p0.copy(), np.zeros(n, dt), np.zeros(n, dt)
    for step, g in enumerate(grads, start=1):
        t += 1
        target.ops.adam_step(p, _dev(target, g), m, v, t, table, b1, b2, eps)
        reference.adam_step(rp, g, rm, rv, step, lrs, b1, b2, eps)
    bound = np.abs(rp).astype(np.longdouble) + 4 * sum(lrs[i] / (1 - b1 ** (i + 1)) for i in range(steps))
    name = f"adam_step {dt.name} {shape}"
    return [_row("ops", name + " m", _measure(m, rm, np.abs(rm), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " v", _measure(v, rv, np.abs(rv), _u(dt)), 0, "u·|ref|"),
            _row("ops", name + " p", _measure(p, rp, bound, _u(dt)), 8 * steps, "u·(|p|+4Σlr)")]


def _gemm_routes(target) -> list:
    """The GEMMs of the step: ``ops.matmul`` (cupy.matmul / NumPy eagerly) and, on a GPU, the
    row-major → column-major cuBLAS mapping of ``ops/cublas.py`` (the captured step's GEMM)."""
    routes = [("ops.matmul", target.ops.matmul, None)]
    if target.is_gpu:
        trainer, reason = _graph_trainer_for_gemm(target)
        if trainer is None:
            routes.append(("cuBLAS row-major (ops/cublas.py)", None, reason))
        else:
            routes.append(("cuBLAS row-major (ops/cublas.py)", trainer._dev.blas.matmul_rowmajor, trainer))
    return routes


def _graph_trainer_for_gemm(target):
    """A tiny GraphTrainer whose setup made the cuBLAS handle exactly as training does, or (None, why)."""
    from xpnet.optim.optimizers import Adam  # noqa: PLC0415
    from xpnet.training.graph import GraphTrainer, capture_supported  # noqa: PLC0415

    ok, reason = capture_supported()
    if not ok:
        return None, f"graph path unavailable: {reason}"
    net = _net(target, [4, 3, 2], "float32")
    trainer = GraphTrainer(net, Adam(), np.zeros((4, 4), np.float32), np.array([0, 1, 0, 1]), batch_size=2)
    S = trainer._device_state(1)
    if trainer.fallback_reason is not None or S.blas is None:
        return None, f"cuBLAS setup failed: {trainer.fallback_reason}"
    return trainer, ""


def _check_tf32_probe(target, gemms, dt) -> list:
    # (1 + 2^-12)·1 summed over K = 64 is exact in float32 (every partial sum fits in 24 bits);
    # TF32 keeps 10 mantissa bits and rounds 1 + 2^-12 to 1: the result is 64 instead of 64.015625.
    if dt != np.float32:
        return []
    rows = []
    A = np.full((2, 64), 1 + 2.0**-12, np.float32)
    B = np.ones((64, 3), np.float32)
    for label, mm, extra in gemms:
        if mm is None:
            rows.append(Check("ops", f"TF32 probe, {label}", SKIP, detail=extra))
            continue
        C = _nan(target, (2, 3), np.float32)
        target.sync()
        mm(_dev(target, A), _dev(target, B), C)
        target.sync()
        got = backend.to_numpy(C)
        ok = bool(np.all(got == np.float32(64 * (1 + 2.0**-12))))
        detail = "" if ok else (f"float32 GEMM lost the low bits (got {float(got.flat[0])!r}, want 64.015625): "
                                f"TF32 is on; {_tf32_variables()}")
        rows.append(Check("ops", f"TF32 probe, {label}", PASS if ok else FAIL, 0.0 if ok else math.inf, 0, "exact",
                          detail))
    return rows


def _tf32_variables() -> str:
    values = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in TF32_VARIABLES)
    return f"check {values} (CUPY_TF32=1 turns it on for cupy.matmul; NVIDIA_TF32_OVERRIDE=0 forces it off)"


def _op_matmul(target, rng, dt, shape, gemms):
    # Any summation order, FMA or not, keeps |ΔC_ij| ≤ γ_K·(|A||B|)_ij, γ_K ≈ K·u (Higham, Thm
    # 3.5), plus the output rounding: tolerance K + 1 in u·(|A||B|). A float32 error near 1e-4
    # (relative to |A||B|) is TF32's 10-bit mantissa, reported as such.
    M, N = shape
    K = GEMM_K[shape]
    opA, opB = rng.standard_normal((M, K)).astype(dt), rng.standard_normal((K, N)).astype(dt)
    exact = opA.astype(np.longdouble) @ opB.astype(np.longdouble)
    scale = np.abs(opA).astype(np.longdouble) @ np.abs(opB).astype(np.longdouble)
    rows = []
    for label, mm, extra in gemms:
        for ta in (False, True):
            for tb in (False, True):
                name = f"matmul {label} {dt.name} {M}x{K}x{N} {'T' if ta else 'N'}{'T' if tb else 'N'}"
                if mm is None:
                    rows.append(Check("ops", name, SKIP, detail=extra))
                    continue
                A = _dev(target, np.ascontiguousarray(opA.T if ta else opA))
                B = _dev(target, np.ascontiguousarray(opB.T if tb else opB))
                C = _nan(target, (M, N), dt)
                target.sync()  # the cuBLAS handle runs on the trainer's own (non-blocking) stream
                mm(A, B, C, trans_a=ta, trans_b=tb)
                target.sync()
                err, note = _measure(C, exact, scale, _u(dt))
                if dt == np.float32 and K + 1 < err and 1e-5 <= err * _u(dt) <= 1e-2:
                    note = f"error {err * _u(dt):.1e} of Σ|a||b|, near 1e-4: TF32 is on; {_tf32_variables()}"
                rows.append(_row("ops", name, (err, note), K + 1, "u·|A||B|"))
    return rows


# ---- shared helpers for the training sections ------------------------------------------


def _net(target, sizes, dtype, **kwargs):
    """An MLP on the target's device whose ops are the target's (the emulator's, in tests)."""
    from xpnet.nn.model import MLP  # noqa: PLC0415

    net = MLP(list(sizes), device=str(target.device), dtype=dtype, **kwargs)
    net.ops = target.ops
    return net


def _synthetic(n, nf, k, seed, dtype, spread=0.5, sample_seed=None):
    """Gaussian clusters around k random centres (from ``seed``; the samples from ``sample_seed``,
    default the same): learnable to high accuracy in a few epochs."""
    centres = np.random.default_rng(seed).standard_normal((k, nf))
    rng = np.random.default_rng(seed if sample_seed is None else [seed, sample_seed])
    if sample_seed is None:
        rng.standard_normal((k, nf))
    y = rng.integers(0, k, n)
    X = centres[y] + spread * rng.standard_normal((n, nf))
    return X.astype(dtype), y


@contextlib.contextmanager
def count_allocations(xp):
    """Yields a list that collects the size of every device allocation made inside the block.

    CuPy: a counting allocator in front of the memory pool (a temporary allocated *and freed*
    during a capture counts: the dangerous case, since the graph keeps its address). NumPy
    (the kernel emulator in tests): calls of the array constructors the model code uses.
    """
    calls: list = []
    if xp is not np:
        previous = xp.cuda.memory.get_allocator()  # the pool, or plain cudaMalloc (device_check's memcheck)
        xp.cuda.set_allocator(lambda nbytes: (calls.append(int(nbytes)), previous(nbytes))[1])
        try:
            yield calls
        finally:
            xp.cuda.set_allocator(previous)
        return
    names = ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like")
    saved = {name: getattr(np, name) for name in names}

    def counting(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls.append(int(getattr(out, "nbytes", 0)))
            return out
        return wrapper

    try:
        for name, fn in saved.items():
            setattr(np, name, counting(fn))
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(np, name, fn)


NODE_TYPES = ("KERNEL", "MEMCPY", "MEMSET", "HOST", "GRAPH", "EMPTY", "WAIT_EVENT", "EVENT_RECORD", "MEM_ALLOC",
              "MEM_FREE", "CONDITIONAL", "BATCH_MEM_OP", "EXT_SEMAS_SIGNAL", "EXT_SEMAS_WAIT")


def graph_census(graph) -> dict:
    """Nodes of a captured graph by type, and the xpnet kernels among them by name.

    A CuPy graph is read from its DOT dump (``cudaGraphDebugDotPrint``, verbose); the emulator's
    graph (tests) is a list of recorded launches and GEMMs, all kernels.
    """
    from xpnet.ops.cuda import KERNEL_NAMES  # noqa: PLC0415

    ours = {name for names in KERNEL_NAMES.values() for name in names}
    if hasattr(graph, "operations"):  # tools/cuda_emulator's FakeGraph
        return {"nodes": len(graph.operations), "types": {"KERNEL": len(graph.operations)}, "xpnet_kernels": None,
                "source": "emulator"}
    import re  # noqa: PLC0415

    dot = graph.debug_dot_str(1)  # cudaGraphDebugDotFlagsVerbose
    types: dict = {}
    named: dict = {}
    # Node statements only: a quoted id at the start of a line, then its attribute block (edges,
    # '"a" -> "b" [...]', do not start that way). The type is the first type keyword in the block:
    # the printer writes it at the head of the label ('label="{KERNEL | {ID | 0 ... | name<<<...>>>}').
    nodes = re.findall(r'^"(graph_\d+_node_\d+)"\s*\[(.*?)\];?[ \t]*$', dot, flags=re.S | re.M)
    keyword = re.compile(r"\b(" + "|".join(sorted(NODE_TYPES, key=len, reverse=True)) + r")\b")
    for _, attrs in nodes:
        first = keyword.search(attrs)
        kind = first.group(1) if first else "UNKNOWN"
        types[kind] = types.get(kind, 0) + 1
        hit = next((n for n in ours if re.search(rf"\b{n}\b", attrs)), None)
        if hit:
            named[hit] = named.get(hit, 0) + 1
    return {"nodes": len(nodes), "types": types, "xpnet_kernels": named, "source": "cudaGraphDebugDotPrint",
            "dot_head": dot[:400] if not nodes else ""}


def expected_launches(n_layers: int, dropout: bool, l2: bool) -> tuple[int, int]:
    """(xpnet kernels, GEMMs) in one captured training step of an MLP with ``n_layers`` layers."""
    hidden = n_layers - 1
    kernels = 1 + hidden * (1 + dropout) + 1 + 2  # gather; bias+ReLU (+dropout); bias_add; softmax, metrics
    kernels += n_layers * (1 + l2) + hidden * (1 + dropout)  # bias_grad (+l2); relu_backward (+dropout_backward)
    kernels += 1  # adam
    return kernels, n_layers + n_layers + hidden  # forward, dW, dA


def _eager_twin_class():
    from xpnet.training.graph import GraphTrainer  # noqa: PLC0415
    from xpnet.training.trainer import Trainer  # noqa: PLC0415

    class EagerTwin(GraphTrainer):
        """The graph trainer's own step with its own cuBLAS handle and stream, run eagerly for
        every batch: exactly what each replay of the captured step must reproduce."""

        def _batch(self, S, b, m):
            if self.fallback_reason is not None or m != self.batch_size:
                return Trainer._batch(self, S, b, m)
            self._step(S, m, mm=S.blas.matmul_rowmajor)

    return EagerTwin


def _snapshot(store):
    def callback(record, trainer):
        st = trainer.opt.state
        store.append({"p": backend.to_numpy(trainer.net.flat_params).copy(), "m": backend.to_numpy(st["m"]).copy(),
                      "v": backend.to_numpy(st["v"]).copy(), "t": int(backend.to_numpy(trainer._dev.counters.t)[0]),
                      "host_t": trainer.opt.t, "acc": record["train_acc"], "loss": record["train_loss"]})
    return callback


# ---- (c) the captured step -------------------------------------------------------------


def check_graph(target: Target, quick: bool, report: Report) -> list:
    if not target.is_gpu:
        return [Check("graph", "captured step vs eager step", SKIP, detail="not applicable on CPU")]
    from xpnet.optim.optimizers import Adam  # noqa: PLC0415
    from xpnet.optim.schedules import OneCycle  # noqa: PLC0415
    from xpnet.training.graph import GraphTrainer, capture_supported  # noqa: PLC0415

    ok, reason = capture_supported()
    if not ok:
        return [Check("graph", "captured step vs eager step", SKIP, detail=f"graph path unavailable: {reason}")]
    rows = []
    sizes, bs, epochs, l2, dropout, smoothing = (40, 64, 48, 10), 32, 2, 1e-3, 0.2, 0.1
    n = 5 * bs + 13  # 5 full batches (replays) and a tail of 13 rows (eager) per epoch
    for dtype in ("float64", "float32"):
        X, y = _synthetic(n, sizes[0], sizes[-1], 11, dtype, spread=1.0)
        runs, allocations = {}, [0]  # [captures watched, then the size of each allocation]
        trainers = {}
        for kind, cls in (("graph", GraphTrainer), ("eager", _eager_twin_class())):
            net = _net(target, sizes, dtype, seed=5, dropout=dropout, label_smoothing=smoothing)
            total = epochs * math.ceil(n / bs)
            opt = Adam(3e-3, schedule=OneCycle(total_steps=total))
            snaps: list = []
            trainer = cls(net, opt, X, y, batch_size=bs, l2=l2, seed=7, callbacks=[_snapshot(snaps)])
            if kind == "graph":
                trainer._capture = _counting_capture(trainer, target.xp, allocations)
            trainer.run(epochs)
            runs[kind], trainers[kind] = snaps, trainer
        g, e = trainers["graph"], trainers["eager"]
        tag = f"{dtype} {'-'.join(map(str, sizes))} dropout {dropout} smoothing {smoothing} L2 {l2} one-cycle"
        if g.fallback_reason is not None or e.fallback_reason is not None:
            rows.append(Check("graph", f"capture and replay, {dtype}", FAIL,
                              detail=f"fell back to the eager loop: {g.fallback_reason or e.fallback_reason}"))
            continue
        once = g.graph_captures == 1 and g.graph_replays > 0  # one capture serves both epochs and the lr table
        rows.append(Check("graph", f"capture and replay, {dtype}", PASS if once else FAIL,
                          detail=f"{g.graph_captures} capture(s), {g.graph_replays} replays over {epochs} epochs; {tag}"))
        for epoch, (a, b) in enumerate(zip(runs["graph"], runs["eager"]), start=1):
            where = "after epoch 1" if epoch == 1 else f"after epoch {epoch} (replays after t0 reset)"
            for key, label in (("p", "parameters"), ("m", "Adam m"), ("v", "Adam v")):
                # Same kernels, same cuBLAS settings and shapes, same order: bitwise (tolerance 0).
                rows.append(_row("graph", f"{label} bitwise, {dtype}, {where}",
                                 _measure(a[key], b[key], np.abs(b[key]), _u(dtype)), 0, "u·|eager|"))
            counts_ok = a["t"] == b["t"] == a["host_t"] == b["host_t"] and a["acc"] == b["acc"]
            rows.append(Check("graph", f"step counter and correct count, {dtype}, {where}", PASS if counts_ok else FAIL,
                              0.0 if counts_ok else math.inf, 0, "count",
                              f"device t {a['t']}/{b['t']}, host t {a['host_t']}/{b['host_t']}, "
                              f"train acc {a['acc']:.6f}/{b['acc']:.6f} (graph/eager)"))
            # The epoch loss sum is float64 in both; L2's per-block atomicAdd may order it differently:
            # ≤ (number of terms) roundings; a bound of 1e-12 relative holds for any order here.
            rel = abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-300)
            rows.append(Check("graph", f"epoch loss, {dtype}, {where}", PASS if rel <= 1e-12 else FAIL, rel, 1e-12,
                              "relative"))
        counted = allocations.pop(0)  # how many captures the counting allocator watched
        if not counted:
            rows.append(Check("graph", f"allocations during the capture, {dtype}", FAIL, detail="no capture was watched"))
        else:
            rows.append(Check("graph", f"allocations during the capture, {dtype}", PASS if not allocations else FAIL,
                              float(len(allocations)), 0, "count",
                              f"{sum(allocations)} bytes" if allocations else "counting allocator around the capture"))
        S = g._dev
        if getattr(S, "graph", None) is not None:
            kernels, gemms = expected_launches(len(sizes) - 1, dropout > 0, l2 > 0)
            try:
                census = graph_census(S.graph)
            except Exception as exc:  # a reading problem, not a fault of the graph
                rows.append(Check("graph", f"graph node census, {dtype}", INFO, detail=f"not read: {_exc_line(exc)}"))
            else:
                rows.append(_census_row(census, kernels, gemms, dtype))
                report.environment.setdefault("graph_census", {})[dtype] = census
        for trainer in (g, e):
            trainer.close()
    return rows


def _counting_capture(trainer, xp, allocations):
    """``trainer._capture`` with every allocation inside it appended to ``allocations`` (whose
    first entry counts the captures watched)."""
    capture = trainer._capture

    def counted(S):
        with count_allocations(xp) as calls:
            graph = capture(S)
        allocations[0] += 1
        allocations.extend(calls)
        return graph

    return counted


def _census_row(census, kernels, gemms, dtype) -> Check:
    types = census["types"]
    text = ", ".join(f"{k} {v}" for k, v in sorted(types.items())) or "no nodes parsed"
    detail = f"{census['nodes']} nodes ({text}); expected {kernels} xpnet kernels + {gemms} GEMMs"
    if census["source"] == "emulator":
        ok = census["nodes"] == kernels + gemms
        return Check("graph", f"graph node census, {dtype}", PASS if ok else FAIL, detail=detail)
    if not census["nodes"]:
        return Check("graph", f"graph node census, {dtype}", INFO, detail=f"DOT not parsed: {census['dot_head']!r}")
    # Only strong evidence fails: host copies, host callbacks or allocations inside the step, or a
    # count of xpnet's kernels (when the DOT names them) or of all kernels below what was launched.
    # cuBLAS may add its own kernels (split-K) or memsets: reported, not judged.
    named = census["xpnet_kernels"] or {}
    foreign = {k: v for k, v in types.items() if k in ("MEMCPY", "HOST", "MEM_ALLOC", "MEM_FREE")}
    too_few = 0 < types.get("KERNEL", 0) < kernels + gemms
    ok = not foreign and sum(named.values()) in (0, kernels) and not too_few
    detail += f"; xpnet kernels named: {sum(named.values())}" + (f"; unexpected nodes {foreign}" if foreign else "")
    return Check("graph", f"graph node census, {dtype}", PASS if ok else FAIL, detail=detail)


# ---- (d) training ----------------------------------------------------------------------


def check_training(target: Target, quick: bool, report: Report) -> list:
    from xpnet.optim.optimizers import Adam  # noqa: PLC0415
    from xpnet.optim.schedules import OneCycle  # noqa: PLC0415
    from xpnet.training.graph import make_trainer  # noqa: PLC0415
    from xpnet.training.trainer import Trainer, evaluate  # noqa: PLC0415

    rows = []
    # A short run of the default recipe's kind (one-cycle Adam, dropout, label smoothing) on
    # separable clusters: the loss must fall and accuracy be high (not a timing, not a tolerance).
    n, nf, k, epochs, bs = (1024, 32, 10, 3, 32) if quick else (2048, 64, 10, 4, 64)
    X, y = _synthetic(n, nf, k, 3, "float32")
    Xt, yt = _synthetic(512, nf, k, 3, "float32", sample_seed=1)  # the same centres, new samples
    net = _net(target, [nf, 128, k], "float32", seed=1, dropout=0.1, label_smoothing=0.1)
    opt = Adam(2e-3, schedule=OneCycle(total_steps=epochs * math.ceil(n / bs)))
    trainer = make_trainer(net, opt, X, y, batch_size=bs, seed=2)
    loop = "CUDA graph" if not getattr(trainer, "graph_reason", "") else f"eager ({trainer.graph_reason})"
    history = trainer.run(epochs)
    fallback = getattr(trainer, "fallback_reason", None)
    losses = history["train_loss"]
    test = evaluate(net, Xt, yt)
    good = losses[-1] < 0.5 * losses[0] and history["train_acc"][-1] >= 0.9 and test["accuracy"] >= 0.9
    status = PASS if good and not fallback else FAIL
    rows.append(Check("training", "synthetic clusters: loss falls, accuracy high", status,
                      detail=f"{nf}-128-{k} float32, {epochs} epochs on {n} rows, {loop}"
                             + (f", FELL BACK: {fallback}" if fallback else "")
                             + f"; loss {losses[0]:.3f} → {losses[-1]:.3f}, train acc {history['train_acc'][-1]:.3f}, "
                             f"held-out acc {test['accuracy']:.3f} (need loss halved, acc ≥ 0.9)"))
    if hasattr(trainer, "close"):
        trainer.close()
    rows.append(_one_epoch_against_cpu(target, make_trainer, Trainer))
    return rows


def _one_epoch_against_cpu(target, make_trainer, Trainer) -> Check:
    # float64, the same data order, dropout masks (a hash, the same everywhere), smoothing, L2 and
    # a one-cycle table: only the summation orders of GEMMs and reductions differ (≈1e-16 relative
    # per op). Adam's normalised update turns a relative gradient error into the same relative
    # update error, so after 16 steps the weights agree to far better than 1e-10·max|p| unless a
    # step is wrong (a wrong batch, mask or lr moves weights by ~lr = 1e-3).
    from xpnet.nn.model import MLP  # noqa: PLC0415
    from xpnet.ops import get_ops  # noqa: PLC0415
    from xpnet.optim.optimizers import Adam  # noqa: PLC0415
    from xpnet.optim.schedules import OneCycle  # noqa: PLC0415

    n, sizes, bs = 1000, [64, 96, 10], 64
    X, y = _synthetic(n, sizes[0], sizes[-1], 5, "float64", spread=1.0)
    kw = dict(dropout=0.1, label_smoothing=0.1, seed=4)
    steps = math.ceil(n / bs)
    results = {}
    for side in ("target", "cpu"):
        if side == "target":
            net = _net(target, sizes, "float64", **kw)
            trainer = make_trainer(net, Adam(1e-3, schedule=OneCycle(total_steps=steps)), X, y, batch_size=bs, l2=1e-3,
                                   seed=6)
            reason = getattr(trainer, "graph_reason", "")
            what = type(trainer).__name__ + (f" ({reason})" if reason else "")
        else:
            fast = target.is_gpu  # on the CPU: the Numba ops against the reference ops
            net = MLP(sizes, dtype="float64", fast_ops=fast, **kw)
            if not fast:
                net.ops = get_ops(np, fast=False)
            trainer = Trainer(net, Adam(1e-3, schedule=OneCycle(total_steps=steps), fast_ops=fast), X, y, batch_size=bs,
                              l2=1e-3, seed=6)
        history = trainer.run(1)
        results[side] = (backend.to_numpy(net.flat_params).copy(), history["train_loss"][0], history["train_acc"][0])
        if side == "target":
            fallback = getattr(trainer, "fallback_reason", None)
            if hasattr(trainer, "close"):
                trainer.close()
    (p, loss, acc), (q, loss_c, acc_c) = results["target"], results["cpu"]
    err = float(np.max(np.abs(p - q)) / np.max(np.abs(q)))
    rel_loss = abs(loss - loss_c) / abs(loss_c)
    other = "the CPU (NumPy + Numba)" if target.is_gpu else "the reference ops"
    ok = err <= 1e-10 and rel_loss <= 1e-10 and acc == acc_c and not fallback
    name = f"one float64 epoch of {'the device trainer' if target.is_gpu else 'the Numba ops'} vs {other}"
    return Check("training", name, PASS if ok else FAIL, err, 1e-10, "max|Δp|/max|p|",
                 f"{what}, {steps} steps; loss rel. diff {rel_loss:.1e}, train acc {acc:.4f} vs {acc_c:.4f}"
                 + (f"; FELL BACK: {fallback}" if fallback else ""))


# ---- (e) timings -----------------------------------------------------------------------


def _time(target, fn, reps: int) -> float:
    """Seconds per call: one warm call, then ``reps`` calls between two device syncs."""
    fn()
    target.sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    target.sync()
    return (time.perf_counter() - start) / reps


def _best(target, fn, reps: int) -> float:
    """Seconds of the fastest of ``reps`` synced calls (after a warm one): a floor is a best case."""
    fn()
    best = math.inf
    for _ in range(reps):
        target.sync()
        start = time.perf_counter()
        fn()
        target.sync()
        best = min(best, time.perf_counter() - start)
    return best


# The timed network and batch (the README's target case); tests shrink them for the emulator.
TIMING_SIZES = (784, 1024, 10)
TIMING_BATCH = 128


def check_timings(target: Target, quick: bool, report: Report) -> list:
    """Per-op and per-step µs against the device's measured copy bandwidth and GEMM FLOP rate."""
    reps = 3 if quick else 50
    rows, out = [], report.timings
    emulated = target.is_gpu and target.xp is np
    bw, flops, side = _floors(target, quick)
    out["floors"] = {"copy_bytes_per_s": bw, "gemm_float32_flop_per_s": flops}
    rows.append(Check("timings", "device floors", INFO,
                      detail=f"copy {bw / 1e9:.1f} GB/s (read + write), float32 GEMM {flops / 1e12:.2f} TFLOP/s "
                             f"({side}³); measured now" + (" on the kernel emulator: meaningless" if emulated else "")))
    rows += _time_ops(target, reps, bw, flops, out)
    rows += _time_steps(target, quick, bw, flops, out)
    return rows


def _floors(target, quick) -> tuple[float, float, int]:
    """(bytes/s of a large device-to-device copy, read + written; FLOP/s of a large float32 GEMM; its side)."""
    xp = target.xp
    nbytes = (16 if quick or not target.is_gpu else 256) * 2**20
    src = xp.zeros(nbytes // 4, np.float32)
    dst = xp.empty_like(src)
    bw = 2 * nbytes / _best(target, lambda: xp.copyto(dst, src), 5)
    side = 512 if (quick or not target.is_gpu) else 4096
    A, B = xp.ones((side, side), np.float32), xp.ones((side, side), np.float32)
    C = xp.empty((side, side), np.float32)
    flops = 2 * side**3 / _best(target, lambda: xp.matmul(A, B, out=C), 3 if quick else 5)
    return bw, flops, side


def _time_ops(target, reps, bw, flops, out) -> list:
    xp, ops, dt = target.xp, target.ops, np.dtype(np.float32)
    rng = np.random.default_rng(0)
    k, n, c = TIMING_SIZES
    m, n_params = TIMING_BATCH, k * n + n + n * c + c
    Z, dA = _dev(target, rng.standard_normal((m, n)).astype(dt)), _dev(target, rng.standard_normal((m, n)).astype(dt))
    b, A = _dev(target, rng.standard_normal(n).astype(dt)), xp.empty((m, n), dt)
    logits = _dev(target, rng.standard_normal((m, c)).astype(dt))
    labels = _dev(target, rng.integers(0, c, m).astype(np.int32))
    G, rows_ = xp.empty((m, c), dt), xp.empty(m, dt)
    db = xp.empty(n, dt)
    p, g = (_dev(target, rng.standard_normal(n_params).astype(dt)) for _ in range(2))
    mm, vv, t = xp.zeros(n_params, dt), xp.zeros(n_params, dt), xp.ones(1, np.int32)
    X, W = _dev(target, rng.standard_normal((m, k)).astype(dt)), _dev(target, rng.standard_normal((n, k)).astype(dt))
    Zk = xp.empty((m, n), dt)
    D, U = xp.empty((m, n), dt), xp.empty((m, n), dt)
    e = dt.itemsize
    cases = [  # name, call, bytes moved, FLOPs
        (f"bias_relu_forward {m}x{n}", lambda: ops.bias_relu_forward(Z, b, A), 3 * m * n * e, 0),
        (f"relu_backward {m}x{n}", lambda: ops.relu_backward(dA, Z, A), 3 * m * n * e, 0),
        (f"bias_grad {m}x{n}", lambda: ops.bias_grad(dA, db), m * n * e, 0),
        (f"dropout {m}x{n}", lambda: ops.dropout(Z, D, U, 0.1, 1, t, 0), 3 * m * n * e, 0),
        (f"softmax_xent {m}x{c}", lambda: ops.softmax_xent(logits, labels, G, rows_, 1 / m, 0.1, validate=False),
         3 * m * c * e, 0),
        (f"adam_step {n_params:,} params", lambda: ops.adam_step(p, g, mm, vv, t, 1e-9, 0.9, 0.999, 1e-8),
         7 * n_params * e, 0),
        (f"matmul {m}x{k} @ {k}x{n}ᵀ", lambda: ops.matmul(X, W, Zk, trans_b=True), (m * k + n * k + m * n) * e,
         2 * m * n * k),
    ]
    rows = []
    out["ops_us"] = {}
    for name, fn, nbytes, nflops in cases:
        sec = _time(target, fn, reps)
        floor = max(nbytes / bw, nflops / flops)
        out["ops_us"][name] = {"us": sec * 1e6, "floor_us": floor * 1e6}
        rows.append(Check("timings", f"{name}, float32", INFO, sec * 1e6, floor * 1e6, "µs / floor µs",
                          f"{sec / floor:.1f}x the floor" if floor > 0 else ""))
    return rows


def _time_steps(target, quick, bw, flops, out) -> list:
    """µs per training step (784-1024-10, batch 128, float32): eager, and the graph's replays."""
    from xpnet.optim.optimizers import Adam  # noqa: PLC0415
    from xpnet.training.graph import GraphTrainer, capture_supported  # noqa: PLC0415
    from xpnet.training.trainer import Trainer  # noqa: PLC0415

    bs, sizes = TIMING_BATCH, list(TIMING_SIZES)
    k, n, c = sizes
    shape = "-".join(map(str, sizes)) + f" batch {bs} float32"
    nb = 8 if quick else 64
    X, y = _synthetic(bs * nb, k, c, 0, "float32")
    n_params = k * n + n + n * c + c
    step_flops = 3 * 2 * bs * (k * n + n * c)  # forward + two backward GEMMs per layer (less dX of layer 0)
    step_bytes = 7 * n_params * 4 + 3 * n_params * 4  # Adam's traffic + reading W twice and writing dW
    floor = max(step_flops / flops, step_bytes / bw)
    rows, out["step_us"] = [], {"floor_us": floor * 1e6}
    eager = Trainer(_net(target, sizes, "float32"), Adam(1e-3), X, y, batch_size=bs)
    S = eager._device_state(50)  # an lr table longer than the steps timed (the CPU ops index it)
    S.perm[...] = target.xp.asarray(np.arange(bs * nb))

    def eager_step():
        if int(eager.opt.t) % (nb - 1) == 0:  # stay inside perm: restart the epoch (t0 = t)
            S.t0[...] = S.counters.t
        eager._step(S, bs)
        eager.opt.t += 1

    sec = _time(target, eager_step, max(2, nb // 2) if quick else 100)
    out["step_us"]["eager"] = sec * 1e6
    rows.append(Check("timings", f"eager step {shape}", INFO, sec * 1e6, floor * 1e6, "µs / floor µs"))
    if not target.is_gpu:
        rows.append(Check("timings", "graph step", SKIP, detail="not applicable on CPU"))
        return rows
    ok, reason = capture_supported()
    if not ok:
        rows.append(Check("timings", "graph step", SKIP, detail=f"graph path unavailable: {reason}"))
        return rows
    graph = GraphTrainer(_net(target, sizes, "float32"), Adam(1e-3), X, y, batch_size=bs)
    graph._device_state(50)  # the lr table's buffer, long enough for every timed replay; run(1) refills it in place
    graph.run(1)  # warm-up step, capture, replays
    G = graph._dev
    if G.graph is None:
        rows.append(Check("timings", "graph step", FAIL, detail=f"no graph after one epoch: {graph.fallback_reason}"))
        return rows

    def replays():
        # Every block of nb - 1 replays starts at t0 = t, so the gather stays inside perm (the
        # captured kernels read perm[(t - t0)·bs + r] with no bounds check of their own).
        with G.stream:
            G.t0[...] = G.counters.t
            for _ in range(nb - 1):
                G.graph.launch(G.stream)

    sec = _time(target, replays, 1 if quick else 20) / (nb - 1)
    out["step_us"]["graph"] = sec * 1e6
    ratio = f"eager/graph {out['step_us']['eager'] / (sec * 1e6):.1f}x" if sec > 0 else ""
    rows.append(Check("timings", f"graph replay {shape}", INFO, sec * 1e6, floor * 1e6, "µs / floor µs", ratio))
    graph.close()
    return rows
