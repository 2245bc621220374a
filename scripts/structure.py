"""The structure check CI runs: which way imports point, and how long functions and modules are.

Usage: python scripts/structure.py   (exit 1 and one line per breach when the code breaks a rule)

Every import counts, inside functions too. The rules:
- no import cycle between conveyor's modules;
- tiers, highest first: a module imports its own tier or lower ones only (TIERS);
- web never imports conveyor.node, a store or an actor: it calls the services;
- stores never import web or wire code; only the CLI and the package itself import conveyor.node;
- no function over MAX_FUNCTION lines and no module over MAX_MODULE lines in src/, except the
  declarative tables named in LONG (with why).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_FUNCTION = 80
MAX_MODULE = 400
LONG: dict[str, str] = {}  # "module" or "module:function" -> why it may be longer

# highest first; a module belongs to the first tier with a prefix that matches it
TIERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry", ("conveyor.cli", "conveyor.__main__", "conveyor")),
    ("node", ("conveyor.node", "conveyor.process", "conveyor.embedded")),
    ("web", ("conveyor.web",)),
    ("service", ("conveyor.jobs", "conveyor.rebuild", "conveyor.scheduling", "conveyor.tenants", "conveyor.auth", "conveyor.watch")),
    ("actors", ("conveyor.actors",)),
    ("stores", ("conveyor.stores",)),
    ("rules", ("conveyor.",)),  # rules, model, wire, validation, handlers and the other pure parts
]
FORBIDDEN: list[tuple[str, tuple[str, ...]]] = [
    ("conveyor.web", ("conveyor.node", "conveyor.stores", "conveyor.actors")),
    ("conveyor.stores", ("conveyor.web", "conveyor.wire")),
]
MAY_IMPORT_NODE = ("conveyor.cli", "conveyor")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def under(name: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".")


def tier_of(name: str) -> int:
    for index, (_, prefixes) in enumerate(TIERS):
        if any(name == p if p == "conveyor" else under(name, p) for p in prefixes):
            return index
    raise AssertionError(f"no tier for {name}")


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The conveyor modules `name` imports (a `from X import Y` counts Y when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = {f"{base}.{alias.name}" for alias in node.names}
            found.update(names)
            if not names <= modules or not under(name, base):
                found.add(base)  # an attribute of base, not (only) its submodules
    return {m for m in found if m in modules and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def length_breaches(path: Path, name: str) -> list[str]:
    lines = path.read_text().count("\n")
    out = []
    if lines > MAX_MODULE and name not in LONG:
        out.append(f"{path.relative_to(SRC.parent)}: module of {lines} lines (limit {MAX_MODULE})")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or node.lineno) - first + 1
            if size > MAX_FUNCTION and f"{name}:{node.name}" not in LONG:
                out.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: function {node.name} of "
                           f"{size} lines (limit {MAX_FUNCTION})")
    return out


def breaches() -> list[str]:
    paths = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    modules = set(paths)
    graph = {name: imports_of(path, name, modules) for name, path in paths.items()}
    out: list[str] = []
    for cycle in cycles(graph):
        out.append(f"import cycle: {' <-> '.join(cycle)}")
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if tier_of(target) < tier_of(name):
                out.append(f"{name} ({TIERS[tier_of(name)][0]}) imports {target} "
                           f"({TIERS[tier_of(target)][0]}), a higher tier")
            for source, banned in FORBIDDEN:
                if under(name, source) and any(under(target, b) for b in banned):
                    out.append(f"{name} imports {target}: {source} never imports {', '.join(banned)}")
            if target == "conveyor.node" and name not in MAY_IMPORT_NODE:
                out.append(f"{name} imports conveyor.node: only the CLI and the package do")
    for name, path in sorted(paths.items()):
        out += length_breaches(path, name)
    return out


def main() -> int:
    found = breaches()
    for line in found:
        print(line)
    if found:
        print(f"structure: {len(found)} breaches (scripts/structure.py says what the rules are)")
        return 1
    print(f"structure: ok ({len(list(SRC.rglob('*.py')))} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
