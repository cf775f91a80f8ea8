"""SIGKILL ``xpnet train`` at many moments while it writes ``--out`` and its checkpoint.

Whatever the moment, what is on disk at each path is the old complete file or the new complete
file (it loads, and it is byte-identical to the old one or belongs to the new run), and
``--resume`` from the surviving checkpoint finishes the run with the weights of an uninterrupted
one. Half of the kills land at uniformly random moments; the other half are aimed at writes: they
wait for the j-th write's temporary file to appear and kill a random 0-30 ms later. The training
processes fork from a forkserver that imported xpnet once (no interpreter start-up each) and run the real CLI.
"""

import multiprocessing
import os
import random
import signal
import sys
import time

import numpy as np
import pytest

import xpnet
from conftest import write_synthetic_idx
from xpnet.io.npz import load_checkpoint

# forkserver: workers fork from a fresh interpreter that imported xpnet once (cheap starts, and nothing
# inherited from whatever earlier tests left in this process)
FORK = multiprocessing.get_context("forkserver")
FORK.set_forkserver_preload(["xpnet.cli", "xpnet.cli.train", "xpnet.training.trainer", "xpnet.nn.model", "xpnet.experiments.tune", "xpnet.experiments.sweep", "numpy", "optuna", "sqlalchemy"])  # one server per pytest process: the union of what the workers need
KILLS = 8


def _child(args):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from xpnet.cli import main

    os._exit(main([str(a) for a in args]))


def _train(args, wait=True):
    p = FORK.Process(target=_child, args=(args,))
    p.start()
    if wait:
        p.join(120)
        assert p.exitcode == 0, f"xpnet {' '.join(map(str, args))} exited {p.exitcode}"
    return p


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_idx(tmp_path_factory.mktemp("crash-data"), n_train=200, n_test=40)


def _args(data_dir, folder, seed):
    # a wide layer: the model file is ~5 MB and the checkpoint (Adam's moments too) ~14 MB, so writing
    # them is a large part of each epoch
    return ["train", "--data-dir", data_dir, "--recipe", "plain", "--optimizer", "adam", "--hidden", "1500",
            "--epochs", "3", "--batch-size", "100", "--seed", seed, "--checkpoint-every", "1",
            "--out", folder / "model.npz", "--quiet"]


def _params(path):
    return [np.asarray(p) for p in xpnet.load(path).params]


def test_sigkill_while_writing_leaves_old_or_new_and_resume_continues(data_dir, tmp_path):
    # the "old" files: a complete run with another seed; the reference: the complete run with ours
    old, ref = tmp_path / "old", tmp_path / "ref"
    old.mkdir(), ref.mkdir()
    _train(_args(data_dir, old, 1))
    t0 = time.perf_counter()
    _train(_args(data_dir, ref, 0))
    full = time.perf_counter() - t0
    old_model, old_ckpt = (old / "model.npz").read_bytes(), (old / "model.ckpt.npz").read_bytes()
    ref_params = _params(ref / "model.npz")

    rng = random.Random(13)
    outcomes = {"old": 0, "new": 0}
    mid_write = 0
    resumed = 0
    for k in range(KILLS):
        run = tmp_path / f"run{k}"
        run.mkdir()
        (run / "model.npz").write_bytes(old_model)
        (run / "model.ckpt.npz").write_bytes(old_ckpt)
        p = _train(_args(data_dir, run, 0), wait=False)
        if k % 2 == 0:
            time.sleep(rng.uniform(0, full))
        else:  # aim at the j-th write (checkpoints of epochs 1-3, then --out): its temp file appears, then a
            # random moment inside it
            j, seen = 1 + (k // 2) % 4, set()
            deadline = time.monotonic() + full * 2
            while time.monotonic() < deadline and p.is_alive() and len(seen) < j:
                seen.update(name for name in os.listdir(run) if name.endswith(".tmp"))
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.01))  # a write of the checkpoint takes tens of ms: land inside it
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        leftovers = [n for n in os.listdir(run) if n.endswith(".tmp")]
        mid_write += bool(leftovers)
        for tmp in leftovers:  # what a kill inside a write leaves: a temp file, never the target
            os.unlink(run / tmp)
        for name, old_bytes in (("model.npz", old_model), ("model.ckpt.npz", old_ckpt)):
            data = (run / name).read_bytes()
            if data == old_bytes:
                outcomes["old"] += 1
                continue
            outcomes["new"] += 1
            if name == "model.npz":
                xpnet.load(run / name)  # complete and valid
            else:
                net, state, cfg = load_checkpoint(run / name)
                assert cfg["seed"] == 0 and state["epoch"] >= 1  # the new run's, at an epoch boundary
        # resume from the surviving checkpoint (a few times: each is a run): it finishes the run
        if resumed < 2 and (run / "model.ckpt.npz").read_bytes() != old_ckpt:
            _train(["train", "--resume", run / "model.ckpt.npz", "--epochs", "3", "--out", run / "model.npz",
                    "--quiet"])
            for a, b in zip(_params(run / "model.npz"), ref_params):
                np.testing.assert_array_equal(a, b)  # exactly the uninterrupted run's weights
            resumed += 1
    assert mid_write >= 2, f"only {mid_write} of {KILLS} kills landed inside a write"
    assert outcomes["old"] and outcomes["new"], outcomes
    assert resumed >= 1
    print(f"{KILLS} kills: {mid_write} inside a write; files found old {outcomes['old']}, new {outcomes['new']}; "
          f"{resumed} resumed", file=sys.stderr)
