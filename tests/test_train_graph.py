"""The CUDA-graph trainer: CPU-checkable parts (support rules, the cuBLAS row-major mapping,
kernel registration, imports without CuPy) and GPU parity with the eager Trainer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu
from tools.cuda_emulator import FakeStream, NumpyBlas, emulate_colmajor_gemm, emulate_matmul_rowmajor

from xpnet import backend
from xpnet.errors import ShapeError
from xpnet.nn.model import MLP
from xpnet.ops import cublas, cuda
from xpnet.optim.optimizers import SGD, Adam
from xpnet.training.trainer import Trainer
from xpnet.training.graph import graph_supported, make_trainer

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"


# ---- CPU-runnable --------------------------------------------------------------------


def test_graph_supported_reasons():
    net = MLP([8, 6, 3])
    assert graph_supported(net, Adam()) == (True, "")
    assert graph_supported(MLP([8, 6, 3], dropout=0.5, label_smoothing=0.1), Adam()) == (True, "")
    ok, reason = graph_supported(net, SGD(lr=0.1))
    assert not ok and "Adam" in reason and "sgd" in reason
    ok, reason = graph_supported(MLP([8, 6, 3], activation="sigmoid"), Adam())
    assert not ok and "ReLU" in reason
    ok, reason = graph_supported(MLP([8, 6, 1], output="sigmoid"), Adam())
    assert not ok and "softmax" in reason
    ok, reason = graph_supported(net, Adam(), augment=object())
    assert not ok and "augmentation" in reason


def test_make_trainer_is_eager_on_cpu(rng):
    X = rng.standard_normal((20, 8))
    y = rng.integers(0, 3, 20)
    trainer = make_trainer(MLP([8, 6, 3]), Adam(), X, y, batch_size=8)
    assert type(trainer) is Trainer and "CPU" in trainer.graph_reason
    trainer = make_trainer(MLP([8, 6, 3]), SGD(lr=0.1), X, y, batch_size=8)
    assert type(trainer) is Trainer and "Adam" in trainer.graph_reason
    trainer = make_trainer(MLP([8, 6, 3]), Adam(), X, y, batch_size=8, graph=False)
    assert type(trainer) is Trainer and "no-graph" in trainer.graph_reason
    history = trainer.run(1)
    assert len(history) == 1


SHAPES = [(1, 1, 1), (3, 5, 7), (7, 2, 4), (64, 784, 10), (10, 64, 33), (5, 1, 6)]


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("mkn", SHAPES)
def test_rowmajor_gemm_mapping_emulated(rng, trans_a, trans_b, mkn):
    M, K, N = mkn
    opA = rng.standard_normal((M, K))
    opB = rng.standard_normal((K, N))
    A = np.ascontiguousarray(opA.T if trans_a else opA)  # what is stored
    B = np.ascontiguousarray(opB.T if trans_b else opB)
    C = np.full((M, N), np.nan)
    emulate_matmul_rowmajor(A, B, C, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_allclose(C, opA @ opB, rtol=1e-12, atol=1e-12)


def test_gemm_args_for_the_mlp_products():
    # forward Z (64, 256) = X (64, 784) @ W.T, W (256, 784)
    g = cublas.gemm_args((64, 784), (256, 784), trans_b=True)
    assert g == cublas.GemmArgs(cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, 256, 64, 784, 784, 784, 256)
    # dW (256, 784) = dZ.T @ X, dZ (64, 256)
    g = cublas.gemm_args((64, 256), (64, 784), trans_a=True)
    assert g == cublas.GemmArgs(cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T, 784, 256, 64, 784, 256, 784)
    # dA (64, 256) = dZ (64, 10) @ W (10, 256)
    g = cublas.gemm_args((64, 10), (10, 256))
    assert g == cublas.GemmArgs(cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, 256, 64, 10, 256, 10, 256)
    with pytest.raises(ShapeError, match="op\\(A\\)"):
        cublas.gemm_args((4, 3), (4, 5))


def test_emulated_gemm_alpha_beta_and_leading_dimension(rng):
    # column-major A (2x3) inside a buffer with lda=4; C keeps beta * C
    A = rng.standard_normal(4 * 3)
    B = rng.standard_normal(3 * 2)
    C = rng.standard_normal(2 * 2)
    a = np.array([[A[i + j * 4] for j in range(3)] for i in range(2)])
    b = B.reshape(2, 3).T
    expected = 2.0 * a @ b + 0.5 * C.reshape(2, 2).T
    emulate_colmajor_gemm(0, 0, 2, 2, 3, 2.0, A, 4, B, 3, 0.5, C, 2)
    np.testing.assert_allclose(C.reshape(2, 2).T, expected)


def test_step_kernels_registered():
    names = cuda.KERNEL_NAMES["step.cu"]
    for name in ("gather_batch_f32", "gather_batch_f64", "bias_add_f64", "step_metrics_f32", "l2_grad_f64"):
        assert name in names
    source = (KERNELS / "step.cu").read_text(encoding="utf-8")
    assert "#include" not in source
    for kernel in names:
        assert re.search(rf"__global__ void {kernel}\(", source), kernel


def test_modules_import_without_cupy():
    code = (
        "import sys; sys.modules['cupy'] = None; sys.modules['cupy_backends'] = None\n"
        "import xpnet.training.graph as tg, xpnet.ops.cublas as cb\n"
        "assert cb.gemm_args((2, 3), (3, 4)).m == 4\n"
        "assert tg.capture_supported()[0] is False\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))


# ---- the captured step's logic on the CPU kernel emulator ------------------------------


@pytest.mark.parametrize("dtype, l2, smoothing", [("float64", 0.0, 0.0), ("float64", 0.1, 0.1), ("float32", 0.0, 0.0)])
def test_captured_step_equals_eager_steps_emulated(kernel_device, dtype, l2, smoothing):
    """Trainer._step as the graph captures it (CUDA kernels, the cuBLAS argument mapping), run
    kernel by kernel on the emulated kernels/*.cu: 3 steps give the reference ops' weights, loss
    sum and correct count, with the batch offset and Adam's t advancing on the "device"."""
    if kernel_device.name == "cuda":
        pytest.skip("on a GPU, test_graph_matches_eager_float64 runs the real capture")
    sizes, n, bs, steps = (50, 32, 16, 10), 200, 32, 3
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)

    graph_net = MLP(list(sizes), dtype=dtype, seed=3, label_smoothing=smoothing)
    graph_net.ops = cuda
    trainer = Trainer(graph_net, Adam(lr=1e-2), X, y, batch_size=bs, l2=l2)
    S = trainer._device_state(1)
    perm = trainer._epoch_order(0)
    S.perm[...] = perm
    for _ in range(steps):
        trainer._step(S, bs, mm=NumpyBlas().matmul_rowmajor)

    net, opt = MLP(list(sizes), dtype=dtype, seed=3, label_smoothing=smoothing, fast_ops=False), Adam(lr=1e-2, fast_ops=False)
    loss_sum, correct = 0.0, 0
    for i in range(steps):
        rows = perm[i * bs:(i + 1) * bs]
        loss, n_correct = net.loss_and_grad(X[rows], y[rows], l2=l2)
        opt.step(net.flat_params, net.flat_grads)
        loss_sum, correct = loss_sum + loss * bs, correct + n_correct

    assert int(S.counters.t[0]) == steps and int(S.counters.correct[0]) == correct
    rtol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(S.counters.loss[0], loss_sum, rtol=rtol)
    ref, ours = net.flat_params, graph_net.flat_params
    assert not np.array_equal(ours, MLP(list(sizes), dtype=dtype, seed=3).flat_params)  # it trained
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@pytest.fixture
def emulated_graph(kernel_device, request, monkeypatch):
    """GraphTrainer whose device is the kernel emulator: its buffers are NumPy arrays, its ops
    the emulated kernels, its stream's capture records the launches and GEMMs and its graph
    replays them. Returns ``build(sizes, dtype)``: a CPU network GraphTrainer accepts as a GPU one."""
    if kernel_device.name == "cuda":
        pytest.skip("on a GPU, the real GraphTrainer tests below run")
    from xpnet.training.graph import GraphTrainer

    emulator = request.getfixturevalue("cuda_emulator")

    def setup(self, S):
        self.net.ops = cuda
        S.stream, S.blas = FakeStream(emulator), NumpyBlas(emulator)

    monkeypatch.setattr(GraphTrainer, "_setup", setup)

    def build(sizes, dtype, gpu=True):
        net = MLP(list(sizes), dtype=dtype, seed=3)
        if gpu:
            net.device = backend.parse_device("gpu")
        return net

    return build


@pytest.mark.parametrize("dtype, l2, dropout", [("float64", 0.0, 0.0), ("float64", 0.1, 0.0), ("float32", 0.0, 0.0),
                                                ("float64", 0.0, 0.3)])
def test_graph_trainer_epochs_equal_eager_emulated(emulated_graph, dtype, l2, dropout):
    """The whole epoch loop (warm-up step, capture, replays, the eager tail batch, device
    counters read once per epoch) gives the eager Trainer's weights and history; with dropout,
    the captured masks change every replay exactly as the eager ones do."""
    from xpnet.training.graph import GraphTrainer

    X, y = _data(n=200, nf=24, k=5, seed=2, dtype=dtype)  # 200 rows / 32: 6 full batches + a tail of 8
    nets = [emulated_graph((24, 16, 12, 5), dtype, gpu=g) for g in (True, False)]
    for net in nets:
        net.dropout = dropout
    graph = GraphTrainer(nets[0], Adam(lr=1e-2), X, y, batch_size=32, l2=l2, seed=5)
    eager = Trainer(nets[1], Adam(lr=1e-2), X, y, batch_size=32, l2=l2, seed=5)
    h_graph, h_eager = graph.run(3), eager.run(3)
    assert graph.fallback_reason is None
    assert graph.graph_captures == 1 and graph.graph_replays == 5 + 6 + 6  # epoch 1 starts with the warm-up step
    assert graph.opt.t == eager.opt.t == 3 * 7
    rtol = 1e-12 if dtype == "float64" else 1e-4
    a, b = eager.net.flat_params, graph.net.flat_params
    np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())
    assert h_graph["train_acc"] == h_eager["train_acc"]
    np.testing.assert_allclose(h_graph["train_loss"], h_eager["train_loss"], rtol=rtol)


def test_graph_follows_an_lr_schedule_without_recapture_emulated(emulated_graph, monkeypatch):
    """One-cycle lr: the captured Adam reads each step's lr from the device table, so one capture
    serves the whole run, and the weights are those of Adam.step asking lr_at(t) on the host."""
    from xpnet.optim.schedules import OneCycle
    from xpnet.training.graph import GraphTrainer

    X, y = _data(n=200, nf=24, k=5, seed=2)
    runs = {}
    for graph in (True, False):
        opt = Adam(lr=3e-2, schedule=OneCycle(total_steps=3 * 7))
        cls = GraphTrainer if graph else Trainer
        trainer = cls(emulated_graph((24, 16, 5), "float64", gpu=graph), opt, X, y, batch_size=32, seed=1)
        if not graph:  # the host-driven update: opt.step -> lr_at(t), no table
            monkeypatch.setattr(opt, "capturable", False)
        runs[graph] = (trainer, trainer.run(3))
    graph, eager = runs[True][0], runs[False][0]
    assert eager._dev.lrs is None
    assert graph.fallback_reason is None and graph.graph_captures == 1
    np.testing.assert_allclose(graph.net.flat_params, eager.net.flat_params, rtol=1e-12, atol=1e-14)
    assert runs[True][1]["train_acc"] == runs[False][1]["train_acc"]


def test_graph_trainer_stop_and_resume_emulated(emulated_graph, monkeypatch):
    """A stop after the 3rd batch of epoch 2 hands the device sums over; resuming replays the
    same graph from the right offset and ends where an uninterrupted run ends."""
    from xpnet.training.graph import GraphTrainer

    X, y = _data(n=200, nf=24, k=5, seed=2)
    whole = GraphTrainer(emulated_graph((24, 16, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    h_whole = whole.run(2)
    split = GraphTrainer(emulated_graph((24, 16, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    batch = GraphTrainer._batch
    calls = []

    def stopping_batch(self, S, b, m):
        batch(self, S, b, m)
        calls.append(1)
        if len(calls) == 7 + 3:  # epoch 1 has 6 full batches and a tail
            self.stop_requested = True

    monkeypatch.setattr(GraphTrainer, "_batch", stopping_batch)
    split.run(2)
    assert split.epoch == 1 and split.batch == 3 and split._partial["seen"] == 96
    split.stop_requested = False
    h_split = split.run(2)
    assert split.graph_captures == 1
    np.testing.assert_allclose(split.net.flat_params, whole.net.flat_params, rtol=1e-12, atol=1e-14)
    assert h_split["train_acc"] == h_whole["train_acc"]
    np.testing.assert_allclose(h_split["train_loss"], h_whole["train_loss"], rtol=1e-12)


def test_graph_holds_the_buffers_it_writes_through_emulated(emulated_graph):
    """A callback that runs five other forward shapes evicts the captured batch size's
    activation buffers from the model's 4-entry cache. The graph keeps writing through their
    addresses, so it must hold them: the emulated graph, like a real one, keeps addresses only,
    and a replay through freed memory raises FreedMemoryError."""
    import gc

    from xpnet.training.graph import GraphTrainer

    X, y = _data(n=200, nf=24, k=5, seed=2)

    def other_shapes(record, trainer):
        for m in (3, 5, 7, 9, 11):
            trainer.net.forward(X[:m])
        gc.collect()

    graph = GraphTrainer(emulated_graph((24, 16, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1,
                         callbacks=[other_shapes])
    eager = Trainer(emulated_graph((24, 16, 5), "float64", gpu=False), Adam(lr=1e-2), X, y, batch_size=32, seed=1,
                    callbacks=[other_shapes])
    h_graph, h_eager = graph.run(3), eager.run(3)
    assert graph.fallback_reason is None and graph.graph_captures == 1
    np.testing.assert_allclose(graph.net.flat_params, eager.net.flat_params, rtol=1e-12, atol=1e-14)
    assert h_graph["train_acc"] == h_eager["train_acc"]


def test_changing_dropout_between_runs_recaptures_emulated(emulated_graph):
    """The dropout rate and seed are kernel arguments baked into the graph: changing either
    between run() calls must recapture (the old graph would replay the old rate, and from 0 to
    above 0 write masks into buffers that do not exist). Each run matches the eager Trainer."""
    from xpnet.training.graph import GraphTrainer

    X, y = _data(n=200, nf=24, k=5, seed=2)
    graph = GraphTrainer(emulated_graph((24, 16, 12, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    eager = Trainer(emulated_graph((24, 16, 12, 5), "float64", gpu=False), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    schedule = [(0.0, 0), (0.3, 0), (0.3, 1), (0.1, 1), (0.0, 1)]  # (rate, seed offset) per epoch
    for epoch, (rate, seed) in enumerate(schedule, start=1):
        for trainer in (graph, eager):
            trainer.net.dropout = rate
            trainer.net.dropout_seed = 1000 + seed
        graph.run(epoch)
        eager.run(epoch)
        np.testing.assert_allclose(graph.net.flat_params, eager.net.flat_params, rtol=1e-12, atol=1e-14)
    assert graph.fallback_reason is None and graph.graph_captures == len(schedule)
    assert graph.history["train_acc"] == eager.history["train_acc"]


@pytest.mark.parametrize("dropped", ["first", "last"])
def test_a_broken_capture_is_caught_by_the_eager_shadow_step_emulated(emulated_graph, monkeypatch, dropped):
    """A capture that misses an operation (the batch gather, or Adam) raises nothing; comparing
    its first replay with the eager step of the same batch finds it. The run warns once and goes
    on eagerly from the eager step's result, ending where the eager Trainer ends."""
    from xpnet.training.graph import GraphTrainer

    end_capture = FakeStream.end_capture

    def lossy_end_capture(self):
        graph = end_capture(self)
        graph.operations.pop(0 if dropped == "first" else -1)
        return graph

    monkeypatch.setattr(FakeStream, "end_capture", lossy_end_capture)
    X, y = _data(n=200, nf=24, k=5, seed=2)
    graph = GraphTrainer(emulated_graph((24, 16, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    eager = Trainer(emulated_graph((24, 16, 5), "float64", gpu=False), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    with pytest.warns(RuntimeWarning, match="differs from the eager step"):
        h_graph = graph.run(2)
    h_eager = eager.run(2)
    assert "checking the capture at batch 1 of epoch 1" in graph.fallback_reason
    assert ("parameters differ" in graph.fallback_reason) and graph.graph_replays == 0
    np.testing.assert_allclose(graph.net.flat_params, eager.net.flat_params, rtol=1e-12, atol=1e-14)
    assert h_graph["train_acc"] == h_eager["train_acc"]


def test_a_lost_replay_is_a_device_error_at_the_epoch_end_emulated(emulated_graph, monkeypatch):
    """The device's step counter must equal the host's at each epoch's end: a replay that never
    ran (here the 4th launch is dropped) shifts every later batch and lr, so it stops the run."""
    from tools.cuda_emulator.emulator import FakeGraph

    from xpnet.errors import DeviceError
    from xpnet.training.graph import GraphTrainer

    launch, calls = FakeGraph.launch, []

    def sometimes_lost(self, stream=None):
        calls.append(1)
        if len(calls) != 4:
            launch(self, stream)

    monkeypatch.setattr(FakeGraph, "launch", sometimes_lost)
    X, y = _data(n=200, nf=24, k=5, seed=2)
    graph = GraphTrainer(emulated_graph((24, 16, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    with pytest.raises(DeviceError, match="step counter is 6 but the host counted 7"):
        graph.run(2)


def test_emulated_graph_refuses_to_replay_into_freed_memory(cuda_emulator):
    """The emulator's own check, on a deliberately broken capture: a temporary allocated during
    the capture and freed after it (what a CUDA pool would hand out again)."""
    from tools.cuda_emulator import FreedMemoryError, install

    stream = FakeStream(cuda_emulator)
    kept, b = np.zeros((4, 3)), np.ones(3)
    with pytest.MonkeyPatch.context() as mp:
        install(mp, cuda_emulator)
        stream.begin_capture()
        cuda.bias_add(kept, b)
        cuda.bias_add(np.zeros((4, 3)), b)  # a temporary: gone once the capture ends
        graph = stream.end_capture()
        with pytest.raises(FreedMemoryError, match="freed memory"):
            graph.launch()
    assert (kept == 1).all()  # the ops before the freed one ran


def test_graph_trainer_falls_back_when_capture_fails_emulated(emulated_graph, monkeypatch):
    """A capture that fails warns once and finishes the run eagerly, with the same result."""
    from xpnet.training.graph import GraphTrainer

    def refuse(self):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(FakeStream, "begin_capture", refuse)
    X, y = _data(n=200, nf=24, k=5, seed=2)
    graph = GraphTrainer(emulated_graph((24, 16, 5), "float64"), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    eager = Trainer(emulated_graph((24, 16, 5), "float64", gpu=False), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    with pytest.warns(RuntimeWarning, match="capture refused"):
        h_graph = graph.run(2)
    h_eager = eager.run(2)
    assert "batch 1 of epoch 1" in graph.fallback_reason and graph.graph_replays == 0
    np.testing.assert_allclose(graph.net.flat_params, eager.net.flat_params, rtol=1e-12, atol=1e-14)
    assert h_graph["train_acc"] == h_eager["train_acc"]


@pytest.mark.parametrize("capture_fails", [False, True, "wrong"])
def test_cli_train_on_the_emulated_gpu(emulated_graph, monkeypatch, tmp_path, capsys, capture_fails):
    """``xpnet train --device gpu`` end to end, the device being the emulator: it says which loop
    runs, and a failed capture, or one whose first replay differs from the eager step, is one
    line, not a warning with a traceback-like source line."""
    from conftest import run_cli, write_synthetic_idx

    import xpnet.training.graph as train_graph

    monkeypatch.setattr(backend, "get_xp", lambda device: np)
    monkeypatch.setattr(backend, "device_name", lambda device: "emulated GPU")
    monkeypatch.setattr(train_graph, "capture_supported", lambda: (True, ""))
    if capture_fails is True:
        def refuse(self):
            raise RuntimeError("capture refused")

        monkeypatch.setattr(FakeStream, "begin_capture", refuse)
    elif capture_fails == "wrong":
        end_capture = FakeStream.end_capture

        def without_adam(self):
            graph = end_capture(self)
            graph.operations.pop()
            return graph

        monkeypatch.setattr(FakeStream, "end_capture", without_adam)
    data = write_synthetic_idx(tmp_path / "data", n_train=300, n_test=60)
    code, out, err = run_cli(["train", "--data-dir", data, "--device", "gpu", "--recipe", "plain", "--hidden", "16", "--epochs", "2",
                              "--batch-size", "64", "--out", tmp_path / "m.npz"], capsys)
    assert code == 0, err
    assert "GPU loop: one CUDA graph replayed per batch" in out
    assert ("CUDA graph failed (running batch 1 of epoch 1: RuntimeError: capture refused)" in out) == (capture_fails is True)
    wrong = [line for line in out.splitlines() if "differs from the eager step" in line]
    assert len(wrong) == (capture_fails == "wrong")
    assert not wrong or wrong[0].startswith("CUDA graph failed (checking the capture at batch 1 of epoch 1: DeviceError")
    assert "Warning" not in err
    assert "test accuracy" in out and (tmp_path / "m.npz").exists()
    code, out, _ = run_cli(["train", "--data-dir", data, "--device", "gpu", "--no-graph", "--hidden", "16",
                            "--epochs", "1", "--out", tmp_path / "m2.npz"], capsys)
    assert code == 0 and "GPU loop: eager, disabled (--no-graph)" in out


# ---- GPU ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def _data(n=1000, nf=784, k=10, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, nf)) * 0.5
    y = rng.integers(0, k, n)
    return X.astype(dtype), y


def _pair(dtype, sizes=(784, 256, 10)):
    from xpnet.training.graph import GraphTrainer

    def build():
        return MLP(list(sizes), device="gpu", dtype=dtype, seed=3)

    return build, GraphTrainer


@gpu
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_graph_matches_eager_float64(cp, l2):
    build, GraphTrainer = _pair("float64")
    X, y = _data()
    eager_net, graph_net = build(), build()
    eager = Trainer(eager_net, Adam(lr=1e-3), X, y, batch_size=64, l2=l2, seed=5)
    fast = GraphTrainer(graph_net, Adam(lr=1e-3), X, y, batch_size=64, l2=l2, seed=5)
    with _no_warning():
        h_graph = fast.run(2)
    h_eager = eager.run(2)
    assert fast.fallback_reason is None
    assert fast.graph_captures == 1 and fast.graph_replays == 15 + 14  # epoch 1: warm-up step, then replays
    assert fast.opt.t == eager.opt.t == 2 * 16
    a, b = eager_net.flat_params.get(), graph_net.flat_params.get()
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())
    assert np.linalg.norm(b - a) <= 1e-12 * np.linalg.norm(a)
    for r1, r2 in zip(h_eager.records, h_graph.records):
        assert r1["train_acc"] == r2["train_acc"]
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-10)


@gpu
def test_two_replays_equal_three_eager_steps_and_capture_allocates_nothing(cp):
    build, GraphTrainer = _pair("float64", (50, 32, 16, 10))
    X, y = _data(n=256, nf=50)
    t1 = GraphTrainer(build(), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    t2 = GraphTrainer(build(), Adam(lr=1e-2), X, y, batch_size=32, seed=1)
    order = t1._epoch_order(0)
    states = []
    for t in (t1, t2):
        S = t._device_state(1)
        with S.stream:
            S.perm[...] = cp.asarray(order)
            S.t0.fill(0)
            S.counters.t.fill(0)
        S.stream.synchronize()  # inputs written before a replay on this non-blocking stream reads them
        states.append(S)
    S1, S2 = states
    with S1.stream:
        for _ in range(3):
            t1._step(S1, 32, mm=S1.blas.matmul_rowmajor)
        S1.stream.synchronize()
    pool, allocations = cp.get_default_memory_pool(), []
    with S2.stream:
        t2._step(S2, 32, mm=S2.blas.matmul_rowmajor)  # warm-up
        S2.stream.synchronize()
        # Count every allocation: a temporary allocated and freed inside the capture leaves
        # used_bytes() unchanged, yet the graph keeps its address while the pool reuses it.
        cp.cuda.set_allocator(lambda size: (allocations.append(size), pool.malloc(size))[1])
        try:
            graph = t2._capture(S2)
        finally:
            cp.cuda.set_allocator(pool.malloc)
        assert allocations == [], f"the capture allocated {allocations} bytes"
        graph.launch(S2.stream)
        graph.launch(S2.stream)
        S2.stream.synchronize()
    assert int(S2.counters.t.get()[0]) == 3 == int(S1.counters.t.get()[0])
    assert int(S2.counters.correct.get()[0]) == int(S1.counters.correct.get()[0])
    np.testing.assert_allclose(S2.counters.loss.get(), S1.counters.loss.get(), rtol=1e-12)
    a, b = t1.net.flat_params.get(), t2.net.flat_params.get()
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())
    t1.close()
    t2.close()


@gpu
def test_float32_graph_trains(cp):
    build, GraphTrainer = _pair("float32", (784, 128, 10))
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 784)).astype(np.float32)
    y = rng.integers(0, 10, 2000)
    X = centers[y] + 0.5 * rng.standard_normal((2000, 784)).astype(np.float32)
    trainer = make_trainer(build(), Adam(lr=1e-3), X, y, batch_size=128)
    assert isinstance(trainer, GraphTrainer), trainer.graph_reason
    history = trainer.run(3)
    assert trainer.fallback_reason is None and trainer.graph_replays > 0
    losses = history["train_loss"]
    assert losses[-1] < losses[0] and history["train_acc"][-1] > 0.5


@gpu
def test_make_trainer_gpu_falls_back_for_unsupported(cp):
    X, y = _data(n=100, nf=20)
    net = MLP([20, 8, 10], device="gpu", dtype="float64", activation="tanh")
    trainer = make_trainer(net, Adam(), X, y, batch_size=16)
    assert type(trainer) is Trainer and "ReLU" in trainer.graph_reason


class _no_warning:
    """Fail if the graph path warns (i.e. fell back to the eager loop)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", RuntimeWarning)
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
