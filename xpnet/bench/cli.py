"""``xpnet bench``: epoch times of xpnet on CPU/GPU against peers measured in the same run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from ..cli.options import comma_list, shapes_option


@click.command(context_settings={"show_default": True})
@click.option("--device", "devices", default="cpu", callback=comma_list, help="Comma list: cpu,gpu.")
@click.option("--hidden", default="10;1024;120,64", callback=shapes_option, help="Hidden shapes: ';' between networks, ',' between layers (a plain 10,256,1024 means three 1-layer nets).")
@click.option("--batch-size", "batch_sizes", default="128", callback=comma_list, help="Comma list of batch sizes.")
@click.option("--epochs", type=click.IntRange(min=2), default=4, help="Epochs per run; the first is warm-up and excluded.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, help="Runs per case (the median epoch is over all runs).")
@click.option("--peers", default="torch,sklearn", callback=comma_list, help="Peers to measure in the same run: torch, torch-graph, sklearn, xpnet-eager (GPU without graphs); skipped when not installed.")
@click.option("--lr", type=float, default=1e-3)
@click.option("--dataset", type=click.Choice(["fashion-mnist", "mnist"]), default="fashion-mnist")
@click.option("--limit", type=click.IntRange(min=100), default=None, help="Use only the first N training images (quick looks).")
@click.option("--seed", type=int, default=0)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write results.json, results.csv, results.md and plots here.")
def bench(devices, hidden, batch_sizes, epochs, repeats, peers, lr, dataset, limit, seed, out):
    """Time xpnet (Adam, float32) against PyTorch and scikit-learn on the same data, in one run.

    Prints a Markdown table of median epoch seconds (warm-up excluded), samples/s and test
    accuracy, then the ratio of xpnet's time to each peer's (< 1 means xpnet is faster)
    and, with cpu and gpu, the GPU speed-up.
    """
    from .report import summarise, write_outputs
    from .runner import prepare_data, run_in_subprocess, unavailable_reason

    try:
        sizes_list = [int(b) for b in batch_sizes]
    except ValueError:
        raise click.BadParameter(f"{','.join(batch_sizes)}: batch sizes must be integers", param_hint="--batch-size") from None
    shapes = hidden
    for device in devices:
        if device != "cpu" and not device.startswith("gpu"):
            raise click.BadParameter(f"{device!r}: use cpu, gpu or gpu:N", param_hint="--device")
    impls = ["xpnet", *[p for p in peers if p != "xpnet"]]
    unknown = [p for p in impls if p not in ("xpnet", "xpnet-eager", "torch", "torch-graph", "sklearn")]
    if unknown:
        raise click.BadParameter(f"unknown peer {unknown[0]!r}: choose from xpnet-eager, torch, torch-graph, sklearn",
                                 param_hint="--peers")

    with tempfile.TemporaryDirectory(prefix="xpnet-bench-") as tmp:
        info = prepare_data(dataset, Path(tmp), limit)
        click.echo(f"{info['dataset']}: {info['n_train']:,} train / {info['n_test']:,} test · Adam lr {lr:g} · "
                   f"float32 · {epochs} epochs (first excluded) × {repeats}", err=True)
        results = []
        for shape in shapes:
            sizes = [info["n_features"], *shape, info["n_classes"]]
            for batch_size in sizes_list:
                for device in devices:
                    for impl in impls:
                        case = {"impl": impl, "device": device, "sizes": sizes, "hidden": list(shape),
                                "batch_size": batch_size, "epochs": epochs, "lr": lr, "seed": seed}
                        reason = unavailable_reason(case)
                        if reason:
                            # Rows that can never exist (sklearn on GPU, graphs on CPU) are left out, not "skipped".
                            impossible = (impl == "sklearn" and device != "cpu") or (
                                impl in ("torch-graph", "xpnet-eager") and device == "cpu")
                            if not impossible:
                                results.append(dict(case, skipped=reason))
                            continue
                        runs = []
                        for r in range(repeats):
                            t0 = time.perf_counter()
                            res = run_in_subprocess(dict(case, seed=seed + r), Path(tmp))
                            runs.append(res)
                            label = "-".join(map(str, sizes))
                            status = f"{res['median_epoch_s']:.3f} s/epoch, acc {res['test_acc'] * 100:.2f}%" if "error" not in res else f"error: {res['error']}"
                            click.echo(f"  {impl:<11} {device:<5} {label:<14} batch {batch_size:<5} {status} "
                                       f"({time.perf_counter() - t0:.0f}s)", err=True)
                        results.append(_merge(runs))
    table = summarise(results)
    click.echo(table)
    if out:
        written = write_outputs(results, table, out, meta={"dataset": dataset, "epochs": epochs, "repeats": repeats,
                                                           "lr": lr, "limit": limit})
        click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)


def _merge(runs: list[dict]) -> dict:
    """One row from repeated runs: median over every timed epoch of every run."""
    import statistics

    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    epochs = [e for r in ok for e in (r["epoch_s"][1:] or r["epoch_s"])]
    merged = dict(ok[0])
    merged["median_epoch_s"] = statistics.median(epochs)
    merged["samples_per_s"] = ok[0]["samples_per_s"] * ok[0]["median_epoch_s"] / merged["median_epoch_s"]
    merged["test_acc"] = statistics.mean(r["test_acc"] for r in ok)
    merged["runs"] = len(ok)
    return merged
