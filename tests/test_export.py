"""xpnet export / import: ONNX Runtime and PyTorch give xpnet's probabilities, and the way back is exact.

The MNIST tests train a small 784-32-10 model once per module on real images (a few
seconds) and compare onnxruntime against `xpnet predict` on real test images; the
configuration tests use random networks of every activation × output × normalizer kind.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import xpnet
from conftest import SHARED_MNIST, run_cli
from xpnet.errors import ConfigError, ModelFileError, ShapeError
from xpnet.io.interop import ExportError, export_onnx, export_torch, from_torch, to_onnx, torch_module

try:  # [dev] installs both; without them only the PyTorch tests run
    import onnx
    import onnxruntime as ort
except ImportError:  # pragma: no cover
    onnx = ort = None
needs_onnx = pytest.mark.skipif(onnx is None, reason="needs onnx and onnxruntime: pip install 'xpnet[onnx]'")

TOL = 1e-5


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _ort(path, pixels):
    return _session(path).run(None, {"pixels": np.asarray(pixels, dtype=np.float32)})[0]


@pytest.fixture(scope="module")
def mnist():
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST (train + test) not found in {SHARED_MNIST}")
    return xpnet.load_dataset("mnist", data_dir=SHARED_MNIST)


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    """784-32-10 ReLU/softmax, 1 epoch on 4,000 real training images, saved like `xpnet train` saves."""
    X = mnist.X_train[:4000]
    norm = xpnet.Normalizer().fit(X)
    net = xpnet.MLP([784, 32, 10], seed=0)
    xpnet.fit(net, xpnet.optim.Adam(3e-3), norm.transform(X), mnist.y_train[:4000], epochs=1, batch_size=64)
    net.normalizer, net.class_names = norm, list(mnist.class_names)
    path = tmp_path_factory.mktemp("export") / "mnist32.npz"
    net.save(path)
    return path


# ---------------------------------------------------------------------------------------------- ONNX on MNIST
@needs_onnx
def test_onnx_equals_xpnet_predict_on_real_mnist(trained, mnist, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, err = run_cli(["export", trained, "--out", out], capsys)
    assert code == 0, err
    assert "checked with onnxruntime" in stdout and out.exists()

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Mul", "Sub", "Div", "Gemm", "Relu", "Gemm", "Softmax"]
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == "pixels" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [0, 784]  # (N, 784): N is symbolic
    assert outp.name == "probabilities"
    assert model.opset_import[0].version == 17 and model.ir_version == 8

    meta = _session(out).get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert meta["xpnet_version"] == xpnet.__version__ and json.loads(meta["sizes"]) == [784, 32, 10]

    # The same real test images through onnxruntime (raw 0-255 pixels) and through `xpnet predict`.
    from xpnet.data import write_idx

    images = mnist.X_test[:500]
    write_idx(tmp_path / "test500-images-idx3-ubyte", images)
    code, stdout, err = run_cli(["predict", trained, tmp_path / "test500-images-idx3-ubyte", "--json", "--top-k", "10"], capsys)
    assert code == 0, err
    via_cli = np.zeros((500, 10))
    for i, line in enumerate(stdout.splitlines()):
        for p in json.loads(line)["predictions"]:
            via_cli[i, p["label"]] = p["probability"]
    got = _ort(out, images.reshape(500, -1))
    assert np.abs(got - via_cli).max() <= TOL

    # All 10,000 test images against the Python API; same decisions, a model that learnt something.
    X = mnist.X_test.reshape(len(mnist.X_test), -1)
    got, want = _ort(out, X), xpnet.load(trained).predict_proba(X)
    assert np.abs(got - want).max() <= TOL
    assert np.mean(got.argmax(1) == want.argmax(1)) > 0.999
    assert np.mean(got.argmax(1) == mnist.y_test) > 0.8


# ---------------------------------------------------------------------------------------------- every configuration
def _random_net(activation, output, n_out, norm_kind, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    net = xpnet.MLP([12, 7, 5, n_out], activation=activation, output=output, dtype=dtype, seed=seed, leaky_slope=0.2)
    net.set_params([p + rng.normal(0, 0.3, p.shape) for p in (np.asarray(q) for q in net.params)])  # non-zero biases
    pixels = rng.integers(0, 256, (64, 12)).astype(np.uint8)
    if norm_kind == "global":
        net.normalizer = xpnet.Normalizer().fit(pixels)
    elif norm_kind == "per_feature":
        net.normalizer = xpnet.Normalizer(per_feature=True).fit(pixels)
    elif norm_kind == "floats":  # fitted on pixels / 255 (scale 1), as `xpnet predict` assumes
        net.normalizer = xpnet.Normalizer().fit(pixels.astype(np.float32) / 255)
    return net, pixels


CASES = [(a, o, k) for a in ("relu", "leaky_relu", "sigmoid", "tanh")
         for o, k in (("softmax", 4), ("sigmoid", 1), ("sigmoid", 3), ("linear", 2))]
NORMS = ["global", "per_feature", "floats"]


@needs_onnx
@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{a}-{o}{k}" for a, o, k in CASES])
def test_onnx_every_activation_output_and_normalizer(i, tmp_path):
    activation, output, n_out = CASES[i]
    norm_kind = NORMS[i % 3]
    net, pixels = _random_net(activation, output, n_out, norm_kind, seed=i)
    path = export_onnx(net, tmp_path / "m.onnx")
    got = _ort(path, pixels)
    inputs = pixels.astype(np.float32) / 255 if norm_kind == "floats" else pixels
    want = net.predict_proba(inputs)
    assert got.shape == (64, n_out)
    assert np.abs(got - want).max() <= TOL
    model = onnx.load(str(path))
    assert model.graph.output[0].name == ("outputs" if output == "linear" else "probabilities")
    if activation == "leaky_relu":
        (leaky,) = [n for n in model.graph.node if n.op_type == "LeakyRelu"][:1]
        assert leaky.attribute[0].f == pytest.approx(0.2)


@needs_onnx
def test_onnx_float64_model_and_opset_13(tmp_path):
    net, pixels = _random_net("tanh", "softmax", 4, "per_feature", dtype="float64")
    path = export_onnx(net, tmp_path / "m.onnx", opset=13)
    assert onnx.load(str(path)).opset_import[0].version == 13
    assert np.abs(_ort(path, pixels) - net.predict_proba(pixels)).max() <= TOL


@needs_onnx
def test_onnx_bare_model_needs_allow_bare(tmp_path):
    net, pixels = _random_net("relu", "softmax", 4, None)
    with pytest.raises(ExportError, match="no saved normalizer"):
        to_onnx(net)
    X = np.random.default_rng(1).normal(size=(32, 12)).astype(np.float32)
    path = export_onnx(net, tmp_path / "bare.onnx", allow_bare=True)
    assert [n.op_type for n in onnx.load(str(path)).graph.node][0] == "Gemm"
    assert np.abs(_ort(path, X) - net.predict_proba(X)).max() <= TOL


@needs_onnx
def test_onnx_what_it_cannot_express(tmp_path):
    net, _ = _random_net("relu", "softmax", 4, "global")
    with pytest.raises(ExportError, match="opset 12"):
        to_onnx(net, opset=12)
    net.normalizer.scale = 0.5
    with pytest.raises(ExportError, match="scale 0.5"):
        to_onnx(net)
    net.normalizer.scale = 1 / 255
    net.W[0][0, 0] = np.nan
    with pytest.raises(ExportError, match="NaN"):
        to_onnx(net)
    assert not list(tmp_path.iterdir())


@needs_onnx
def test_cli_export_errors_are_one_line(tmp_path, capsys):
    net, _ = _random_net("relu", "softmax", 4, "global")
    trained = tmp_path / "model.npz"
    net.save(trained)
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    cases = [
        (["export", tmp_path / "missing.npz"], "not found"),
        (["export", trained, "--format", "torch", "--opset", "13"], "--opset"),
        (["export", trained, "--out", tmp_path / "no-such-dir" / "m.onnx"], "does not exist"),
        (["export", trained, "--opset", "99", "--out", tmp_path / "m.onnx"], "opset 99"),
    ]
    for args, words in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 1 and err.startswith("error:") and words in err and err.count("\n") == 1, (args, err)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------------------------------------- PyTorch
def test_torch_round_trip_on_real_mnist(trained, mnist, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pt, back = tmp_path / "m.pt", tmp_path / "back.npz"
    code, out, err = run_cli(["export", trained, "--format", "torch", "--out", pt], capsys)
    assert code == 0, err
    payload = torch.load(pt, weights_only=True)
    assert list(payload["state_dict"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    seq = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    seq.load_state_dict(payload["state_dict"])  # strict: exactly nn.Sequential's keys and shapes

    net = xpnet.load(trained)
    X = mnist.X_test[:2000].reshape(2000, -1)
    n = payload["normalizer"]
    x = (torch.from_numpy(X).float() * n["scale"] - n["mean"]) / n["std"]
    with torch.no_grad():
        probs = seq(x.float()).softmax(dim=1).numpy()
    assert np.abs(probs - net.predict_proba(X)).max() <= TOL

    code, out, err = run_cli(["import", pt, "--out", back], capsys)
    assert code == 0, err
    again = xpnet.load(back)
    assert all(np.array_equal(a, b) for a, b in zip(net.params, again.params))
    assert again.normalizer.to_dict() == net.normalizer.to_dict() and again.class_names == net.class_names
    assert again.config() == net.config()
    assert np.array_equal(again.predict_proba(X), net.predict_proba(X))


@pytest.mark.parametrize("activation", ["leaky_relu", "sigmoid", "tanh"])
def test_torch_module_matches_every_activation(activation, tmp_path):
    torch = pytest.importorskip("torch")
    net, pixels = _random_net(activation, "softmax", 4, "per_feature", dtype="float64")
    seq = torch_module(export_torch(net, tmp_path / "m.pt"))
    X = net.normalizer.transform(pixels)  # float32, as predict_proba normalises
    with torch.no_grad():
        got = seq(torch.from_numpy(X).double()).softmax(dim=1).numpy()
    assert np.abs(got - net.predict_proba(pixels)).max() <= 1e-12
    again = from_torch(tmp_path / "m.pt")
    assert again.activation_name == activation and again.leaky_slope == net.leaky_slope
    assert all(np.array_equal(a, b) for a, b in zip(net.params, again.params))


def test_from_torch_sequential_and_bare_state_dict(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Dropout(0.5), nn.Linear(7, 3), nn.Softmax(dim=1)).eval()
    X = torch.randn(16, 12)
    with torch.no_grad():
        want = seq(X).numpy()
    net = from_torch(seq)
    assert net.sizes == [12, 7, 3] and net.activation_name == "tanh" and net.output == "softmax"
    assert np.abs(net.predict_proba(X.numpy()) - want).max() <= 1e-6

    torch.save(seq.state_dict(), tmp_path / "sd.pt")  # keys 1.weight, 1.bias, 4.weight, 4.bias
    code, out, err = run_cli(["import", tmp_path / "sd.pt", "--activation", "tanh", "--out", tmp_path / "sd.npz"], capsys)
    assert code == 0, err
    assert np.abs(xpnet.load(tmp_path / "sd.npz").predict_proba(X.numpy()) - want).max() <= 1e-6

    with pytest.raises(ExportError, match="one activation of one kind"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)))
    with pytest.raises(ExportError, match="Conv2d"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 2)))
    with pytest.raises(ShapeError, match="takes 5 inputs"):
        from_torch({"0.weight": torch.zeros(4, 3), "2.weight": torch.zeros(2, 5)})


def test_import_errors_are_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    net, _ = _random_net("relu", "softmax", 4, "global")
    export_torch(net, tmp_path / "m.pt")
    net.save(tmp_path / "m.npz")
    torch.save({"0.weight": torch.zeros(4, 3), "conv.kernel": torch.zeros(3)}, tmp_path / "odd.pt")
    cases = [
        (["import", tmp_path / "junk.pt"], "weights_only"),
        (["import", tmp_path / "missing.pt"], "not found"),
        (["import", tmp_path / "m.pt", "--activation", "tanh", "--out", tmp_path / "x.npz"], "records its own activation"),
        (["import", tmp_path / "odd.pt"], "conv.kernel"),
        (["import", tmp_path / "m.pt"], "m.npz exists"),  # never overwrite the model it came from unasked
    ]
    for args, words in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 1 and err.startswith("error:") and words in err and err.count("\n") == 1, (args, err)
    with pytest.raises(ModelFileError):
        from_torch(tmp_path / "junk.pt")
    assert isinstance(ExportError("x"), ConfigError)


@needs_onnx
def test_failed_self_check_removes_the_export(tmp_path, capsys, monkeypatch):
    import xpnet.io.interop

    net, _ = _random_net("relu", "softmax", 4, "global")
    net.save(tmp_path / "m.npz")
    monkeypatch.setattr(xpnet.io.interop, "onnx_check", lambda path, net: 0.5)
    code, out, err = run_cli(["export", tmp_path / "m.npz"], capsys)
    assert code == 1 and "differ from xpnet's by up to 0.5" in err and not (tmp_path / "m.onnx").exists()


def test_missing_packages_are_one_line(tmp_path, capsys, monkeypatch):
    import sys

    net, _ = _random_net("relu", "softmax", 4, "global")
    net.save(tmp_path / "m.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx → ImportError
    monkeypatch.setitem(sys.modules, "torch", None)
    for args, words in ((["export", tmp_path / "m.npz"], "pip install 'xpnet[onnx]'"),
                        (["export", tmp_path / "m.npz", "--format", "torch"], "torch is not installed"),
                        (["import", tmp_path / "m.npz", "--out", tmp_path / "x.npz"], "torch is not installed")):
        code, out, err = run_cli(args, capsys)
        assert code == 1 and words in err and err.count("\n") == 1, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
