"""The shared fallback helpers: a missing triton degrades to the reference with one warning."""
import warnings

import pytest

from smdim_kernels.ops import _fallback


def test_missing_triton_returns_none_and_warns_once(monkeypatch):
    def no_triton(name, package=None):
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(_fallback.importlib, "import_module", no_triton)
    monkeypatch.setattr(_fallback, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"triton is unavailable .* CUDA demo_op runs on the slow PyTorch"):
        assert _fallback.triton_kernels("smdim_kernels.ops.add_norm", "demo_op") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _fallback.triton_kernels("smdim_kernels.ops.add_norm", "demo_op") is None


def test_reference_warning_names_op_and_device(monkeypatch):
    monkeypatch.setattr(_fallback, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"no fused add_norm kernel for device 'mps'"):
        _fallback.warn_reference("add_norm", "mps")
