"""Portable text: every command works on a console that cannot encode UTF-8 (what LC_ALL=C or a
Windows cp1252 console gives), and nothing POSIX-only sits on an import path or runs unguarded."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_synthetic_idx

REPO = Path(__file__).resolve().parents[1]
POSIX_ONLY = {"pwd", "grp", "fcntl", "resource", "termios"}


def _run(args, cwd, console):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8", "LANG"))}
    env.update(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONIOENCODING=f"{console}:strict")
    return subprocess.run([sys.executable, "-m", "xpnet", *map(str, args)], capture_output=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.mark.parametrize("console", ["ascii", "cp1252"])
def test_commands_run_on_a_console_that_is_not_utf8(tmp_path, console):
    """LC_ALL=C (ascii) and a Windows console (cp1252): no UnicodeEncodeError, no traceback."""
    data = write_synthetic_idx(tmp_path / "fashion-mnist", n_train=200, n_test=40)  # Fashion's class names
    runs = [
        ["train", "--data-dir", data, "--hidden", "8", "--epochs", "1", "--out", tmp_path / "m.npz",
         "--metrics", tmp_path / "m.jsonl"],
        ["train", "--help"],
        ["evaluate", tmp_path / "m.npz", "--data-dir", data],
        ["sweep", "--data-dir", data, "--hidden", "8", "--epochs", "1", "--out", tmp_path / "sweep"],
        ["report", tmp_path / "sweep", "--out", tmp_path / "report"],
    ]
    for args in runs:
        proc = _run(args, tmp_path, console)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 0, (args, err[-2000:])
        assert "Traceback" not in err and "UnicodeEncodeError" not in err, (args, err[-2000:])
        if console == "cp1252":  # ascii: click deliberately writes UTF-8 to a "misconfigured" C-locale console
            proc.stdout.decode("cp1252")
    import xpnet

    assert xpnet.load(tmp_path / "m.npz").class_names[0] == "T-shirt/top"
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")  # files stay UTF-8 whatever the console
    assert "sweep" in report.lower()


def _module_level_imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", sorted([*REPO.joinpath("xpnet").rglob("*.py"), *REPO.joinpath("tests").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_posix_only_module_on_an_import_path(path):
    bad = POSIX_ONLY & set(_module_level_imports(path))
    assert not bad, f"{path.name} imports {bad} at module level: import it where it is used, guarded"


def test_no_unguarded_getloadavg():
    """os.getloadavg does not exist on Windows: xpnet.backend.load_average is the one guarded call."""
    users = [p for p in REPO.joinpath("xpnet").rglob("*.py") if "getloadavg" in p.read_text(encoding="utf-8")]
    assert users == [REPO / "xpnet" / "backend.py"], users


def test_load_average_without_getloadavg(monkeypatch):
    from xpnet import backend

    monkeypatch.delattr(os, "getloadavg", raising=False)
    assert backend.load_average() is None
