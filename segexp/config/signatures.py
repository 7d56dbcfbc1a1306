"""The keyword arguments a `_target_` takes, found without importing it where possible: segexp's
builders import Keras (~12 s of TensorFlow), so their source is read with `ast`; keras optimizers
come from a table. Other targets, and what the source cannot tell, are imported."""

import ast
import importlib.util
import inspect
import sys
from importlib.machinery import ModuleSpec

from segexp.config.optimizers import KERAS_OPTIMIZERS, PREFIX, optimizer_arguments

# Packages whose public names are re-exports of re-exports: found by importing (seconds).
_HEAVY = ("keras", "tensorflow", "tf_keras", "torch", "jax")
_UNKNOWN = object()  # what the source alone cannot tell


class TargetNotFound(LookupError):
    """A `_target_` that names no class or function."""


def target_arguments(target: str) -> frozenset[str] | None:
    """The keyword arguments `target` accepts; None when it takes any (**kwargs)."""
    table = optimizer_arguments(target)
    if table is not None:
        return table
    if target.startswith(PREFIX) and target.count(".") == 2:
        raise TargetNotFound(
            f"keras.optimizers has no {target.removeprefix(PREFIX)}; it has "
            + ", ".join(sorted(KERAS_OPTIMIZERS))
        )
    top = target.split(".")[0]
    if top not in _HEAVY and target.rpartition(".")[0] not in sys.modules:  # else: imported
        found = _from_source(target, depth=0)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
    return _from_import(target)


def _from_import(target: str) -> frozenset[str] | None:
    try:
        obj = _locate(target)
    except Exception as err:  # ImportError, AttributeError, or the module failing to import
        module, _, name = target.rpartition(".")
        if isinstance(err, AttributeError) and module in sys.modules:  # as the source reader says
            raise TargetNotFound(f"module {module} has no {name}") from None
        first = (str(err).strip().splitlines() or [""])[0]
        raise TargetNotFound(f"cannot import it ({type(err).__name__}: {first})") from None
    if not callable(obj):
        raise TargetNotFound("it is not a class or function")
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: take its word
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters if p.kind in keyword)


def _locate(target: str) -> object:
    """Import the longest module prefix of `target` and read the rest as attributes."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as err:
            if err.name is None or not ".".join(parts[:i]).startswith(err.name):
                raise  # the module exists but imports something missing
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(f"no module named {parts[0]}")


def _find_module(target: str) -> tuple[ModuleSpec, str]:
    """The spec of the deepest module in `target` and the name after it; importing only the
    packages above it (their __init__), never the module itself."""
    parts = target.split(".")
    spec = None
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            break
        spec = found
        if found.submodule_search_locations is None:  # a module, not a package
            break
    if spec is None:
        raise TargetNotFound(f"there is no module {parts[0]}")
    rest = target[len(spec.name) + 1 :]
    return spec, rest


def _from_source(target: str, depth: int) -> object:
    """Arguments from the module's source; _UNKNOWN when only an import can tell."""
    spec, rest = _find_module(target)
    if not rest:
        raise TargetNotFound("it names a module, not a class or function")
    if "." in rest and spec.submodule_search_locations is not None:
        raise TargetNotFound(f"there is no module {spec.name}.{rest.split('.')[0]}")
    if "." in rest or depth > 3 or not (spec.origin or "").endswith(".py"):
        return _UNKNOWN
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    found = _UNKNOWN
    bound = False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == rest:
            found, bound = _arguments(node.args, skip_first=False), True
        elif isinstance(node, ast.ClassDef) and node.name == rest:
            init = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
            found = _arguments(init[-1].args, skip_first=True) if init else _UNKNOWN
            bound = True
        elif isinstance(node, ast.ImportFrom) and any(
            (a.asname or a.name) in (rest, "*") for a in node.names
        ):
            found, bound = _followed(node, rest, spec, depth), True
        elif _binds(node, rest) or _is_getattr(node):
            found, bound = _UNKNOWN, True
    if not bound:
        raise TargetNotFound(f"module {spec.name} has no {rest}")
    return found


def _followed(node: ast.ImportFrom, rest: str, spec: ModuleSpec, depth: int) -> object:
    """Follow `from X import name` (a re-export, e.g. segexp.losses) to X's definition."""
    alias = next(a for a in node.names if (a.asname or a.name) in (rest, "*"))
    if alias.name == "*":
        return _UNKNOWN
    base = node.module or ""
    if node.level:
        package = spec.name if spec.submodule_search_locations else spec.name.rpartition(".")[0]
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    try:
        return _from_source(f"{base}.{alias.name}", depth + 1)
    except TargetNotFound:
        return _UNKNOWN


def _binds(node: ast.stmt, name: str) -> bool:
    """Whether a module-level statement other than def/class/from-import binds `name` (looking
    into if/try/with blocks, not into function or class bodies)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name == name
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any((a.asname or a.name.split(".")[0]) in (name, "*") for a in node.names)
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t))
    blocks = [getattr(node, f, []) for f in ("body", "orelse", "finalbody", "handlers")]
    return any(_binds(child, name) for block in blocks for child in block)


def _is_getattr(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef) and node.name == "__getattr__"


def _arguments(args: ast.arguments, skip_first: bool) -> frozenset[str] | None:
    if args.kwarg is not None:
        return None
    names = [a.arg for a in args.args]
    if skip_first and not args.posonlyargs:  # self
        names = names[1:]
    return frozenset([*names, *(a.arg for a in args.kwonlyargs)])
