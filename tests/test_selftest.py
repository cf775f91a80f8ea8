"""``xpnet selftest``: passes on the CPU (Numba kernels) and on the CUDA kernel emulator (the
CUDA wrappers, the cuBLAS argument mapping, the emulated graph capture); a broken op FAILs
it with a non-zero exit; ``--json`` holds every row."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from conftest import run_cli

from xpnet import selftest
from xpnet.ops import reference

# The emulated-GPU wiring of the graph tests (GraphTrainer's stream and cuBLAS handle on the
# kernel emulator), reused rather than copied.
from test_train_graph import emulated_graph  # noqa: F401  (a pytest fixture)

CONTRACT = sorted(reference.OPS)


def test_the_contract_lists_every_op_of_the_reference():
    helpers = {"check_labels", "check_step", "step_lr", "dropout_stream", "dropout_threshold", "dense_views"}
    public = {name for name, fn in inspect.getmembers(reference, inspect.isfunction)
              if fn.__module__ == reference.__name__ and not name.startswith("_")}
    assert public - helpers == set(reference.OPS) | set(reference.COMPOSITES)


def _op_names(checks) -> set:
    return {c["name"].split()[0] for c in checks if c["section"] == "ops"}


@pytest.fixture(scope="module")
def cpu_json(tmp_path_factory):
    """One CPU run through the CLI (in-process), its stdout and its JSON file."""
    pytest.importorskip("numba")
    from xpnet.cli import main

    path = tmp_path_factory.mktemp("selftest") / "cpu.json"
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["selftest", "--device", "cpu", "--quick", "--json", str(path)])
    return code, out.getvalue(), err.getvalue(), json.loads(path.read_text(encoding="utf-8"))


def test_cpu_selftest_passes(cpu_json):
    code, out, err, data = cpu_json
    assert code == 0, out + err
    assert data["ok"] is True and data["counts"]["FAIL"] == 0 and data["device"] == "cpu"
    assert "selftest passed on cpu" in out
    for title in selftest.SECTIONS.values():
        assert f"== {title} · cpu ==" in out


def test_cpu_selftest_covers_the_contract_shapes_and_dtypes(cpu_json):
    checks = cpu_json[3]["checks"]
    assert set(CONTRACT) <= _op_names(checks), set(CONTRACT) - _op_names(checks)
    ops = [c for c in checks if c["section"] == "ops"]
    for dtype in ("float32", "float64"):
        for shape in selftest.SHAPES:
            assert any(f"bias_grad {dtype} {shape}" == c["name"] for c in ops)
    for trans in ("NN", "NT", "TN", "TT"):
        assert any(c["name"].startswith("matmul ops.matmul float32 128x784x1024 " + trans) for c in ops)
    exact = [c for c in ops if c["tolerance"] == 0]
    assert exact and all(c["error"] == 0 for c in exact)
    assert all(c["status"] == "PASS" and c["error"] <= c["tolerance"] for c in ops)


def test_cpu_json_content(cpu_json):
    data = cpu_json[3]
    assert {"xpnet", "device", "quick", "ok", "counts", "environment", "timings", "checks", "seconds"} <= set(data)
    assert data["quick"] is True
    env = data["environment"]
    assert env["graph_path"] == {"available": False, "reason": "not applicable on CPU"}
    assert isinstance(env["numerics_env"], dict) and env["ops"] == "xpnet.ops.cpu"
    graph = [c for c in data["checks"] if c["section"] == "graph"]
    assert graph and all(c["status"] == "SKIP" and "not applicable on CPU" in c["detail"] for c in graph)
    training = [c for c in data["checks"] if c["section"] == "training"]
    assert len(training) == 2 and all(c["status"] == "PASS" for c in training)
    assert data["timings"]["floors"]["copy_bytes_per_s"] > 0
    assert data["timings"]["step_us"]["eager"] > 0 and "graph" not in data["timings"]["step_us"]
    for c in data["checks"]:
        assert c["status"] in ("PASS", "FAIL", "SKIP", "INFO") and set(c) == {
            "section", "name", "status", "error", "tolerance", "unit", "detail"}


def _no_constants(name):
    raise AssertionError(f"{name} in the JSON: not strict JSON")


def _only_ops(monkeypatch):
    """Keep the slow sections and the largest shape out of the broken-op tests (they test the ops rows)."""
    for name in ("check_graph", "check_training", "check_timings"):
        monkeypatch.setattr(selftest, name, lambda target, quick, report: [])
    monkeypatch.setattr(selftest, "SHAPES", [(1, 1), (7, 33), (3, 1023)])


def test_an_op_one_ulp_off_fails_with_exit_1(monkeypatch, tmp_path, capsys):
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    real = cpu.bias_relu_forward

    def one_ulp_off(Z, b, A):
        real(Z, b, A)
        A.reshape(-1)[-1] = np.nextafter(A.reshape(-1)[-1], np.inf, dtype=A.dtype)
        return A

    monkeypatch.setattr(cpu, "bias_relu_forward", one_ulp_off)
    _only_ops(monkeypatch)
    code, out, err = run_cli(["selftest", "--device", "cpu", "--json", tmp_path / "r.json"], capsys)
    assert code == 1
    assert "error: 6 check(s) failed: bias_relu_forward float32 (1, 1) A" in err
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"), parse_constant=_no_constants)
    failed = [c for c in data["checks"] if c["status"] == "FAIL"]
    assert data["ok"] is False and {c["name"].split()[0] for c in failed} == {"bias_relu_forward"}
    assert all(c["name"].endswith(" A") and c["tolerance"] == 0 and float(c["error"]) > 0 for c in failed)
    assert any(c["error"] == "inf" for c in failed)  # a 1-ulp error on an exact 0 (ReLU's clipped elements)
    assert "FAIL  bias_relu_forward float64 (3, 1023) A" in out


def test_an_unwritten_element_fails(monkeypatch):
    pytest.importorskip("numba")
    from xpnet.ops import cpu

    real = cpu.bias_grad

    def skips_the_last_column(dZ, db):
        full = np.empty_like(db)
        real(dZ, full)
        db[:-1] = full[:-1]  # db[-1] keeps what was there (the selftest's NaN)
        return db

    monkeypatch.setattr(cpu, "bias_grad", skips_the_last_column)
    _only_ops(monkeypatch)
    report = selftest.run("cpu", quick=True)
    failed = report.failed
    assert failed and {c.name.split()[0] for c in failed} == {"bias_grad"}
    assert all(c.error == np.inf and "1 of" in c.detail and "not finite" in c.detail for c in failed)


def test_a_tf32_like_gemm_is_named(monkeypatch):
    """A float32 GEMM that rounds its inputs to TF32's 10 mantissa bits fails the TF32 probe
    and the GEMM rows with the variable to look at."""
    from xpnet.ops import cpu

    def tf32(A, B, C, trans_a=False, trans_b=False):
        def cut(x):
            if x.dtype != np.float32:
                return x
            bits = x.view(np.uint32) + np.uint32(1 << 12)  # round to nearest on the 13 dropped bits
            return (bits & np.uint32(0xFFFFE000)).view(np.float32)
        return reference.matmul(cut(A), cut(B), C, trans_a, trans_b)

    monkeypatch.setattr(cpu, "matmul", tf32)
    _only_ops(monkeypatch)
    report = selftest.run("cpu", quick=True)
    names = {c.name for c in report.failed}
    assert "TF32 probe, ops.matmul" in names
    assert all(c.name.startswith(("TF32", "matmul ops.matmul float32")) for c in report.failed)
    assert any("TF32 is on" in c.detail and "NVIDIA_TF32_OVERRIDE" in c.detail for c in report.failed
               if c.name.startswith("matmul"))


def test_graph_census_and_expected_launches():
    class Fake:
        operations = [None] * 27

    assert selftest.expected_launches(3, dropout=True, l2=True) == (19, 8)
    assert selftest.expected_launches(2, dropout=False, l2=False) == (9, 5)  # the review's 14 for 784-1024-10
    assert selftest.graph_census(Fake()) == {"nodes": 27, "types": {"KERNEL": 27}, "xpnet_kernels": None,
                                             "source": "emulator"}

    class Dot:  # cudaGraphDebugDotPrint's verbose format, as a real dump prints it (kernel, GEMM, copy, edge)
        @staticmethod
        def debug_dot_str(flags):
            return r'''digraph dot {
subgraph cluster_1 {
label="graph_1" graph[style="dashed"];
"graph_1_node_0"[style="bold" shape="record" label="{KERNEL
| {ID | 0 (topoId: 2) | bias_add_f32\<\<\<1,256,0\>\>\>}
| {{node handle | func handle} | {0x000055E7277A5C20 | 0x000055E7270A5A90}}
| {cooperative | 0}
}"];
"graph_1_node_1"[style="bold" shape="record" label="{KERNEL
| {ID | 1 (topoId: 1) | sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32_warpgroupsize1x1x1\<\<\<8,128,0\>\>\>}
}"];
"graph_1_node_2"[style="solid" shape="record" label="{
MEMCPY
| {{ID | node handle} | {2 (topoId: 0) | 0x000055E7277A6A00}}
}"];
"graph_1_node_0" -> "graph_1_node_1" [headlabel=0];
"graph_1_node_1" -> "graph_1_node_2" [headlabel=0];
}
}
'''

    census = selftest.graph_census(Dot())
    assert census["nodes"] == 3 and census["types"] == {"KERNEL": 2, "MEMCPY": 1}
    assert census["xpnet_kernels"] == {"bias_add_f32": 1}
    row = selftest._census_row(census, 1, 1, "float32")
    assert row.status == "FAIL" and "MEMCPY" in row.detail  # a host copy inside the step


def test_count_allocations_on_numpy():
    with selftest.count_allocations(np) as calls:
        np.empty(10)
        np.zeros_like(np.ones(3))  # two more: ones and zeros_like
    assert len(calls) == 3 and calls[0] == 80
    assert np.empty is not None and "wrapper" not in np.empty.__name__


# ---- the CUDA part, on the kernel emulator ----------------------------------------------


@pytest.fixture
def emulated_gpu(emulated_graph, kernel_device, monkeypatch):  # noqa: F811
    """``--device gpu`` whose arrays are NumPy arrays and whose kernels are kernels/*.cu on the
    emulator (as test_cli_train_on_the_emulated_gpu wires it); timings at a small shape."""
    if kernel_device.name != "emulated":
        pytest.skip("once, threads in lane order (the reversed order is covered by test_ops)")
    import xpnet.training.graph as train_graph
    from xpnet import backend

    monkeypatch.setattr(backend, "get_xp", lambda device: np)
    monkeypatch.setattr(backend, "device_name", lambda device: "emulated GPU")
    monkeypatch.setattr(train_graph, "capture_supported", lambda: (True, ""))
    monkeypatch.setattr(selftest, "TIMING_SIZES", (50, 64, 10))
    monkeypatch.setattr(selftest, "TIMING_BATCH", 32)


def test_gpu_selftest_passes_on_the_emulator(emulated_gpu, tmp_path, capsys):
    code, out, err = run_cli(["selftest", "--device", "gpu", "--quick", "--json", tmp_path / "gpu.json"], capsys)
    assert code == 0, out + err
    data = json.loads((tmp_path / "gpu.json").read_text(encoding="utf-8"))
    assert data["ok"] and data["device"] == "gpu:0" and data["environment"]["ops"] == "xpnet.ops.cuda"
    checks = data["checks"]
    assert set(CONTRACT) <= _op_names(checks)
    cublas_rows = [c for c in checks if c["name"].startswith("matmul cuBLAS row-major")]
    assert len(cublas_rows) == 2 * 4 * len(selftest.SHAPES) and all(c["status"] == "PASS" for c in cublas_rows)
    graph = {c["name"]: c for c in checks if c["section"] == "graph"}
    for dtype in ("float64", "float32"):
        assert graph[f"capture and replay, {dtype}"]["status"] == "PASS"
        assert "1 capture(s)" in graph[f"capture and replay, {dtype}"]["detail"]
        for label in ("parameters", "Adam m", "Adam v"):
            row = graph[f"{label} bitwise, {dtype}, after epoch 2 (replays after t0 reset)"]
            assert row["status"] == "PASS" and row["error"] == 0
        assert graph[f"allocations during the capture, {dtype}"]["error"] == 0
        census = graph[f"graph node census, {dtype}"]
        assert census["status"] == "PASS" and census["detail"].startswith("27 nodes")
    training = [c for c in checks if c["section"] == "training"]
    assert all(c["status"] == "PASS" for c in training) and "GraphTrainer" in training[1]["detail"]
    assert "CUDA graph" in training[0]["detail"]
    assert data["timings"]["step_us"]["graph"] > 0 and data["timings"]["step_us"]["eager"] > 0


def test_gpu_selftest_catches_a_capture_that_allocates(emulated_gpu, monkeypatch):
    """A buffer made inside the capture (here: the gradient buffers, dropped just before it)
    is counted, and fails the row."""
    from xpnet.training.graph import GraphTrainer

    capture = GraphTrainer._capture

    def capture_after_losing_buffers(self, S):
        for bufs in self.net._buffers.values():
            bufs.pop("G", None)
        return capture(self, S)

    monkeypatch.setattr(GraphTrainer, "_capture", capture_after_losing_buffers)
    target = selftest.make_target("gpu")
    rows = selftest.check_graph(target, True, selftest.Report("gpu:0", True))
    alloc = [r for r in rows if r.name.startswith("allocations during the capture")]
    assert alloc and all(r.status == "FAIL" and r.error >= 1 for r in alloc)


def test_gpu_selftest_catches_a_value_baked_into_the_graph(emulated_gpu, monkeypatch):
    """An Adam wrapper that reads the step count on the host at launch time bakes t into the
    captured graph: every replay then uses the capture's t, and the bitwise rows fail."""
    from xpnet.ops import cuda

    real = cuda.adam_step

    def host_t(p, g, m, v, t, lr, beta1, beta2, eps):
        return real(p, g, m, v, int(np.asarray(t).reshape(-1)[0]), lr, beta1, beta2, eps)

    monkeypatch.setattr(cuda, "adam_step", host_t)
    target = selftest.make_target("gpu")
    rows = selftest.check_graph(target, True, selftest.Report("gpu:0", True))
    # Either the trainer's own check of its first replay catches it (the run falls back, a FAIL row
    # says why), or the bitwise rows do: both are a failing selftest.
    fell_back = [r for r in rows if r.status == "FAIL" and "first replay differs" in (r.detail or "")]
    params = [r for r in rows if r.name.startswith("parameters bitwise")]
    assert fell_back or (params and all(r.status == "FAIL" and r.error > 0 for r in params)), rows


def test_bad_input_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XPNET_NO_GPU", "1")
    code, _, err = run_cli(["selftest", "--device", "tpu"], capsys)
    assert code == 1 and err.strip() == "error: unknown device 'tpu': use 'cpu', 'gpu' or 'gpu:N'"
    code, _, err = run_cli(["selftest", "--json", tmp_path / "missing" / "r.json"], capsys)
    assert code == 1 and err.startswith("error: cannot write") and "Traceback" not in err


def test_a_broken_cuda_kernel_fails_on_the_emulator(emulated_gpu, monkeypatch, tmp_path, capsys):
    """The CUDA wrappers' results are what is checked: one element left unwritten by the
    (emulated) relu_backward kernel fails its rows and the exit status."""
    from xpnet.ops import cuda

    real = cuda.relu_backward

    def leaves_one(dA, Z, dZ):
        keep = dZ.reshape(-1)[-1].copy() if dZ is not dA else None
        real(dA, Z, dZ)
        if keep is not None:
            dZ.reshape(-1)[-1] = keep  # the NaN the selftest filled in
        return dZ

    monkeypatch.setattr(cuda, "relu_backward", leaves_one)
    _only_ops(monkeypatch)
    code, out, err = run_cli(["selftest", "--device", "gpu", "--quick"], capsys)
    assert code == 1 and "check(s) failed: relu_backward float32 (1, 1)" in err
    assert "FAIL  relu_backward float64 (3, 1023) " in out and "1 of 3069 elements not finite" in out
