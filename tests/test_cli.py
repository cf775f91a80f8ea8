"""The command line end to end on a tiny synthetic IDX data set, bad input included."""

import datetime
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli, write_synthetic_idx


@pytest.fixture
def data_dir(tmp_path):
    return write_synthetic_idx(tmp_path / "data")


def _train(data_dir, tmp_path, capsys, *extra, out="m.npz"):
    return run_cli(["train", "--data-dir", data_dir, "--hidden", "16", "--epochs", "3", "--out", tmp_path / out,
                    "--quiet", *extra], capsys)


def test_train_evaluate_predict(data_dir, tmp_path, capsys):
    code, out, err = _train(data_dir, tmp_path, capsys, "--metrics", tmp_path / "run.jsonl", "--lr", "0.01")
    assert code == 0, err
    assert "test accuracy" in out and (tmp_path / "m.npz").exists()
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["event"] for r in lines] == ["start", "epoch", "epoch", "epoch", "test"]
    assert all(datetime.datetime.fromisoformat(r["time"]).tzinfo is not None for r in lines)
    start, epochs, final = lines[0], lines[1:-1], lines[-1]
    assert start["config"]["hidden"] == [16] and start["config"]["lr"] == 0.01 and "numpy" in start["versions"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "samples_per_s", "lr"} <= set(epochs[0])
    lrs = [r["lr"] for r in epochs]  # the default recipe's one-cycle: the last epoch ends near lr/250,000
    assert lrs[-1] < lrs[0] < 0.01 and lrs[-1] == pytest.approx(0.01 / 25 / 1e4, rel=1e-6)
    assert final["event"] == "test" and final["test_acc"] > 0.9

    code, out, err = run_cli(["evaluate", tmp_path / "m.npz", "--data-dir", data_dir, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["accuracy"] == pytest.approx(final["test_acc"])
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == 100 and np.trace(confusion) / 100 == pytest.approx(report["accuracy"])

    code, out, err = run_cli(["evaluate", tmp_path / "m.npz", "--data-dir", data_dir], capsys)
    assert "confusion matrix" in out and "per-class accuracy" in out

    code, out, err = run_cli(["predict", tmp_path / "m.npz", data_dir / "t10k-images-idx3-ubyte.gz", "--json",
                              "--top-k", "2"], capsys)
    assert code == 0, err
    preds = [json.loads(line) for line in out.splitlines()]
    assert len(preds) == 100 and len(preds[0]["predictions"]) == 2
    from xpnet.data import read_idx

    labels = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz")
    hits = np.mean([p["predictions"][0]["label"] == lab for p, lab in zip(preds, labels)])
    assert hits == pytest.approx(report["accuracy"])


def test_predict_png(data_dir, tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    assert _train(data_dir, tmp_path, capsys, "--lr", "0.01")[0] == 0
    img = np.zeros((56, 56), dtype=np.uint8)
    img[14:18, 6:50] = 255  # class 1's bar (row 4-5 of 28), drawn at twice the size
    pil.fromarray(img).save(tmp_path / "bar.png")
    code, out, err = run_cli(["predict", tmp_path / "m.npz", tmp_path / "bar.png"], capsys)
    assert code == 0, err
    assert out.startswith(f"{tmp_path / 'bar.png'}: ")


def test_resume_matches_an_uninterrupted_run(data_dir, tmp_path, capsys):
    # Resuming with more --epochs extends a constant-lr run; a one-cycle schedule is fixed by the first
    # run's --epochs (a mid-run checkpoint continuing it exactly: tests/test_crash_safety.py, test_train.py).
    assert _train(data_dir, tmp_path, capsys, "--schedule", "constant", out="full.npz")[0] == 0
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--hidden", "16", "--epochs", "1", "--quiet", "--schedule", "constant",
                            "--out", tmp_path / "part.npz", "--checkpoint-every", "1"], capsys)
    assert code == 0, err
    ckpt = tmp_path / "part.ckpt.npz"
    assert ckpt.exists()
    code, _, err = run_cli(["train", "--resume", ckpt, "--epochs", "3", "--quiet", "--out", tmp_path / "resumed.npz"], capsys)
    assert code == 0, err
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    for key in ("W0", "b0", "W1", "b1"):
        np.testing.assert_array_equal(a[key], b[key])


def _one_error_line(code, err, expected_code=1):
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["train", "--dataset", "cifar"], "Invalid value for '--dataset': 'cifar' is not one of", 2),
        (["train", "--hidden", "0"], "hidden sizes must be positive", 2),
        (["train", "--hidden", "-5"], "hidden sizes must be positive", 2),
        (["train", "--lr", "0"], "must be > 0, got 0", 2),
        (["train", "--lr", "-1"], "must be > 0, got -1", 2),
        (["evaluate", "missing.npz"], "model file not found: missing.npz", 1),
    ],
)
def test_bad_arguments_give_one_line(args, message, code, capsys):
    code_got, _, err = run_cli(args, capsys)
    assert message in _one_error_line(code_got, err, code)


