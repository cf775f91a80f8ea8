"""`xpnet bench`: the table, the ratios and the files, on a tiny slice so it stays fast."""

import json

import pytest

from xpnet.experiments.bench.report import summarise
from xpnet.cli import main


def _row(impl, device, t, acc, hidden=(10,), batch=128):
    return {"impl": impl, "device": device, "hidden": list(hidden), "batch_size": batch, "median_epoch_s": t,
            "samples_per_s": 60000 / t, "test_acc": acc}


def test_ratios_are_xpnet_time_over_peer_time():
    rows = [_row("xpnet", "cpu", 1.0, 0.88), _row("torch", "cpu", 2.0, 0.885), _row("sklearn", "cpu", 4.0, 0.87),
            _row("xpnet", "gpu", 0.01, 0.881), {"impl": "torch", "device": "gpu", "hidden": [10], "batch_size": 128,
                                               "skipped": "torch sees no CUDA device"}]
    table = summarise(rows)
    assert "| 10 | 128 | cpu | torch | 2.000 | 30,000 | 88.50% | 0.50× |" in table
    assert "| 10 | 128 | cpu | sklearn | 4.000 | 15,000 | 87.00% | 0.25× |" in table
    assert "xpnet takes 0.50× the time of torch (1.000 s vs 2.000 s); accuracy -0.50 points" in table
    assert "GPU speed-up over xpnet's CPU backend 100.0×" in table
    assert "| 10 | 128 | gpu | torch | – | – | – | torch sees no CUDA device |" in table


def test_bench_end_to_end(fashion_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("XPNET_DATA")  # use the system Fashion-MNIST
    out = tmp_path / "bench"
    code = main(["bench", "--hidden", "10", "--hidden", "16,8", "--epochs", "2", "--limit", "600", "--peers", "sklearn",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| 10 | 128 | cpu | xpnet |" in captured.out and "| 16-8 | 128 | cpu | xpnet |" in captured.out
    data = json.loads((out / "results.json").read_text())
    xp_rows = [r for r in data["results"] if r["impl"] == "xpnet"]
    assert len(xp_rows) == 2 and all(r["median_epoch_s"] > 0 and 0 < r["test_acc"] <= 1 for r in xp_rows)
    assert (out / "results.csv").read_text().startswith("impl,device,device_name,hidden")
    if pytest.importorskip("matplotlib"):
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--hidden", "ten"]) == 2
    assert "'ten' is not a comma-separated list of integers" in capsys.readouterr().err
    assert main(["bench", "--peers", "jax"]) == 2
    assert "unknown peer 'jax'" in capsys.readouterr().err
