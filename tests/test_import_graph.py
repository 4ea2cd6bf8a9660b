"""The import graph of smdim_kernels, smdim and benchmarks has no circle (imports inside functions
included: a lazy import that closes a circle is still one). Edges go to the module imported (`from
pkg import sub` -> pkg.sub when sub is a module, compiled or not, else pkg), not to every parent
package. In benchmarks, only `python -m benchmarks.report` runs report.py: the report's sections
share report_kit.py and import neither report.py nor one another."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("smdim_kernels", "smdim", "benchmarks")


def _modules():
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _resolve(module, is_package, level, target):
    if level == 0:
        return target
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _is_submodule(base, name, modules):
    """Whether `from base import name` imports a module: a .py one, or a compiled one (_C)."""
    return f"{base}.{name}" in modules or any((ROOT / base.replace(".", "/")).glob(f"{name}.*.so"))


def import_graph():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                targets = [f"{base}.{alias.name}" if _is_submodule(base, alias.name, modules) else base
                           for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_packages_import_without_a_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checker_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    assert "smdim_kernels.backends" in graph["smdim_kernels.ops.selective_scan.interface"]
    assert "smdim_kernels.ops.selective_scan.constants" in graph["smdim_kernels.backends"]  # inside a function


def test_the_graph_sees_the_benchmarks_lazy_imports():
    graph = import_graph()
    assert "benchmarks.scan_peers" in graph["benchmarks.scan_cases"]  # `from . import scan_peers` in a function
    assert "benchmarks.scan_cases" in graph["benchmarks.memory"]


def test_only_the_entry_point_assembles_the_benchmark_report():
    graph = import_graph()
    assert [name for name, edges in graph.items() if "benchmarks.report" in edges] == []
    sections = {name for name in graph if name.startswith("benchmarks.") and name.endswith("_report")}
    assert {"benchmarks.scan_report", "benchmarks.layer_report", "benchmarks.model_report",
            "benchmarks.hf_mamba_report", "benchmarks.studio_report"} <= sections
    assert sections <= graph["benchmarks.report"]
    for name in sections | {"benchmarks.report_kit"}:
        assert not graph[name] & sections, f"{name} imports {sorted(graph[name] & sections)}"
