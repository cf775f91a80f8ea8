"""The command line's one vocabulary: options every training command shares, and their parsing.

``@run_options`` gives a command ``--config``, ``--dataset``, ``--data-dir``, ``--recipe``, ``--seed``
and ``--device`` with the same meaning and defaults everywhere; :func:`build_config` turns them
(plus the command's own recipe fields) into one :class:`~xpnet.training.recipe.RunConfig`:
the config file first, then every flag given on the command line. ``--hidden`` is always one
network's hidden layers (``120,64``); commands that compare networks take it repeated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path

import click

from xpnet import choices
from xpnet.training.recipe import RECIPES, RunConfig, describe_recipe

DATASET_CHOICES = list(choices.DATASETS)


class HiddenSizes(click.ParamType):
    """``--hidden 1024`` or ``--hidden 120,64`` (repeatable): a tuple of positive layer widths."""

    name = "SIZES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(part) for part in str(value).replace(" ", "").split(",") if part != "")
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not sizes:
            self.fail("give at least one hidden size", param, ctx)
        if any(s <= 0 for s in sizes):
            self.fail(f"hidden sizes must be positive, got {value}", param, ctx)
        return sizes


def positive_float(ctx, param, value):
    if value is not None and not value > 0:
        raise click.BadParameter(f"must be > 0, got {value:g}")
    return value


def comma_list(ctx, param, value):
    """``cpu,gpu`` → ``("cpu", "gpu")``."""
    if value is None:
        return ()
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def run_options(command):
    """The options every command that trains shares, with one meaning and one default everywhere."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="A run config file (TOML or JSON, e.g. from `xpnet train --print-config`); flags given "
                          "beside it override it."),
        click.option("--dataset", type=click.Choice(DATASET_CHOICES), default=None, show_default="fashion-mnist",
                     help="Data set (with --data-dir: its class names; a folder named mnist or fashion-mnist is "
                          "recognised)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder with the four IDX files, instead of the cache / system folders / download."),
        click.option("--recipe", type=click.Choice(list(RECIPES)), default=None, show_default="default",
                     help="Values of the training options left unset: " + "; ".join(
                         f"'{name}' = {describe_recipe(name)}" for name in RECIPES) + "."),
        click.option("--seed", type=int, default=None, show_default="0",
                     help="Seed of the split, the initial weights, shuffling and dropout."),
        click.option("--device", default=None, show_default="cpu", help="cpu, gpu or gpu:N."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


RUN_FIELDS = tuple(f.name for f in fields(RunConfig))


def build_config(opts: dict, resolve: bool = True, **extra) -> RunConfig:
    """The run config of a command: ``--config`` (or the defaults), then each flag given (not None),
    then ``extra`` (the command's own values); resolved, or with ``resolve=False`` as given (a sweep
    lays its grid over it before the recipe fills the rest)."""
    path = opts.get("config_path")
    base = RunConfig.load(path) if path else RunConfig()
    given = {k: v for k, v in {**opts, **extra}.items() if k in RUN_FIELDS and v is not None}
    for key in ("data_dir",):
        if isinstance(given.get(key), Path):
            given[key] = str(given[key])
    cfg = dataclasses.replace(base, **given)
    return cfg.resolve() if resolve else cfg
