"""The layering holds: no import cycles among the project's modules.

Module-level imports (what runs at import time) must form no cycle at all. An import
under ``if TYPE_CHECKING:`` that closes a cycle is allowed only when its block says why
in a comment (a type named both ways, e.g. the Stack and the layers it owns) — so a new
cycle fails here until someone decides it is needed and writes down why. Imports inside
functions are not module-level and are not counted (they are the usual way to break a
cycle at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stack", "rmgr")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _block_has_comment(src_lines: list[str], node: ast.If) -> bool:
    """A comment on the ``if TYPE_CHECKING:`` line or inside its block."""
    end = node.body[-1].end_lineno or node.lineno
    return any("#" in src_lines[i - 1] for i in range(node.lineno, end + 1))


Edge = tuple[str, str]


def _graph() -> tuple[dict[str, set[str]], dict[Edge, bool]]:
    """(module → modules it imports at module level or for types,
    type-only edge → whether its block explains itself)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    typed: dict[Edge, bool] = {}
    runtime: set[Edge] = set()
    for mod, path in mods.items():
        text = path.read_text()
        lines = text.splitlines()
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

        def targets(node: ast.Import | ast.ImportFrom, mod: str = mod, pkg: str = pkg) -> list[str]:
            out = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in node.names]
            for n in names:
                t = resolve(n)
                if t is not None and t != mod:
                    out.append(t)
            return out

        def visit(body: list[ast.stmt], explained: bool | None, mod: str = mod,
                  lines: list[str] = lines) -> None:
            for node in body:
                if isinstance(node, ast.If) and _is_type_checking(node.test):
                    visit(node.body, _block_has_comment(lines, node))
                    visit(node.orelse, explained)
                elif isinstance(node, ast.Import | ast.ImportFrom):
                    for t in targets(node):
                        graph[mod].add(t)
                        if explained is None:
                            runtime.add((mod, t))
                        else:
                            typed[(mod, t)] = typed.get((mod, t), True) and explained
                elif isinstance(node, ast.If | ast.Try):
                    visit(node.body, explained)
                    for h in getattr(node, "handlers", []):
                        visit(h.body, explained)
                    visit(node.orelse, explained)

        visit(ast.parse(text).body, None)
    # an edge imported both at run time and for types is a run-time edge
    for edge in runtime:
        typed.pop(edge, None)
    return graph, typed


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles_at_run_time() -> None:
    graph, typed = _graph()
    runtime = {m: {t for t in ts if (m, t) not in typed} for m, ts in graph.items()}
    assert _sccs(runtime) == [], "module-level import cycle(s)"


def test_type_only_cycles_say_why() -> None:
    graph, typed = _graph()
    unexplained = []
    for comp in _sccs(graph):
        members = set(comp)
        unexplained += [f"{a} -> {b}" for (a, b), ok in sorted(typed.items())
                        if a in members and b in members and not ok]
    assert unexplained == [], (
        "TYPE_CHECKING imports closing a cycle, with no comment in their block saying why "
        "(or remove the cycle):\n  " + "\n  ".join(unexplained))


def test_the_checker_sees_cycles(tmp_path: Path) -> None:
    """The checker itself: a made-up cycle is found, a broken one is not."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _sccs(g) == [["a", "b", "c"]]
    g["c"] = set()
    assert _sccs(g) == []
