"""Option parsing shared by several commands (hidden sizes, device lists)."""

from __future__ import annotations

import click


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
