"""``xpnet bench --to-accuracy``: time to a target test accuracy with one fixed recipe.

Every implementation trains the same recipe (default: the default recipe of ``xpnet train``:
784-1024-10 ReLU, Adam with a one-cycle schedule peaking at 2e-3 — PyTorch's ``OneCycleLR``
with ``cycle_momentum=False`` —, batch 128, dropout 0.1 on the hidden layer, label
smoothing 0.1) for a fixed number of epochs on the same normalised arrays (all 60,000
training images, no validation split), once per seed, each run in its own subprocess,
seeds interleaved across implementations so that machine noise hits all of them alike.

``seconds`` is the wall time of training only, from the first step to the last (data
already in memory, no evaluation inside). Before the clock starts each process takes a few
steps on a copy of the model: that compiles xpnet's Numba kernels (a first-call cost of a
few seconds, excluded and said so) and warms PyTorch's allocator and thread pool alike.
The target is met when the **mean** test accuracy over the seeds reaches it.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from xpnet.backend import load_average

TTA_FIELDS = ("dataset", "impl", "device_name", "target", "seconds", "test_acc", "seeds")
TTA_IMPLS = ("xpnet", "torch")


def recipe_case(recipe: dict, **extra) -> dict:
    return {"hidden": [1024], "batch_size": recipe["batch_size"], "lr": recipe["lr"], "schedule": recipe["schedule"],
            "dropout": recipe["dropout"], "label_smoothing": recipe["label_smoothing"], **extra}


def _n_batches(n: int, bs: int) -> int:
    return math.ceil(n / min(bs, n))


def run_xpnet_tta(data: dict, case: dict) -> dict:
    """xpnet through the one run path: the case's recipe fields as a ``RunConfig`` of the default
    recipe, trained by ``make_run_trainer`` on the bench arrays (CUDA graphs on a GPU)."""
    from xpnet import backend
    from xpnet.experiments.bench.workloads import bench_split
    from xpnet.training.recipe import RunConfig, make_run_trainer
    from xpnet.training.trainer import evaluate

    cfg = RunConfig(recipe="default", hidden=tuple(case["hidden"]), batch_size=case["batch_size"], lr=case["lr"],
                    schedule=case["schedule"], dropout=case["dropout"], label_smoothing=case["label_smoothing"],
                    epochs=case["epochs"], seed=case["seed"], device=case["device"]).resolve()
    # Warm-up (excluded): a few steps on another model compile the Numba kernels of every op.
    rows = 4 * case["batch_size"]
    warm = dict(data, X_train=data["X_train"][:rows], y_train=data["y_train"][:rows])
    make_run_trainer(cfg.replace(seed=case["seed"] + 1000, epochs=1), bench_split(warm)).run(1)
    trainer = make_run_trainer(cfg, bench_split(data))
    xp = trainer.net.xp
    backend.synchronize(xp)
    start = time.perf_counter()
    trainer.run(cfg.epochs)
    backend.synchronize(xp)
    seconds = time.perf_counter() - start
    acc = evaluate(trainer.net, data["X_test"], data["y_test"])["accuracy"]
    return {"seconds": seconds, "test_acc": acc, "device_name": backend.device_name(case["device"])}


def run_torch_tta(data: dict, case: dict) -> dict:
    """The same recipe in everyday PyTorch: nn.Sequential, Adam (foreach), OneCycleLR stepped per batch."""
    import torch

    from xpnet.experiments.bench.workloads import _torch_accuracy, _torch_device

    torch.manual_seed(case["seed"])
    dev, name = _torch_device(torch, case["device"])
    X = torch.as_tensor(data["X_train"], device=dev)
    y = torch.as_tensor(data["y_train"], device=dev)
    sizes = [X.shape[1], *case["hidden"], int(data["y_train"].max()) + 1]

    def build():
        layers = []
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU(), torch.nn.Dropout(case["dropout"])]
        layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
        model = torch.nn.Sequential(*layers).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=case["lr"])
        steps = case["epochs"] * _n_batches(len(X), case["batch_size"])
        if case["schedule"] == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=case["lr"], total_steps=steps, pct_start=0.3,
                                                        cycle_momentum=False)
        elif case["schedule"] == "constant":
            sched = None
        else:
            raise ValueError(f"the torch peer implements the onecycle and constant schedules, not {case['schedule']!r}")
        return model, opt, sched

    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=case["label_smoothing"])

    def train(model, opt, sched, n, epochs, gen):
        model.train()
        bs = case["batch_size"]
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(X[idx]), y[idx]).backward()
                opt.step()
                if sched is not None:
                    sched.step()

    model, opt, sched = build()  # warm-up (excluded), as for xpnet
    train(model, opt, None, 4 * case["batch_size"], 1, torch.Generator().manual_seed(0))
    torch.manual_seed(case["seed"])
    model, opt, sched = build()
    gen = torch.Generator(device="cpu").manual_seed(case["seed"])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(model, opt, sched, len(X), case["epochs"], gen)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    return {"seconds": seconds, "test_acc": _torch_accuracy(torch, model, data["X_test"], data["y_test"], dev),
            "device_name": name if dev.type == "cuda" else f"torch {torch.__version__} CPU, {name}"}


TTA_RUNNERS = {"xpnet": run_xpnet_tta, "torch": run_torch_tta}


def run_tta(impls, devices, seeds, case: dict, data_dir: Path, run=None, say=print) -> list[dict]:
    """Every (device, impl) × seed, seeds in the outer loop; returns one row per (device, impl)."""
    from xpnet.experiments.bench.runner import run_in_subprocess

    run = run or (lambda c: run_in_subprocess(c, data_dir, module="xpnet.experiments.bench.tta", threads=c.get("threads")))
    runs: dict = {}
    for seed in seeds:
        for device in devices:
            for impl in impls:
                c = dict(case, impl=impl, device=device, seed=seed)
                res = run(c)
                runs.setdefault((device, impl), []).append(res)
                status = (f"{res['seconds']:.1f} s, test {res['test_acc'] * 100:.2f}%" if "error" not in res
                          else f"error: {res['error']}")
                say(f"  {impl:<6} {device:<5} seed {seed}: {status}")
    rows = []
    for (device, impl), results in runs.items():
        ok = [r for r in results if "error" not in r]
        row = {"dataset": case["dataset"], "impl": impl, "device": device, "target": case["target"],
               "epochs": case["epochs"], "threads": case.get("threads"), "recipe": {k: case[k] for k in ("hidden", "batch_size", "lr", "schedule",
                                                                         "dropout", "label_smoothing")},
               "seeds": [r["seed"] for r in ok]}
        if not ok:
            row.update(device_name=None, seconds=None, test_acc=None, error=results[0].get("error"))
        else:
            row.update(device_name=ok[0]["device_name"], seconds=statistics.mean(r["seconds"] for r in ok),
                       load_avg=[[r.get("load_before"), r.get("load_after")] for r in ok],
                       test_acc=statistics.mean(r["test_acc"] for r in ok),
                       seconds_per_seed=[r["seconds"] for r in ok], test_acc_per_seed=[r["test_acc"] for r in ok])
            row["reached"] = row["test_acc"] >= case["target"]
        rows.append(row)
    return rows


def tta_table(rows: list[dict]) -> str:
    """Markdown: one line per row, then xpnet's time over each peer's on the same device."""
    lines = ["| dataset | device | impl | epochs | seconds (mean) | test acc (mean) | per seed | target reached |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        if r.get("seconds") is None:
            lines.append(f"| {r['dataset']} | {r['device']} | {r['impl']} | {r['epochs']} | – | – | {r.get('error')} | – |")
            continue
        per = ", ".join(f"{s:.1f} s / {a * 100:.2f}%" for s, a in zip(r["seconds_per_seed"], r["test_acc_per_seed"]))
        lines.append(f"| {r['dataset']} | {r['device']} | {r['impl']} | {r['epochs']} | {r['seconds']:.1f} | "
                     f"{r['test_acc'] * 100:.2f}% | {per} | {'yes' if r['reached'] else 'no'} ({r['target'] * 100:.1f}%) |")
    lines.append("")
    for r in rows:
        if r["impl"] != "xpnet" or r.get("seconds") is None:
            continue
        for p in rows:
            if p["impl"] != "xpnet" and p["device"] == r["device"] and p.get("seconds"):
                lines.append(f"- {r['device']}: xpnet takes **{r['seconds'] / p['seconds']:.2f}×** the time of {p['impl']} "
                             f"({r['seconds']:.1f} s vs {p['seconds']:.1f} s); mean test accuracy "
                             f"{r['test_acc'] * 100:.2f}% vs {p['test_acc'] * 100:.2f}%")
    return "\n".join(lines) + "\n"


def write_tta(rows: list[dict], out: Path, meta: dict) -> list[Path]:
    from xpnet.fileio import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": dict(meta, kind="tta", fields=list(TTA_FIELDS)), "results": rows}
    paths = [atomic_write(out / "tta.json", lambda fh: json.dump(payload, fh, indent=1), mode="w"),
             atomic_write(out / "tta.md", lambda fh: fh.write(tta_table(rows)), mode="w")]
    return paths


def _child(argv) -> None:

    from xpnet.experiments.bench.runner import load_data

    case, data_dir = json.loads(argv[0]), Path(argv[1])
    load = load_average()
    res = TTA_RUNNERS[case["impl"]](load_data(data_dir), case)
    # The 1-minute load average before and after: on a shared machine, PyTorch's OpenMP threads
    # slow down by orders of magnitude when the cores are busy (measured: 0.06 s vs 7.6 s).
    print(json.dumps(dict(case, **res, load_before=load, load_after=load_average())), flush=True)


if __name__ == "__main__":
    np.seterr(over="ignore")
    _child(sys.argv[1:])
