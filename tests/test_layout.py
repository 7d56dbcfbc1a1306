"""The package layout: one home per concern, imports that run one way, small modules.

Reads every module's imports (function-level ones included) with `ast`, and checks the import
graph for cycles with scipy's strongly connected components.
"""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

import segexp

PACKAGE = Path(segexp.__file__).resolve().parent
# Top to bottom: a module may import its own package and the packages below it.
LAYERS = [
    {"train", "evaluate", "predict", "export", "check", "compare", "sync", "bench", "accuracy",
     "model_table", "losses", "schedules", "sweep"},  # commands, and the old names (aliases)
    {"cli"},
    {"perf", "search"},  # side by side: neither imports the other
    {"training"},
    {"evaluation"},
    {"inference"},
    {"tracking"},
    {"data", "models", "reporting"},  # side by side: none imports another
    {"config"},
    {"errors", "atomic", "console", "__init__"},
    {"secrets"},  # redaction of store passwords: imports nothing of segexp
]  # fmt: skip
ALIASES = {"losses", "schedules", "sweep"}  # old module names, kept as re-exports
COMMANDS = LAYERS[0] - ALIASES
LONG = 60  # lines; a longer function says why in its docstring ("Long: ...")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The segexp modules `name` imports anywhere in its file."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))  # fmt: skip
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def unit(name: str) -> str:
    """segexp.training.loop -> training; segexp.train -> train; segexp -> __init__."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(name: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit(name) in units)


def test_every_module_has_a_layer():
    assert all(any(unit(m) in units for units in LAYERS) for m in MODULES), sorted(
        m for m in MODULES if not any(unit(m) in units for units in LAYERS)
    )


def test_no_import_cycle():
    names = sorted(MODULES)
    index = {n: i for i, n in enumerate(names)}
    rows = [index[a] for a in names for _ in GRAPH[a]]
    cols = [index[b] for a in names for b in sorted(GRAPH[a])]
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    count, labels = connected_components(matrix, directed=True, connection="strong")
    cycles = [[n for n in names if labels[index[n]] == c] for c in range(count)]
    assert [c for c in cycles if len(c) > 1] == []


def test_imports_run_one_way():
    upward = [
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if unit(a) != unit(b) and (layer(b) < layer(a) or (layer(b) == layer(a) and layer(a) > 0))
    ]
    assert upward == []


def test_no_module_over_300_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > 300} == {}


def test_long_functions_are_few_and_say_why():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > LONG:
                    long[f"{name}.{node.name}"] = (length, ast.get_docstring(node) or "")
    assert len(long) <= 3, sorted(long)
    assert [f for f, (_, doc) in long.items() if "Long:" not in doc] == []


def test_top_level_holds_commands_leaves_and_old_names_only():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == COMMANDS | {"cli", "errors", "atomic", "console", "secrets", "__init__"} | ALIASES
    for name in ALIASES:
        assert len((PACKAGE / f"{name}.py").read_text().splitlines()) < 40  # thin: re-exports


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 60, init
        assert "import" in doc.lower(), init


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_inference_commands_do_not_import_training(command):
    reach, todo = set(), [f"segexp.{command}"]
    while todo:  # everything the command can import, function-level imports included
        for target in GRAPH[todo.pop()]:
            if target not in reach:
                reach.add(target)
                todo.append(target)
    assert sorted(m for m in reach if unit(m) in ("training", "perf")) == []
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, segexp.{command}; "
         "print(' '.join(m for m in sys.modules if m.startswith('segexp.')))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert f"segexp.{command}" in loaded
    assert [m for m in loaded if unit(m) in ("training", "perf")] == []


def test_old_module_names_still_resolve():
    """A run trained before the layout stored `_target_: segexp.losses.*` and
    `segexp.schedules.build` in its resolved config (what resume= instantiates), and its
    .hydra/hydra.yaml names the `segexp.sweep.MlflowSweep` callback."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import segexp.tracking.sweep
    import segexp.training.losses
    from segexp.config import CONFIG_DIR

    def stored_before(path: Path) -> dict:
        text = path.read_text().replace("segexp.training.", "segexp.")
        assert "segexp.losses." in text or "segexp.schedules." in text
        return OmegaConf.create(text)

    histogram = np.array([5, 3, 2])
    for option in sorted((CONFIG_DIR / "loss").glob("*.yaml")):
        old = instantiate(stored_before(option), num_classes=3, ignore_index=255,
                          histogram=histogram)  # fmt: skip
        new = instantiate(OmegaConf.load(option), num_classes=3, ignore_index=255,
                          histogram=histogram)  # fmt: skip
        assert type(old) is type(new) and old.get_config() == new.get_config(), option.stem
        assert type(new).__module__ == "segexp.training.losses"
    for option in sorted((CONFIG_DIR / "schedule").glob("*.yaml")):
        args = {"base_lr": 0.1, "steps_per_epoch": 4, "epochs": 3}
        old = instantiate(stored_before(option), **args)
        new = instantiate(OmegaConf.load(option), **args)
        steps = [0, 3, 7, 11]
        assert [float(old(s)) if callable(old) else old for s in steps] == [
            float(new(s)) if callable(new) else new for s in steps
        ], option.stem
    callback = instantiate({"_target_": "segexp.sweep.MlflowSweep"})
    assert isinstance(callback, segexp.tracking.sweep.MlflowSweep)
