"""House order of the distribution: the generation path (loading a checkpoint, sampling,
evaluating) never imports the training module; the kernel library needs torch alone, and the
music model's and the studio's dependencies are extras whose absence the command line names.
(No import circle: tests/test_import_graph.py.)"""
import subprocess
import sys
from pathlib import Path

import pytest

from smdim.cli import EXTRA_OF_MODULE

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python >= 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_generation_path_does_not_import_training_code():
    code = ("import sys, smdim.pipeline, smdim.commands, smdim.sampling, smdim.generation, smdim.checkpoint, "
            "smdim.evaluation, smdim.remi, smdim.studio.server; print('smdim.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _distribution(requirement):
    for stop in "=<>[ ;":
        requirement = requirement.split(stop)[0]
    return requirement.lower().replace("_", "-")


def _extra_distributions(extra):
    """Distributions an extra brings, following smdim[...] references."""
    found = set()
    for requirement in pyproject()["optional-dependencies"][extra]:
        if requirement.startswith("smdim["):
            for inner in requirement[len("smdim["):-1].split(","):
                found |= _extra_distributions(inner)
        else:
            found.add(_distribution(requirement))
    return found


def test_the_kernel_library_needs_torch_alone():
    assert [_distribution(r) for r in pyproject()["dependencies"]] == ["torch"]


def test_the_command_line_knows_which_extra_brings_each_module():
    for extra in ("music", "studio"):
        modules = {m.replace("_", "-") for m, e in EXTRA_OF_MODULE.items() if e == extra}
        own = _extra_distributions(extra) - (_extra_distributions("music") if extra == "studio" else set())
        assert modules == own, extra
    assert set(pyproject()["optional-dependencies"]["dev"][0][len("smdim["):-1].split(",")) >= {"studio", "bench"}


# Runs in a fresh interpreter in which the listed modules cannot be imported (as if not installed).
_WITHOUT = """
import sys, importlib.abc
import torch
BLOCKED = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in BLOCKED:  # as Python says it when the distribution is not installed at all
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
sys.meta_path.insert(0, Absent())
for loaded in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:  # e.g. numpy, tqdm, imported by torch
    del sys.modules[loaded]
"""


def _run_without(modules, code):
    return subprocess.run([sys.executable, "-c", _WITHOUT + code, ",".join(modules)], capture_output=True, text=True,
                          timeout=300)


def test_the_kernel_library_runs_without_the_music_stack():
    code = """
import smdim_kernels
layer = smdim_kernels.Mamba(16, bidirectional=True)
out = layer(torch.randn(2, 9, 16))
out.sum().backward()
print(tuple(out.shape))
"""
    run = _run_without(EXTRA_OF_MODULE, code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(2, 9, 16)"


@pytest.mark.parametrize("missing, argv, extra", [
    (list(EXTRA_OF_MODULE), ["generate", "--n", "1"], "music"),
    (["miditok"], ["generate", "--n", "1"], "music"),
    (["fastapi", "uvicorn"], ["serve", "--port", "0"], "studio"),
])
def test_a_missing_extra_is_one_line_naming_the_install(missing, argv, extra, tmp_path):
    code = f"from smdim.cli import main; sys.exit(main({argv!r}))"
    run = subprocess.run([sys.executable, "-c", _WITHOUT + code, ",".join(missing)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smdim: error: ") and f"pip install -e '.[{extra}]'" in lines[0], \
        run.stderr


def test_a_broken_installed_module_is_a_traceback_not_a_missing_extra(tmp_path):
    """An import that fails inside an installed package (a renamed name, a broken submodule) is a
    real error: it must not be reported as a missing extra."""
    code = ("import miditok; del miditok.REMI\n"
            "from smdim.cli import main; sys.exit(main(['generate', '--n', '1']))")
    run = subprocess.run([sys.executable, "-c", _WITHOUT + code, "nothing"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode != 0 and "Traceback" in run.stderr and "extra" not in run.stderr
