"""Test-session setup shared by every test module."""
import os
import shutil
import tempfile

# The Triton kernels run on CPU tensors only under the interpreter, which triton reads when it
# is first imported; set it before any test module imports triton (TRITON_INTERPRET=0 on a GPU).
os.environ.setdefault("TRITON_INTERPRET", "1")
# Compile tests must compile this code: a fresh Inductor cache per session, never one filled by an
# earlier version of the ops (whose fake kernels may describe other output layouts).
_INDUCTOR_CACHE = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="smdim-tests-inductor-")

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A token cache of the test session (the user's ~/.cache/smdim is never touched)."""
    return str(tmp_path_factory.mktemp("token_cache"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, cache_dir):
    """A tiny trained run (3 steps on the Han songs at 64 tokens): smdim train's checkpoint.pt."""
    from smdim.cli import main

    out = tmp_path_factory.mktemp("run")
    assert main(["--threads", "1", "train", "--data", "han", "--out", str(out), "--steps", "3", "--batch-size", "2",
                 "--seq-len", "64", "--eval-every", "3", "--cache-dir", cache_dir]) == 0
    return out / "checkpoint.pt"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_INDUCTOR_CACHE, ignore_errors=True)
