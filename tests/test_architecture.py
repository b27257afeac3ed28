"""docs/ARCHITECTURE.md holds: its "may import" column is compared with the imports the code
really makes (imports inside functions count; those under ``if TYPE_CHECKING:`` do not), so
the doc cannot drift; and the house rules a newcomer relies on are checked here: no import
cycle, rooms a person can hold in mind (modules ≤ 500 lines, functions ≤ 80), interpreter
internals in one small exit module, heavy libraries only in their rooms."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "trainkit"
DOC = REPO / "docs" / "ARCHITECTURE.md"

#: the one module that travels inside every logged model may be one file up to this size
BIG_OK = {"trainkit.signals_core": 600}
#: third-party libraries that only their rooms may import (module prefixes)
CONFINED = {
    "mlflow": ("trainkit.store", "trainkit.pyfunc_model"),
    "yfinance": ("trainkit.data.yahoo",),
    "stable_baselines3": ("trainkit.agents", "trainkit.store.flavor", "trainkit.pyfunc_model"),
    "optuna": ("trainkit.search",),
}
INTERNALS = ("threading._shutdown", "atexit._run_exitfuncs")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(mod: str) -> set[str]:
    """Every module ``mod`` imports (trainkit modules by full name, others by top-level name)."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name if a.name.startswith("trainkit") else a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("trainkit"):
                out.add(target.split(".")[0])
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in MODULES else target)
    out.discard(mod)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def internal(mod: str) -> set[str]:
    return {d for d in GRAPH[mod] if d in MODULES}


# ------------------------------------------------------------------------------ the doc's table
def doc_rows() -> dict[str, set[str]]:
    """``{module or package prefix: what it may import}`` from the table under "Rooms": the first
    column names a module (``config.py``) or a package (``store/``), the last one lists what it
    may import in backticks (``errors``, ``store.contract``, ``numpy``, …; stdlib is implied)."""
    text = DOC.read_text()
    section = text.split("## Rooms", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`").removesuffix(".py").rstrip("/").replace("/", ".")
        rows["trainkit" if name == "trainkit" else f"trainkit.{name}"] = set(re.findall(r"`([^`]+)`", cells[-1]))
    return rows


ROWS = doc_rows()


def row_for(mod: str) -> str | None:
    """The table row that covers ``mod``: its own, else its package's."""
    while mod:
        if mod in ROWS:
            return mod
        mod = mod.rpartition(".")[0]
    return None


def allowed(row: str, dep: str) -> bool:
    if dep in sys.stdlib_module_names or dep == "__future__":
        return True
    if dep.startswith(row + ".") or dep == row:  # inside its own package
        return True
    for entry in ROWS[row]:
        target = entry if not dep.startswith("trainkit") else f"trainkit.{entry}"
        if entry == "trainkit" and dep.startswith("trainkit"):
            target = "trainkit"
        if dep == target or dep.startswith(target + "."):
            return True
    return False


def test_every_module_has_a_row_in_the_doc() -> None:
    missing = sorted(m for m in MODULES if row_for(m) is None)
    assert not missing, f"docs/ARCHITECTURE.md's table has no row for {missing}"


def test_the_code_imports_only_what_the_doc_allows() -> None:
    wrong = sorted(f"{m} imports {d} (row {row_for(m)!r})" for m in MODULES for d in GRAPH[m]
                   if row_for(m) and not allowed(row_for(m), d))
    assert not wrong, "docs/ARCHITECTURE.md's 'may import' column and the code disagree:\n" + "\n".join(wrong)


def test_the_doc_lists_no_trainkit_import_the_code_does_not_make() -> None:
    stale = []
    for row, entries in ROWS.items():
        mods = [m for m in MODULES if row_for(m) == row]
        used = set().union(*(internal(m) for m in mods)) if mods else set()
        for entry in entries:
            full = f"trainkit.{entry}" if entry != "trainkit" else "trainkit"
            if full in MODULES or any(m.startswith(full + ".") for m in MODULES):
                if not any(u == full or u.startswith(full + ".") for u in used):
                    stale.append(f"{row} lists {entry}, which none of its modules imports")
    assert not stale, "\n".join(stale)


# ------------------------------------------------------------------------------ the house rules
def _cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in internal(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_confined_libraries_stay_in_their_rooms() -> None:
    wrong = [f"{m} imports {lib}" for m in MODULES for lib, rooms in CONFINED.items()
             if lib in GRAPH[m] and not m.startswith(rooms)]
    assert not wrong, wrong


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_rooms_a_newcomer_can_hold_in_mind(mod: str) -> None:
    path = MODULES[mod]
    text = path.read_text()
    assert len(text.splitlines()) <= BIG_OK.get(mod, 500), f"{path} has {len(text.splitlines())} lines"
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(ast.parse(text))
            if f.end_lineno - f.lineno + 1 > 80]
    assert not long, f"{path}: functions over 80 lines: {long}"


def test_interpreter_internals_only_in_the_exit_module() -> None:
    users = sorted(m for m, p in MODULES.items() if any(i in p.read_text() for i in INTERNALS))
    assert len(users) <= 1, users
    for m in users:
        assert len(MODULES[m].read_text().splitlines()) <= 80, f"{m}: the exit module must stay small"
    reach = [f"{m}:{n.lineno} .{n.attr}" for m, p in MODULES.items() if m.startswith("trainkit.cli")
             for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Attribute) and n.attr in ("store", "_processes")]
    assert not reach, f"the CLI reaches into a manager's store or a pool's processes: {reach}"
