"""Option parsing shared by several commands (hidden sizes, device lists)."""

from __future__ import annotations

import click

DATASET_CHOICES = ["mnist", "fashion-mnist"]  # the data sets every command's --dataset takes


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


def flatten_hidden(values) -> tuple[int, ...]:
    """Repeated ``--hidden`` options (each maybe a comma list) as one tuple of widths."""
    return tuple(size for group in values for size in group)


def positive_float(ctx, param, value):
    if value is not None and not value > 0:
        raise click.BadParameter(f"must be > 0, got {value:g}")
    return value


def comma_list(ctx, param, value):
    """``cpu,gpu`` → ``("cpu", "gpu")``."""
    if value is None:
        return ()
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """Several networks' hidden layers: ``"10,256"`` → two 1-layer nets;
    ``"10;256;120,64"`` → ``[(10,), (256,), (120, 64)]`` (``;`` between nets, ``,`` between layers)."""
    from xpnet.errors import ConfigError

    text = str(text).replace(" ", "")
    groups = [g for g in text.split(";") if g] if ";" in text else [g for g in text.split(",") if g]
    try:
        shapes = [tuple(int(s) for s in g.split(",") if s) for g in groups]
    except ValueError:
        raise ConfigError(f"bad hidden sizes {text!r}: use e.g. 10,256,1024 or \"10;120,64\"") from None
    if not shapes or any(not s for s in shapes) or any(v <= 0 for s in shapes for v in s):
        raise ConfigError(f"bad hidden sizes {text!r}: give positive integers, e.g. 10,256,1024 or \"10;120,64\"")
    return shapes


def shapes_option(ctx, param, value):
    """Click callback for ``--hidden`` lists of networks (sweep, bench)."""
    from xpnet.errors import ConfigError

    try:
        return parse_shapes(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--hidden") from None


# The training recipes of ``xpnet train --recipe``: any option left unset on the command line
# takes its value from the recipe (an explicit flag always wins). ``default`` was chosen by
# measurement (docs/recipe.md); ``plain`` is the course notes' baseline (Adam 1e-3, constant,
# no regularisation), kept for the study.
RECIPES = {
    "default": {"optimizer": "adam", "lr": 2e-3, "schedule": "onecycle", "warmup": None, "batch_size": 128,
                "epochs": 20, "dropout": 0.1, "label_smoothing": 0.1, "weight_decay": None},
    "plain": {"optimizer": "adam", "lr": None, "schedule": "constant", "warmup": None, "batch_size": 128,
              "epochs": 20, "dropout": 0.0, "label_smoothing": 0.0, "weight_decay": None},
}
RECIPE_KEYS = tuple(RECIPES["default"])
SCHEDULE_CHOICES = ["constant", "step", "exponential", "cosine", "onecycle"]


def resolve_recipe(name: str, opts: dict) -> dict:
    """``opts`` with every recipe key that is None filled from recipe ``name``; ``lr`` None in the
    recipe (or for an optimizer the recipe was not tuned for) means the optimizer's default."""
    from xpnet.errors import ConfigError

    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    out = dict(opts)
    for key in RECIPE_KEYS:
        if out.get(key) is None:
            out[key] = recipe[key]
    if opts.get("lr") is None and out["optimizer"] not in ("adam", "adamw"):
        out["lr"] = None  # the recipe's peak lr is Adam's; SGD & co. keep their notes' default
    return out


def describe_recipe(name: str) -> str:
    r = RECIPES[name]
    lr = f"lr {r['lr']:g}" if r["lr"] else "lr 1e-3"
    parts = [f"{r['optimizer']} {lr} ({r['schedule']})", f"batch {r['batch_size']}", f"{r['epochs']} epochs"]
    if r["dropout"]:
        parts.append(f"dropout {r['dropout']:g}")
    if r["label_smoothing"]:
        parts.append(f"label smoothing {r['label_smoothing']:g}")
    if r["weight_decay"]:
        parts.append(f"weight decay {r['weight_decay']:g}")
    return ", ".join(parts)
