"""The house rules, checked on the source: module sizes, private names, import cycles, and the
one place where stored objects are named and the raw object store is called.

These read the product's source (migrator/ and pipelines/) with `ast`; they import nothing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("migrator", "pipelines")
MAX_LINES = 400
# Modules that may stay longer, each with the reason the README gives.
LONG_MODULES: dict[str, str] = {}
NAMES_MODULE = "migrator.repository.names"
# Where the raw object store may be called: the stores themselves, the repository that stands
# between them and everything else, and the demo's set-up of its stand-ins. (write/upload.py
# drives multipart parts through the MultipartStore protocol; its single put is the repository's.)
# Landing targets are adapters over a landing bucket's store (not the archive's), as stores are.
RAW_STORE_ALLOWED = (
    "migrator.stores.",
    "migrator.repository.",
    "migrator.demo.",
    "migrator.landing.bucket",
    "migrator.landing.shard_files",
)
# Public functions of the standard library whose names start with "_" by design.
STDLIB_UNDERSCORED = {"os._exit"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    text: str

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            text = path.read_text(encoding="utf-8")
            found.append(Module(".".join(parts), path, ast.parse(text), text))
    return tuple(found)


def product_modules() -> Iterator[Module]:
    for m in modules():
        if ".migrations." not in f"{m.name}.":
            yield m


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: Module) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import in the module."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield _resolve(module, node), [a.name for a in node.names], node.lineno


def test_no_product_module_is_over_the_limit() -> None:
    long = {
        m.name: len(m.text.splitlines())
        for m in product_modules()
        if len(m.text.splitlines()) > MAX_LINES and m.name not in LONG_MODULES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_every_long_module_is_explained_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in LONG_MODULES:
        assert name.replace(".", "/") in readme, f"{name} is long and the README does not say why"


def test_no_module_imports_another_modules_private_names() -> None:
    known = {m.name for m in modules()}
    found = []
    for m in product_modules():
        for target, names, line in imports(m):
            if target in known and target != m.name:
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    found.append(f"{m.path.relative_to(ROOT)}:{line} {target} {private}")
    assert found == [], "\n".join(found)


def test_no_object_reaches_into_another_objects_private_attributes() -> None:
    """`other._x` couples two classes; only an object's own privates (`self`, `cls`, or a
    peer of its own class inside a dunder method such as `__eq__`) are its business."""
    found = []
    for m in product_modules():
        for node, function in _attributes(m.tree, None):
            if not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if ast.unparse(node) in STDLIB_UNDERSCORED:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                continue
            if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
                continue
            if isinstance(owner, ast.Name) and owner.id in _own_class_names(m):
                continue  # a class's own private class attribute
            if function is not None and function.startswith("__") and function.endswith("__"):
                continue
            found.append(f"{m.path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert found == [], "\n".join(found)


def _attributes(node: ast.AST, function: str | None) -> Iterator[tuple[ast.Attribute, str | None]]:
    for child in ast.iter_child_nodes(node):
        is_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        inner = child.name if is_function else function
        if isinstance(child, ast.Attribute):
            yield child, function
        yield from _attributes(child, inner)


def _own_class_names(m: Module) -> set[str]:
    return {n.name for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)}


def test_the_modules_import_no_circle() -> None:
    known = {m.name for m in modules()}
    graph: dict[str, set[str]] = {m.name: set() for m in modules()}
    for m in modules():
        for target, names, _line in imports(m):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in known and candidate != m.name:
                    graph[m.name].add(candidate)
                    if candidate != target:
                        break
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == [], f"import circles: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            out.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return out


# Pieces of the destination's and state_dir's layout: only repository/names.py may spell them.
_LAYOUT = re.compile(
    r"_generations|_ledger/|_deadletters|_keys/|manifest\.mgc|\.mgc\b|\.mgl\b"
    r"|\.spool\b|\.digests\b|\.inventory\b|\.delta\b"
    r"|/g\{[^}]*:06d\}|/s\{[^}]*:05d\}|\bg\{[^}]*:06d\}"
)


def _strings(m: Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(m.tree):
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, ast.get_source_segment(m.text, node) or ""
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _docstrings(m: Module) -> set[int]:
    lines = set()
    for node in ast.walk(m.tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                lines.add(body[0].value.lineno)
    return lines


def test_object_names_and_state_paths_are_made_in_one_place() -> None:
    found = []
    for m in product_modules():
        if m.name == NAMES_MODULE:
            continue
        docs = _docstrings(m)
        for line, text in _strings(m):
            if line in docs:
                continue
            for piece in text.splitlines() or [text]:
                if _LAYOUT.search(piece.strip()):
                    found.append(f"{m.path.relative_to(ROOT)}:{line} {piece.strip()[:80]}")
    assert found == [], "\n".join(found)


_RAW = re.compile(r"\bstore\.(put|get|list|delete|head|put_stream|open_read)\(")


def test_only_the_repository_calls_the_raw_object_store() -> None:
    found = []
    for m in product_modules():
        if m.name.startswith(RAW_STORE_ALLOWED) or m.name.startswith("pipelines"):
            continue
        for number, line in enumerate(m.text.splitlines(), 1):
            if _RAW.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{m.path.relative_to(ROOT)}:{number} {line.strip()[:80]}")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("package", ["write", "read", "maintain", "forecast", "repository"])
def test_the_stages_are_packages_that_say_what_they_hold(package: str) -> None:
    init = ROOT / "migrator" / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc, f"migrator/{package}/__init__.py says nothing of what the stage holds"
