"""Counts that tell how the package is built: long files, long functions, import cycles.

    python tools/structure_report.py [--package lib_merge]

Imports are read from the source (including those inside functions), so a cycle that an
import inside a function hides still counts. The layering test uses the same walk.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Module:
    name: str  # dotted: lib_merge.engine.run
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # dotted names of imported project modules
    external: set[str] = field(default_factory=set)  # top-level names of other imported packages
    functions: list[tuple[str, int]] = field(default_factory=list)  # (qualified name, lines)


def _module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def read_package(package: str = "lib_merge", root: Path = ROOT) -> dict[str, Module]:
    """Every module of the package with what it imports (project modules and outside packages)."""
    package_root = root / package
    modules: dict[str, Module] = {}
    for path in sorted(package_root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = _module_name(path, package_root)
        module = Module(name, path, len(text.splitlines()))
        tree = ast.parse(text, str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, path.name == "__init__.py")
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                top = target.split(".")[0]
                if top == package:
                    module.imports.add(target)
                elif target:
                    module.external.add(top)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module.functions.append((f"{name}.{node.name}", node.end_lineno - node.lineno + 1))
        modules[name] = module
    for module in modules.values():  # keep only names that are modules ("from x import name" gives x)
        module.imports = {t for t in module.imports if t in modules and t != module.name}
    return modules


def package_of(module: str, package: str = "lib_merge") -> str:
    """The unit of layering: a subpackage (lib_merge.engine) or a top-level module (lib_merge.errors)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def module_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    # A module importing its own package's face (`from lib_merge.recipe import …` inside recipe/)
    # goes through __init__, which imports the module's siblings; that edge is how packages work.
    return {name: {t for t in m.imports if not name.startswith(t + ".")} for name, m in modules.items()}


def package_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, module in modules.items():
        mine = package_of(name)
        graph.setdefault(mine, set()).update(package_of(t) for t in module.imports if package_of(t) != mine)
    return graph


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="lib_merge")
    parser.add_argument("--top", type=int, default=10, help="how many of the longest functions to list")
    args = parser.parse_args()
    modules = read_package(args.package)
    long_files = sorted((m for m in modules.values() if m.lines > 300), key=lambda m: -m.lines)
    print(f"modules: {len(modules)}, lines: {sum(m.lines for m in modules.values())}")
    print(f"files over 300 lines: {len(long_files)}")
    for m in long_files:
        print(f"  {m.lines:5d}  {m.path.relative_to(ROOT)}")
    functions = sorted((f for m in modules.values() for f in m.functions), key=lambda f: -f[1])
    print(f"longest functions (of {len(functions)}):")
    for name, lines in functions[: args.top]:
        print(f"  {lines:5d}  {name}")
    for label, graph in (("package", package_graph(modules)), ("module", module_graph(modules))):
        found = cycles(graph)
        print(f"{label} import cycles: {len(found)}")
        for group in found:
            print("  " + " <-> ".join(group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
