"""The side switch's probes step by step: how long each step around a probe takes, and when the rule flips.

``threads.SideSwitch`` gathers the next batch on the side core or not, and tries the other way in the last
steps of every period. This trains one network (the ``plain`` recipe, Fashion-MNIST) in this process and
prints, for each rule (side core on or off), the median time of every step from the compared steps
before the probe to the period's end, over the periods with that rule. ``--start-off`` starts with the
side core off, so the probes of the side core after a period without it show up even on a machine where
it always pays.

Usage: python bench/side_probe.py --data-dir DIR [--hidden 10] [--epochs 6] [--start-off]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from xpnet.ops import threads

threads.let_idle_workers_sleep()  # as the xpnet command does: before anything loads NumPy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with Fashion-MNIST's four .gz files")
    parser.add_argument("--hidden", default="10", help="hidden sizes, comma-separated (default 10)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--start-off", action="store_true", help="start with the side core off")
    args = parser.parse_args()

    from xpnet.training.recipe import RunConfig, run

    Switch = threads.SideSwitch
    steps = []  # (index in the period, seconds, rule before the step, rule after it)
    record, init = Switch.record, Switch.__init__

    def logged(self, seconds, ahead):
        i, rule = self._i, self.on
        record(self, seconds, ahead)
        steps.append((i, seconds, rule, self.on))

    def starting_off(self):
        init(self)
        self.on = False

    Switch.record = logged
    if args.start_off:
        Switch.__init__ = starting_off
    hidden = tuple(int(h) for h in args.hidden.split(","))
    result = run(RunConfig(dataset="fashion-mnist", data_dir=args.data_dir, recipe="plain", hidden=hidden,
                           epochs=args.epochs, seed=0))
    epochs = ", ".join(f"{r['epoch_s']:.4f}" for r in result.history.records)
    print(f"784-{args.hidden.replace(',', '-')}-10, epochs (s): {epochs}")
    flips = [(n, before, after) for n, (_, _, before, after) in enumerate(steps) if before != after]
    print("flips (step, side core before -> after):", flips or "none")
    probe_start = {}  # by rule: where the switch starts its probe
    for rule in (True, False):
        switch = Switch()
        switch.on = rule
        probe_start[rule] = switch._probe_start()
    first = min(probe_start.values()) - Switch.PROBE
    times = defaultdict(list)
    for i, seconds, rule, _ in steps:
        if i >= first:
            times[rule, i].append(seconds * 1e6)
    for rule in (True, False):
        row = [(i, statistics.median(times[rule, i])) for i in range(first, Switch.PERIOD) if times[rule, i]]
        if row:
            print(f"\nside core {'on' if rule else 'off'} as the rule ({len(times[rule, first])} periods), "
                  f"the probe from step {probe_start[rule]}:")
            print(" ".join(f"{i}:{us:.0f}" for i, us in row), "(step: median µs)")


if __name__ == "__main__":
    main()
