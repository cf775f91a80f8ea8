"""``xpnet evaluate`` and ``xpnet predict``: use a saved model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xpnet.cli.options import DATASET_CHOICES


def _load_model(path, device):
    from xpnet.io.npz import load

    return load(path, device=device)


def _images_to_rows(net, images):
    """Flatten images and check they fit the model's input size (a clear error, not a shape crash)."""
    from xpnet.errors import ShapeError

    rows = images.reshape(len(images), -1)
    if rows.shape[1] != net.sizes[0]:
        shape = "×".join(str(s) for s in images.shape[1:])
        raise ShapeError(f"the inputs are {shape} images ({rows.shape[1]} values) but the model expects {net.sizes[0]} inputs")
    return rows


@click.command(context_settings={"show_default": True})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default=None, show_default="the data set the model was trained on")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder with the four IDX files.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test")
@click.option("--device", default="cpu")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def evaluate(model, dataset, data_dir, split, device, as_json):
    """Loss, accuracy, per-class accuracy and confusion matrix of MODEL on a data set."""
    import numpy as np

    from xpnet.data import load_dataset
    from xpnet.errors import ConfigError
    from xpnet.training.trainer import evaluate as evaluate_net

    net = _load_model(model, device)
    if dataset is None and net.dataset in DATASET_CHOICES:
        dataset = net.dataset
        if not as_json:
            click.echo(f"data set {dataset} (recorded in {model}; --dataset to choose another)")
    if dataset is None and data_dir is None:
        raise ConfigError(f"{model} does not record its data set: give --dataset or --data-dir")
    ds = load_dataset(dataset, data_dir=data_dir)
    if net.dataset in DATASET_CHOICES and ds.name in DATASET_CHOICES and ds.name != net.dataset and not as_json:
        click.echo(f"warning: {model} was trained on {net.dataset}, evaluating on {ds.name}", err=True)
    images, labels = (ds.X_test, ds.y_test) if split == "test" else (ds.X_train, ds.y_train)
    rows = _images_to_rows(net, images)
    X = net.normalizer.transform(rows, net.dtype) if net.normalizer is not None else rows.astype(net.dtype)
    scores = evaluate_net(net, X, labels)
    pred = net.predict(rows)  # predict applies the stored normalizer itself
    k = net.sizes[-1]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    names = list(net.class_names or ds.class_names)
    if as_json:
        click.echo(json.dumps({"model": str(model), "dataset": ds.name, "split": split, "n": int(len(labels)),
                               "loss": scores["loss"], "accuracy": scores["accuracy"],
                               "per_class_accuracy": dict(zip(names, per_class.tolist())),
                               "confusion_matrix": confusion.tolist(), "class_names": names}))
        return
    click.echo(f"{ds.name} {split} ({len(labels):,} images): accuracy {scores['accuracy'] * 100:.2f}%  loss {scores['loss']:.4f}")
    click.echo("\nper-class accuracy:")
    width = max(len(n) for n in names)
    for name, acc in zip(names, per_class):
        click.echo(f"  {name:<{width}}  {acc * 100:6.2f}%")
    click.echo("\nconfusion matrix (rows: true, columns: predicted):")
    short = [n[:6] for n in names]
    click.echo(" " * (width + 2) + " ".join(f"{s:>6}" for s in short))
    for name, row in zip(names, confusion):
        click.echo(f"  {name:<{width}}" + " ".join(f"{v:>6}" for v in row))


@click.command(context_settings={"show_default": True})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=1, help="Show the K most likely classes.")
@click.option("--device", default="cpu")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input.")
def predict(model, inputs, top_k, device, as_json):
    """Classify INPUTS (PNG/JPEG images of any size, or IDX image files) with MODEL.

    Images are converted the MNIST way: grayscale, light-on-dark, cropped, scaled into a
    20×20 box and centred by mass in 28×28.
    """
    import numpy as np

    from xpnet.data import load_inputs

    net = _load_model(model, device)
    images, names = load_inputs(inputs)
    rows = _images_to_rows(net, images)
    if net.normalizer is not None:
        # load_inputs gives [0, 1] floats; predict_proba's normalizer expects raw pixels.
        rows = rows * (1.0 / net.normalizer.scale)
    proba = net.predict_proba(rows)
    classes = list(net.class_names or [str(i) for i in range(net.sizes[-1])])
    if not as_json and net.dataset in DATASET_CHOICES:
        click.echo(f"classes of {net.dataset} (recorded in {model})", err=True)
    k = min(top_k, proba.shape[1])
    for name, p in zip(names, proba):
        order = np.argsort(-p)[:k]
        if as_json:
            click.echo(json.dumps({"input": name, "predictions": [
                {"label": int(i), "class": classes[i], "probability": float(p[i])} for i in order]}))
        else:
            best = ", ".join(f"{i} {classes[i]} {p[i] * 100:.1f}%" for i in order)
            click.echo(f"{name}: {best}")
