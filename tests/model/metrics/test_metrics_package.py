"""smdim.metrics as a package: every public name is re-exported, and the modules import without cycles."""
import ast
import importlib
import pathlib

import smdim.metrics as M

# The public names of the single-module smdim.metrics this package replaced.
OLD_API = ["ATTRIBUTES", "BANDWIDTH_FLOOR", "CI", "Piece", "SIGMA_FLOOR", "attribute_oa", "attribute_values",
           "bootstrap_ci", "compare", "consistency_score", "copy_rate", "dense_chord_rate", "format_table",
           "framewise_oa", "gaussian_overlap", "invalid_token_rate", "kde_overlap", "max_polyphony",
           "piece_framewise_oa", "pitch_outlier_rate", "prepare", "real_vs_real", "variance_score"]
MODULES = ["notes", "framewise", "attributes", "drift", "oa", "intervals", "failures", "tokens", "report"]


def test_every_public_name_is_reexported():
    assert set(OLD_API) <= set(M.__all__)
    assert {"FRAMEWISE_KEYS", "PROTOCOLS", "paired_bootstrap_ci"} <= set(M.__all__)
    assert len(M.__all__) == len(set(M.__all__))
    for name in M.__all__:
        obj = getattr(M, name)
        home = getattr(obj, "__module__", None)
        if callable(obj) and home is not None:  # functions and classes live in one of the concept modules
            assert home in {f"smdim.metrics.{m}" for m in MODULES}, (name, home)
    ns = {}
    exec("from smdim.metrics import *", ns)
    assert set(M.__all__) <= set(ns)
    import smdim.tokenizer as T

    assert not hasattr(T, "invalid_token_rate")  # one invalid-token rule, in smdim.metrics.tokens


def test_modules_form_no_import_cycle():
    root = pathlib.Path(M.__file__).parent
    assert sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__") == sorted(MODULES)
    deps = {}
    for m in MODULES:
        tree = ast.parse((root / f"{m}.py").read_text())
        deps[m] = {node.module for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
        assert deps[m] <= set(MODULES), (m, deps[m])
        importlib.import_module(f"smdim.metrics.{m}")
    state = {}

    def visit(m, path):
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        if state.get(m) == "done":
            return
        state[m] = "open"
        for d in deps[m]:
            visit(d, path + [m])
        state[m] = "done"

    for m in MODULES:
        visit(m, [])
    assert deps["notes"] == set()  # the base of the package
