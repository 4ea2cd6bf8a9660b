"""House order of the smdim package: no import circle between its modules (counting imports
inside functions too), and the generation path (loading a checkpoint, sampling, evaluating)
never imports the training module."""
import ast
import subprocess
import sys
from pathlib import Path

import smdim

PACKAGE = Path(smdim.__file__).parent


def _module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path):
    """smdim modules the file at `path` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] == "smdim":
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "smdim")
    return found


def test_no_import_circle_in_smdim():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {t for t in _imports(p) if t in files and t != name} for name, p in files.items()}
    # A package's __init__ importing its own submodules is not a circle of concepts.
    graph = {n: {t for t in ts if not (files[n].name == "__init__.py" and t.startswith(n + "."))}
             for n, ts in graph.items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)


def test_the_generation_path_does_not_import_training_code():
    code = ("import sys, smdim.pipeline, smdim.commands, smdim.sampling, smdim.generation, smdim.checkpoint, "
            "smdim.evaluation, smdim.remi, smdim.studio.server; print('smdim.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
