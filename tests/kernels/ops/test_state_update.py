"""selective_state_update: one decode step, against its reference and against the scan."""
import torch

from smdim_kernels import selective_scan_fn, selective_state_update, selective_state_update_ref


def test_step_matches_reference_and_updates_state():
    gen = torch.Generator().manual_seed(0)
    batch, dim, dstate, groups = 3, 8, 5, 2
    state = torch.randn(batch, dim, dstate, generator=gen)
    x, dt, z = (torch.randn(batch, dim, generator=gen) for _ in range(3))
    A = -torch.rand(dim, dstate, generator=gen) - 0.5
    B, C = (torch.randn(batch, groups, dstate, generator=gen) for _ in range(2))
    D, dt_bias = torch.randn(dim, generator=gen), torch.rand(dim, generator=gen)
    ref_state = state.clone()
    out = selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, True)
    ref = selective_state_update_ref(ref_state, x, dt, A, B, C, D, z, dt_bias, True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, ref_state, rtol=1e-5, atol=1e-6)


def test_stepping_reproduces_the_scan():
    gen = torch.Generator().manual_seed(1)
    batch, dim, dstate, length = 2, 6, 4, 12
    u = torch.randn(batch, dim, length, generator=gen)
    delta = torch.rand(batch, dim, length, generator=gen)
    A = -torch.rand(dim, dstate, generator=gen) - 0.2
    B, C = (torch.randn(batch, dstate, length, generator=gen) for _ in range(2))
    D = torch.randn(dim, generator=gen)
    full, last = selective_scan_fn(u, delta, A, B, C, D, None, None, True, True)
    state = torch.zeros(batch, dim, dstate)
    steps = [selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t], D, dt_softplus=True)
             for t in range(length)]
    torch.testing.assert_close(torch.stack(steps, -1), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, last, rtol=1e-5, atol=1e-6)
