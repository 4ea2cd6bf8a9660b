"""Preamble of the Triton test modules: skip cleanly without triton/numpy or a place to run.

Importing this skips the importing test module when triton or numpy is missing, or when neither
the interpreter (TRITON_INTERPRET=1, set by conftest.py unless overridden) nor CUDA is available.
"""
import os

import pytest

pytest.importorskip("numpy")
pytest.importorskip("triton")

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("Triton kernels need a CUDA device, or TRITON_INTERPRET=1 to run on CPU in the interpreter",
                allow_module_level=True)
DEVICE = "cpu" if INTERPRET else "cuda"
