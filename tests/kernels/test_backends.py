"""smdim_kernels.backends: a missing triton degrades to the reference with one warning; the C++
build's constants are checked; backend_info says per op what runs."""
import warnings

import pytest

import torch

import smdim_kernels
from smdim_kernels import backends


def test_missing_triton_returns_none_and_warns_once(monkeypatch):
    def no_triton(name, package=None):
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(backends.importlib, "import_module", no_triton)
    monkeypatch.setattr(backends, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"triton is unavailable .* CUDA demo_op runs on the slow PyTorch"):
        assert backends.triton_kernels("smdim_kernels.ops.add_norm", "demo_op") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.triton_kernels("smdim_kernels.ops.add_norm", "demo_op") is None


def test_reference_warning_names_op_and_device(monkeypatch):
    monkeypatch.setattr(backends, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"no fused add_norm kernel for device 'mps'"):
        backends.warn_reference("add_norm", "mps")


def test_the_build_reports_the_python_constants():
    assert backends.native_available(), backends.native_unavailable_reason()
    assert tuple(torch.ops.smdim_native.scan_constants()) == (smdim_kernels.CHECKPOINT_CHUNK, smdim_kernels.MAX_DSTATE)
    assert backends._check_constants() is None


def test_a_build_with_other_constants_is_refused(monkeypatch):
    class Stale:
        @staticmethod
        def scan_constants():
            return [32, 256]

        cpu_isa = staticmethod(lambda: "generic")

    monkeypatch.setattr(torch.ops, "smdim_native", Stale())
    assert "built with (checkpoint chunk, max N) = (32, 256), but this package expects (64, 256)" in \
        backends._check_constants()


def test_backend_info_is_truthful_per_op():
    info = smdim_kernels.backend_info()
    isa = backends.cpu_isa()
    # every op this library declares (smdim::<op>_fwd / _bwd)
    declared = {name.split("::")[1].removesuffix("_fwd").removesuffix("_bwd")
                for name in torch._C._dispatch_get_all_op_names() if name.startswith("smdim::")}
    assert set(info) == declared
    assert set(info) == {"selective_scan", "causal_conv1d", "add_norm", "mamba_inner", "mamba_mixer",
                         "local_attention", "activation_linear"}
    for op in ("selective_scan", "causal_conv1d"):
        assert isa in info[op]["cpu"] and "ISA-dispatched" in info[op]["cpu"]
    assert isa not in info["add_norm"]["cpu"] and info["add_norm"]["cpu"].startswith("C++ (")  # not ISA-dispatched
    assert "compiler-vectorised" in info["add_norm"]["cpu"]
    assert info["mamba_inner"]["cpu"].startswith("composite")
    assert "flash" in info["local_attention"]["cpu"] and "flash" not in info["local_attention"]["cuda"]
