"""The import directions docs/architecture.md draws, checked on the code: every import of a
project module (at the top of a file or inside a function) points to the same layer or a
lower one, and the modules form no cycle. Imports under ``if TYPE_CHECKING:`` do not run and
are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("edge_runtime.errors", "edge_runtime.version", "edge_runtime.manifest", "edge_runtime.reference",
              "edge_runtime.prediction", "edge_runtime.metrics", "edge_runtime.cache", "edge_runtime.breaker",
              "edge_runtime.deadline", "edge_runtime.background", "edge_runtime.drift", "edge_runtime.predlog",
              "edge_runtime.inputs", "edge_runtime.rows", "edge_runtime.backends")),
    ("model", ("edge_runtime.model", "edge_runtime.microbatch", "edge_runtime.fallback", "edge_runtime.options")),
    ("serving", ("edge_runtime.serving", "edge_runtime.fastpath", "edge_runtime.experiment", "edge_runtime.health",
                 "edge_runtime.runtime")),
    ("device", ("edge_runtime.config", "edge_runtime.store", "edge_runtime.loading", "edge_runtime")),
    ("services", ("edge_runtime.sync", "edge_runtime.http", "edge_runtime.bench", "edge_runtime.updates",
                  "edge_runtime.fleet", "edge_runtime.pipelines")),
    ("agent", ("edge_runtime.agent", "edge_runtime.doctor")),
    ("converters", ("converters",)),
    ("cli", ("edge_runtime.cli", "edge_runtime.__main__", "converters.cli", "converters.__main__")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def layer(module: str) -> str:
    best, best_len = "", -1
    for name, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = name, len(p)
    assert best, f"{module} is in no layer: add it to LAYERS and to docs/architecture.md"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known  # from pkg import submodule
            found.update(subs or {node.module})
    return found & known


def project_graph() -> dict[str, set[str]]:
    files = [p for pkg in ("edge_runtime", "converters") for p in (ROOT / pkg).rglob("*.py")
             if "build" not in p.relative_to(ROOT).parts]  # setuptools' build/ copies are not the code
    known = {module_name(p): p for p in files}
    graph = {}
    for name, path in known.items():
        graph[name] = imports(path, set(known)) - {name}
    return graph


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for mod, deps in sorted(project_graph().items()):
        for dep in sorted(deps):
            if RANK[layer(dep)] > RANK[layer(mod)]:
                wrong.append(f"{mod} ({layer(mod)}) imports {dep} ({layer(dep)})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_runtime_never_imports_the_converters() -> None:
    graph = project_graph()
    bad = [f"{m} -> {d}" for m, deps in graph.items() if m.startswith("edge_runtime")
           for d in deps if d.startswith("converters")]
    assert not bad


def test_no_import_cycles() -> None:
    edges = project_graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