def test_missing_and_corrupt_idx(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_error_line(*run_cli(["train", "--data-dir", empty, "--out", tmp_path / "m.npz"], capsys)[::2])
    assert "is missing train-images-idx3-ubyte.gz" in line
    data = write_synthetic_idx(tmp_path / "corrupt")
    raw = (data / "train-images-idx3-ubyte.gz").read_bytes()
    (data / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    line = _one_error_line(*run_cli(["train", "--data-dir", data, "--out", tmp_path / "m.npz"], capsys)[::2])
    assert "train-images-idx3-ubyte.gz" in line and "corrupt gzip" in line
    assert not (tmp_path / "m.npz").exists()


def test_label_count_mismatch(tmp_path, capsys):
    data = write_synthetic_idx(tmp_path / "mismatch", label_count=399)
    line = _one_error_line(*run_cli(["train", "--data-dir", data, "--out", tmp_path / "m.npz"], capsys)[::2])
    assert "train-labels-idx1-ubyte.gz has 399 labels but train-images-idx3-ubyte.gz has 400 images" in line


def test_wrong_image_size_for_model(data_dir, tmp_path, capsys):
    assert _train(data_dir, tmp_path, capsys)[0] == 0
    small = write_synthetic_idx(tmp_path / "small", side=14)
    line = _one_error_line(*run_cli(["evaluate", tmp_path / "m.npz", "--data-dir", small], capsys)[::2])
    assert "14×14 images (196 values) but the model expects 784 inputs" in line


def test_corrupt_and_incompatible_model(tmp_path, data_dir, capsys):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    line = _one_error_line(*run_cli(["evaluate", tmp_path / "bad.npz", "--data-dir", data_dir], capsys)[::2])
    assert "bad.npz is not a readable .npz file" in line


def test_gpu_without_cupy(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy → ImportError
    line = _one_error_line(*run_cli(["train", "--data-dir", data_dir, "--device", "gpu", "--out", tmp_path / "m.npz"],
                                    capsys)[::2])
    assert "--device gpu needs CuPy, which is not installed" in line


def test_gpu_out_of_memory_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    class OutOfMemoryError(Exception):  # the name CuPy's allocator error has
        pass

    def oom(self, *a, **k):
        raise OutOfMemoryError("Out of memory allocating 4,294,967,296 bytes")

    monkeypatch.setattr("xpnet.training.trainer.Trainer.run", oom)
    line = _one_error_line(*run_cli(["train", "--data-dir", data_dir, "--out", tmp_path / "m.npz"], capsys)[::2])
    assert "GPU out of memory" in line and "smaller --batch-size" in line


def test_nan_loss_stops_with_a_hint(data_dir, tmp_path):
    # A real process: pytest's own warning capture would hide NumPy's overflow warnings.
    proc = subprocess.run([sys.executable, "-m", "xpnet", "train", "--data-dir", str(data_dir), "--optimizer", "sgd",
                           "--lr", "1e12", "--init", "normal", "--quiet", "--out", str(tmp_path / "m.npz")],
                          capture_output=True, text=True)
    line = _one_error_line(proc.returncode, proc.stderr)
    assert "loss became nan in epoch 1; try a lower learning rate" in line
    assert not (tmp_path / "m.npz").exists()


def test_unwritable_out(data_dir, capsys, tmp_path):
    line = _one_error_line(*run_cli(["train", "--data-dir", data_dir, "--out", tmp_path / "no" / "m.npz"], capsys)[::2])
    assert "cannot write" in line and "does not exist" in line


def test_checksum_mismatch_through_the_cli(tmp_path, capsys, monkeypatch):
    """A mirror serving a corrupted file: one line, nothing left in the cache."""
    from conftest import serve_folder as serve

    served = tmp_path / "served"
    served.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (served / name).write_bytes(b"not the real file")
    cache = tmp_path / "cache"
    monkeypatch.setenv("XPNET_DATA", str(cache))
    monkeypatch.setattr("xpnet.data.datasets.DATASETS", {"mnist": __import__("dataclasses").replace(
        __import__("xpnet.data.datasets", fromlist=["x"]).DATASETS["mnist"], system_dirs=())})
    with serve(served) as url:
        monkeypatch.setenv("XPNET_MIRRORS", url)
        line = _one_error_line(*run_cli(["train", "--dataset", "mnist", "--out", tmp_path / "m.npz"], capsys)[::2])
    assert "train-images-idx3-ubyte.gz: checksum mismatch" in line and "md5" in line
    assert [p.name for p in (cache / "mnist").iterdir()] == []


def test_help_is_fast_and_complete():
    out = subprocess.run([sys.executable, "-m", "xpnet", "train", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--dataset", "--hidden", "--optimizer", "--early-stopping", "--checkpoint-every", "--resume",
                   "[default: (128); x>=1]", "--config", "--print-config"):
        assert option in out
    code = "import time,sys; t=time.perf_counter(); import xpnet.cli; print(time.perf_counter()-t); print('numpy' in sys.modules)"
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert lines[1] == "False"  # numpy is not imported just to show help


def test_info_and_gradcheck(capsys):
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "numpy" in out and "data    cache" in out
    assert "split by units" in out  # NumPy's wheels ship the OpenBLAS the split step calls (ops/cblas.py)
    code, out, _ = run_cli(["gradcheck"], capsys)
    assert code == 0 and out.startswith("OK: max relative error")


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(data_dir, tmp_path):
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "xpnet", "train", "--data-dir", str(data_dir), "--hidden", "16",
                             "--epochs", "500", "--out", str(tmp_path / "m.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("epoch"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = tmp_path / "m.ckpt.npz"
    assert f"checkpoint saved to {ckpt}" in err and f"resume with: xpnet train --resume {ckpt}" in err
    assert ckpt.exists() and not (tmp_path / "m.npz").exists()


def test_incompatible_model_files(tmp_path, data_dir, capsys):
    import xpnet

    xpnet.MLP([100, 8, 10]).save(tmp_path / "small.npz")  # a valid model, but for 100 inputs
    line = _one_error_line(*run_cli(["evaluate", tmp_path / "small.npz", "--data-dir", data_dir], capsys)[::2])
    assert "28×28 images (784 values) but the model expects 100 inputs" in line
    xpnet.MLP([784, 8, 10]).save(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["W1"] = np.zeros((3, 3), dtype=np.float32)  # weights that do not fit the stored sizes
    np.savez(tmp_path / "tampered.npz", **arrays)
    line = _one_error_line(*run_cli(["evaluate", tmp_path / "tampered.npz", "--data-dir", data_dir], capsys)[::2])
    assert "tampered.npz: incompatible model" in line
