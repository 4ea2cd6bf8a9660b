"""pytest configuration of the benchmark suite: the plan (--quick / env), thread pinning,
the correctness guards, and the machine description stored in the benchmark JSON."""
from __future__ import annotations

import re

import pytest

from .layer_guard import LayerGuard
from .layers import MAMBA_SUITE, MFA_SUITE
from .machine import describe_machine
from .model_guard import ModelGuard
from .scan_guard import ScanGuard
from .scan_peers import MAMBAPY_MISSING, mambapy_available
from .settings import BenchSettings

_SETTINGS_KEY = pytest.StashKey[BenchSettings]()


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="smdim benchmarks: L=512 only, few rounds (same as SMDIM_BENCH_QUICK=1)")


def settings_for(config) -> BenchSettings:
    """The session's benchmark plan, read once from --quick and the environment."""
    if _SETTINGS_KEY not in config.stash:
        config.stash[_SETTINGS_KEY] = BenchSettings.from_env(quick=config.getoption("--quick"))
    return config.stash[_SETTINGS_KEY]


def pytest_generate_tests(metafunc):
    if "scan_case" in metafunc.fixturenames:
        # Parametrised by id (a string, so the benchmark JSON's params stay readable).
        case_ids = [case.id for case in settings_for(metafunc.config).scan_cases()]
        metafunc.parametrize("scan_case", case_ids, ids=case_ids, indirect=True)
    for fixture, suite in (("mamba_case", MAMBA_SUITE), ("mfa_case", MFA_SUITE)):
        if fixture in metafunc.fixturenames:
            case_ids = [case.id for case in settings_for(metafunc.config).layer_cases(suite)]
            metafunc.parametrize(fixture, case_ids, ids=case_ids, indirect=True)
    if "model_case" in metafunc.fixturenames:
        case_ids = [case.id for case in settings_for(metafunc.config).model_cases()]
        metafunc.parametrize("model_case", case_ids, ids=case_ids, indirect=True)
    if "hf_case" in metafunc.fixturenames:
        from .hf_mamba import hf_cases

        settings = settings_for(metafunc.config)
        cases = hf_cases(settings.quick, settings.lengths, settings.hf_backward_lengths)
        metafunc.parametrize("hf_case", cases, ids=[case.id for case in cases])
    if "studio_case" in metafunc.fixturenames:
        from .studio import studio_cases

        cases = studio_cases(settings_for(metafunc.config).quick)
        metafunc.parametrize("studio_case", cases, ids=[case.id for case in cases])


def pytest_report_header(config):
    settings = settings_for(config)
    mambapy = "available" if mambapy_available() else f"missing, pscan cases skip: {MAMBAPY_MISSING}"
    return [f"smdim benchmarks: {'quick' if settings.quick else 'full'} plan, {settings.threads} threads, "
            f"L {','.join(map(str, settings.lengths))}; naive fwd L<={settings.naive_forward_max_len}, "
            f"naive fwd+bwd L<={settings.naive_backward_max_len}, pscan L<={settings.pscan_max_len}; "
            f"mambapy {mambapy}",
            f"layers: MambaMixer fwd L in {_lengths(settings.hf_forward_lengths)}, fwd+bwd L in "
            f"{_lengths(settings.hf_backward_lengths)} (one run, ~8 min at 2048); "
            f"mamba.py layer L<={settings.layer_pscan_max_len}; "
            f"full-attention blocks L<={settings.full_attention_max_len}",
            f"model: presets {','.join(settings.model_configs) or '(none)'} on {settings.model_device}, "
            f"full sample L<={settings.sample_max_len}; batched presets {','.join(settings.batched_configs)} at "
            f"{','.join(f'{b}x{n}' for b, n in settings.model_batches) or '(none)'}"]


def _lengths(lengths):
    return "{" + ",".join(map(str, lengths)) + "}" if lengths else "{} (never)"


@pytest.fixture
def scan_case(request, bench_settings):
    """The ScanCase this test instance runs."""
    return {case.id: case for case in bench_settings.scan_cases()}[request.param]


def _layer_case(request, bench_settings, suite):
    return {case.id: case for case in bench_settings.layer_cases(suite)}[request.param]


@pytest.fixture
def mamba_case(request, bench_settings):
    """The LayerCase of the Mamba-layer suite this test instance runs."""
    return _layer_case(request, bench_settings, MAMBA_SUITE)


@pytest.fixture
def mfa_case(request, bench_settings):
    """The LayerCase of the MFA-block suite this test instance runs."""
    return _layer_case(request, bench_settings, MFA_SUITE)


@pytest.fixture
def model_case(request, bench_settings):
    """The ModelCase of the model suite this test instance runs."""
    return {case.id: case for case in bench_settings.model_cases()}[request.param]


@pytest.fixture(scope="session")
def bench_settings(request) -> BenchSettings:
    return settings_for(request.config)


@pytest.fixture(scope="session", autouse=True)
def pinned_threads(bench_settings):
    """Pin torch's intra-op threads for the whole session (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(bench_settings.threads)
    yield bench_settings.threads
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def scan_guard() -> ScanGuard:
    return ScanGuard()


@pytest.fixture(scope="session")
def layer_guard(bench_settings) -> LayerGuard:
    return LayerGuard(pscan_max_len=bench_settings.layer_pscan_max_len)


@pytest.fixture(scope="session")
def model_guard(bench_settings) -> ModelGuard:
    return ModelGuard(device=bench_settings.model_device)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """Name the machine in the JSON (CPU model, threads, torch, ISA) for the report's header."""
    machine_info["smdim_bench"] = describe_machine(settings_for(config).threads)


def _group_order(group):
    """'selective_scan fwd+bwd L=1024' sorts by (name, pass, L as a number), not as text; a batched
    model group, 'model tiny train B=16 L=256', after the same pass's batch-1 groups, by L then B."""
    match = re.fullmatch(r"(.*?)(?: B=(\d+))? L=(\d+)", group or "")
    if match is None:
        return (group or "", False, 0, 0)
    name, batch, length = match.groups()
    return (name, batch is not None, int(length), int(batch or 0))


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_benchmark_group_stats(config, benchmarks, group_by):
    """Print the groups in pass, then numeric L order."""
    groups = yield
    return sorted(groups, key=lambda pair: _group_order(pair[0]))
