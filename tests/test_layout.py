"""The package's shape, checked: the pipeline's layers import only downwards, no import cycles (lazy,
function-level imports included), click only in ``xpnet/cli``, name lists only in ``xpnet/choices``."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xpnet"

# Lower layers never import higher ones. Same-layer imports are allowed (but no cycles).
LAYERS = [
    ("errors", "choices", "_cuda_src"),
    ("fileio", "compat", "progress"),
    ("backend",),
    ("ops",),
    ("nn", "optim", "data"),
    ("io",),
    ("training", "sklearn", "selftest"),
    ("demo", "experiments"),
    ("cli", "__main__"),
]
# The one lazy upward edge the design keeps on purpose: MLP.save delegates to the file format's home.
ALLOWED_UP = {("xpnet.nn.model", "xpnet.io.npz")}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


MODULES = dict(_modules())


def _resolve(name):
    """The module a dotted import lands on (``xpnet.nn.model.MLP`` → ``xpnet.nn.model``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name, path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            if target.startswith("xpnet"):
                resolved = _resolve(target)
                if resolved and resolved != name:
                    found.add(resolved)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module):
    top = module.split(".")[1] if "." in module else "__init__"
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    return None


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if m != "xpnet" and _layer(m) is None)
    assert not missing, f"add these to LAYERS in {__file__}: {missing}"


def test_layers_import_only_downwards():
    up = sorted((a, b) for a, deps in GRAPH.items() if a != "xpnet" for b in deps
                if b != "xpnet" and _layer(b) > _layer(a) and (a, b) not in ALLOWED_UP)
    assert not up, "imports that climb the pipeline: " + ", ".join(f"{a} → {b}" for a, b in up)


def test_no_import_cycles():
    graph = {a: {b for b in deps if b != "xpnet" and (a, b) not in ALLOWED_UP} for a, deps in GRAPH.items()}
    # packages import their own submodules by design; a cycle through a package's __init__ counts
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    cycles = [c for c in cycles if not all(m.startswith(c[0].rpartition(".")[0] + ".") or m == c[0].rpartition(".")[0]
                                           for m in c) or len({_layer(m) for m in c}) > 1]
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if not m.startswith("xpnet.cli")))
def test_click_only_in_the_cli(name):
    source = MODULES[name].read_text(encoding="utf-8")
    assert "import click" not in source, f"{name} imports click: command-line code belongs in xpnet/cli"


def test_name_lists_are_defined_once():
    lists = {'"relu", "leaky_relu", "sigmoid", "tanh"', '"sgd", "momentum", "rmsprop"', '"he", "xavier", "normal"',
             '"constant", "step", "exponential", "cosine"'}
    copies = [(name, text) for name, path in MODULES.items() if name != "xpnet.choices"
              for text in lists if text in path.read_text(encoding="utf-8")]
    assert not copies, f"name lists copied outside xpnet/choices.py: {copies}"
