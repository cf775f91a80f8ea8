"""xpnet report: valid PNGs, links to existing files only, captions carrying the data's numbers."""

import base64
import json
import re

import numpy as np
import pytest

from xpnet.experiments import plots
from xpnet.cli import main
from conftest import write_synthetic_idx

PNG = b"\x89PNG\r\n\x1a\n"


BENCH = {"meta": {"dataset": "fashion-mnist", "epochs": 3, "cpu": "test CPU"}, "results": [
    {"impl": "xpnet", "device": "cpu", "hidden": [1024], "batch_size": 128, "median_epoch_s": 1.8, "samples_per_s": 30000,
     "test_acc": 0.87},
    {"impl": "xpnet", "device": "gpu", "hidden": [1024], "batch_size": 128, "median_epoch_s": 0.12, "samples_per_s": 450000,
     "test_acc": 0.87},
    {"impl": "torch", "device": "cpu", "hidden": [1024], "batch_size": 128, "median_epoch_s": 2.4, "samples_per_s": 22500,
     "test_acc": 0.86},
]}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = write_synthetic_idx(root / "data", n_train=300)
    sweep, init, tune, bench = root / "sweep", root / "init", root / "tune", root / "bench"
    assert main(["sweep", "--data-dir", str(data), "--hidden", "8", "--hidden", "32", "--optimizer", "adam,sgd", "--repeats", "2",
                 "--epochs", "2", "--batch-size", "32", "--out", str(sweep)]) == 0
    assert main(["analyze", "init", "--data-dir", str(data), "--samples", "100", "--depth", "3", "--width", "32",
                 "--out", str(init)]) == 0
    assert main(["tune", "--method", "random", "--trials", "3", "--epochs", "1", "--hidden", "8,16",
                 "--data-dir", str(data), "--out", str(tune)]) == 0
    bench.mkdir()
    (bench / "results.json").write_text(json.dumps(BENCH), encoding="utf-8")
    assert main(["report", str(sweep), str(init), str(tune), str(bench), "--out", str(root / "out")]) == 0
    return {"root": root, "sweep": sweep, "init": init, "tune": tune, "bench": bench, "out": root / "out"}


def test_every_png_is_a_valid_image(folders):
    from PIL import Image

    pngs = sorted(folders["out"].glob("*.png"))
    assert len(pngs) >= 10
    for path in pngs:
        raw = path.read_bytes()
        assert raw[:8] == PNG and len(raw) > 5000, path
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] >= 300 and im.size[1] >= 200
            assert len(np.unique(np.asarray(im.convert("L").resize((64, 64))))) > 5  # not a blank canvas


def test_markdown_links_only_existing_files(folders):
    md = (folders["out"] / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert len(links) >= 10
    for link in links:
        assert (folders["out"] / link).is_file(), link
    for name in ("accuracy", "epoch_time", "learning_curves", "optimizers", "confusion"):
        assert f"sweep_{name}.png" in links
    assert "bench_speedup.png" in links and "tune_trials.png" in links and "init_activations.png" in links


def test_html_is_self_contained(folders):
    page = (folders["out"] / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(re.findall(r"\]\(([^)]+)\)", (folders["out"] / "report.md").read_text(encoding="utf-8")))
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    assert "src=\"http" not in page and ".png\"" not in page


def _caption(md, image):
    m = re.search(r"!\[([^\]]*)\]\(" + re.escape(image) + r"\)", md)
    assert m, image
    return m.group(1)


def test_captions_carry_the_numbers(folders):
    md = (folders["out"] / "report.md").read_text(encoding="utf-8")
    rows = json.loads((folders["sweep"] / "results.json").read_text(encoding="utf-8"))["results"]
    # accuracy vs hidden: the mean test accuracy of the best group at 32 and 8 hidden
    cap = _caption(md, "sweep_accuracy.png")
    groups = {}
    for r in rows:
        groups.setdefault(r["optimizer"], {}).setdefault(r["hidden"], []).append(r["test_acc"])
    means = {opt: {h: np.mean(v) for h, v in by.items()} for opt, by in groups.items()}
    best = max(means, key=lambda o: max(means[o].values()))
    assert f"32 hidden: {means[best]['32'] * 100:.1f} %" in cap and f"8 hidden: {means[best]['8'] * 100:.1f} %" in cap
    assert best in cap
    # epoch time per device
    cap = _caption(md, "sweep_epoch_time.png")
    t8 = np.median([r["median_epoch_s"] for r in rows if r["hidden"] == "8"])
    assert f"{t8:.2f} s at 8 hidden" in cap
    # confusion matrix: accuracy of the saved best model equals the best run's test accuracy
    cap = _caption(md, "sweep_confusion.png")
    top = max(rows, key=lambda r: r["test_acc"])
    assert f"{top['test_acc'] * 100:.1f} % accuracy" in cap and f"seed {top['seed']}" in cap
    # bench speed-up 1.8 / 0.12 = 15×
    assert "15.0×" in _caption(md, "bench_speedup.png")
    # init study: He + ReLU std numbers from the JSON
    study = json.loads((folders["init"] / "init_study.json").read_text(encoding="utf-8"))
    std = [r["act_std"] for r in study["rows"] if r["init"] == "he" and r["activation"] == "relu" and r["act_std"] is not None]
    assert f"{std[0]:.3g} → {std[-1]:.3g}" in _caption(md, "init_activations.png")
    # tune: best trial value
    trials = json.loads((folders["tune"] / "trials.json").read_text(encoding="utf-8"))["trials"]
    assert f"{max(t['value'] for t in trials) * 100:.1f} %" in _caption(md, "tune_trials.png")


def test_default_out_is_first_dir_and_bad_dirs(folders, tmp_path, capsys):
    assert main(["report", str(folders["tune"])]) == 0
    assert (folders["tune"] / "report.md").exists() and (folders["tune"] / "report.html").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 1
    assert "holds no sweep" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report"]) == 2


def test_without_matplotlib_tables_and_hint(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "get_pyplot", lambda: None)
    out = tmp_path / "noplot"
    assert main(["report", str(folders["sweep"]), str(folders["tune"]), "--out", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "pip install 'xpnet[plot]'" in md and "![" not in md
    assert "| configuration |" in md
    assert not list(out.glob("*.png"))


def test_a_distributed_sweep_is_one_section_over_its_workers_folders(folders, tmp_path):
    """Two workers of one --storage sweep (same meta.study) wrote half the grid each: one section, every run."""
    import shutil

    data = json.loads((folders["sweep"] / "results.json").read_text(encoding="utf-8"))
    rows = data["results"]
    assert len(rows) == 8
    workers = []
    for w, half in enumerate((rows[:5], rows[5:])):
        folder = tmp_path / f"worker{w}"
        shutil.copytree(folders["sweep"], folder)
        (folder / "results.json").write_text(json.dumps({"meta": dict(data["meta"], study="grid1", worker=w),
                                                         "results": half}), encoding="utf-8")
        workers.append(folder)
    assert main(["report", *map(str, workers), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert md.count("## Sweep (") == 1 and "8 runs on" in md
