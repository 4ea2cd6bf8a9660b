"""Loading of the compiled library, the reference fallback, and every compiled ISA."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from smdim_kernels import backends

HERE = os.path.join(os.path.dirname(__file__), "ops")  # scan_inputs.py, the ops tests' problem maker


def run_python(code, **env):
    full_env = {**os.environ, **env, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=full_env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_missing_extension_warns_once_and_falls_back_to_reference():
    result = run_python("""
        import json, warnings
        warnings.simplefilter("always")
        import torch, smdim_kernels
        from scan_inputs import make_problem, run_scan
        p = make_problem(batch=1, dim=4, length=9, dstate=3)
        out, last = run_scan(smdim_kernels.selective_scan_fn, p)
        ref, ref_last = run_scan(smdim_kernels.selective_scan_ref, p)
        torch.testing.assert_close(out, ref)
        print(json.dumps(smdim_kernels.backend_info()))
    """, SMDIM_DISABLE_NATIVE="1")
    assert result.stderr.count("NativeExtensionWarning") == 1
    assert "pip install -e ." in result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["selective_scan"]["cpu"].startswith("PyTorch reference")


def test_a_refused_build_runs_the_reference_on_cpu():
    """A build that loads but reports other scan constants has registered its CPU kernels already:
    refusing it must put the references in their place (the warning and backend_info say so)."""
    result = run_python("""
        import json, warnings
        import torch, smdim_kernels
        from smdim_kernels import backends
        from scan_inputs import make_problem, outputs_and_grads

        class Stale:
            @staticmethod
            def scan_constants():
                return [32, 256]

        torch.ops.smdim_native = Stale()
        backends._loaded, backends._error = False, None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert not backends.load()
            p = make_problem(batch=1, dim=4, length=9, dstate=3)
            p.requires_grad_()
            got = outputs_and_grads(smdim_kernels.selective_scan_fn, p)
            x, w = torch.randn(1, 4, 9), torch.randn(4, 3)
            conv = smdim_kernels.causal_conv1d_fn(x, w, activation="silu")
        want = outputs_and_grads(smdim_kernels.selective_scan_ref, p)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(conv, smdim_kernels.causal_conv1d_ref(x, w, activation="silu"))
        print(json.dumps([str(c.message) for c in caught]))
        print(json.dumps(smdim_kernels.backend_info()))
    """)
    caught = json.loads(result.stdout.strip().splitlines()[-2])
    assert any("built with (checkpoint chunk, max N) = (32, 256)" in m for m in caught)
    for op in ("selective_scan", "causal_conv1d"):
        assert any(f"no fused {op} kernel for device 'cpu'" in m for m in caught), caught
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["selective_scan"]["cpu"].startswith("PyTorch reference")


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_build_matches_reference(isa):
    if isa != "generic" and backends.cpu_isa() == "generic":
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    if isa == "avx512" and backends.cpu_isa() != "avx512":
        pytest.skip("this CPU has no AVX-512")
    result = run_python("""
        import torch, smdim_kernels
        from smdim_kernels import backends
        from scan_inputs import make_problem, outputs_and_grads
        print(backends.cpu_isa())
        for kw in [dict(groups=2, seq_idx=True), dict(B_kind="const", C_kind="var3", dstate=16)]:
            for dtype in (torch.float32, torch.float64):
                p = make_problem(batch=2, dim=22, length=130, dstate=kw.pop("dstate", 5), dtype=dtype, **kw)
                p.requires_grad_()
                for reverse in (False, True):
                    a = outputs_and_grads(smdim_kernels.selective_scan_fn, p, reverse=reverse)
                    b = outputs_and_grads(smdim_kernels.selective_scan_ref, p, reverse=reverse)
                    tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
                    torch.testing.assert_close(a[0], b[0], **tol)
                    torch.testing.assert_close(a[1], b[1], **tol)
                    for k in b[2]:
                        torch.testing.assert_close(a[2][k], b[2][k], rtol=tol["rtol"],
                                                   atol=tol["atol"] * b[2][k].abs().max().item())
        # the conv: rows shorter than, equal to and longer than a vector, taps past the row's end
        for dtype in (torch.float64, torch.float32):
            tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
            for length, width in ((3, 4), (16, 4), (37, 4), (130, 3)):
                g = torch.Generator().manual_seed(length)
                x = torch.randn(2, 5, length, dtype=dtype, generator=g, requires_grad=True)
                w = torch.randn(5, width, dtype=dtype, generator=g, requires_grad=True)
                b = torch.randn(5, dtype=dtype, generator=g, requires_grad=True)
                dout = torch.randn(2, 5, length, dtype=dtype, generator=g)
                for activation in (None, "silu"):
                    for reverse in (False, True):
                        results = []
                        for fn in (smdim_kernels.causal_conv1d_fn, smdim_kernels.causal_conv1d_ref):
                            out = fn(x, w, b, activation, reverse=reverse)
                            results.append([out, *torch.autograd.grad(out, (x, w, b), dout)])
                        for a, r in zip(*results):
                            torch.testing.assert_close(a, r, **tol)
    """, SMDIM_CPU_ISA=isa)
    assert result.stdout.split()[0] == isa


def test_unknown_isa_cap_is_an_error():
    code = """
        import torch, smdim_kernels
        x = torch.randn(1, 2, 3)
        smdim_kernels.selective_scan_fn(x, x.abs(), -torch.ones(2, 4), torch.randn(2, 4), torch.randn(2, 4))
    """
    full_env = {**os.environ, "SMDIM_CPU_ISA": "sse9"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=full_env, timeout=300)
    assert result.returncode != 0
    assert "SMDIM_CPU_ISA must be one of avx512, avx2, generic; got 'sse9'" in result.stderr


def test_reference_fallback_of_every_op_has_correct_gradients():
    """The CompositeExplicitAutograd fallbacks (devices without a kernel) match autograd on the references."""
    run_python("""
        import warnings
        warnings.simplefilter("ignore")
        import torch, smdim_kernels as sk
        torch.manual_seed(0)
        x = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda *a: sk.causal_conv1d_fn(*a, activation="silu"), (x, w, b))
        r = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
        g = torch.randn(9, dtype=torch.float64, requires_grad=True)
        for rms in (False, True):
            f = lambda *a: sk.add_norm_fn(*a, eps=1e-5, prenorm=True, is_rms_norm=rms)
            assert torch.autograd.gradcheck(f, (x, g, None, r))
    """, SMDIM_DISABLE_NATIVE="1")
