"""Benchmarks of smdim_kernels against its peers: the selective scan, the Mamba layer, and the
MFA block against transformer blocks (the same width, and the same parameter count); and of the
SMDIM model against its parameter-matched transformer-diffusion baseline (denoiser forward,
training step, full sample).

    pytest benchmarks/ --benchmark-only [--quick] [--benchmark-json=bench.json]
    python -m benchmarks.report bench.json [--out DIR] [--check]

Each suite has its cases (scan_cases.py, layers.py, models.py, hf_mamba.py, studio.py), its
correctness guard (scan_guard.py, layer_guard.py, model_guard.py) and its report section
(scan_report.py, layer_report.py, model_report.py, hf_mamba_report.py, studio_report.py, sharing
report_kit.py; report.py assembles them). See the test_*.py files for the cases,
`benchmarks/settings.py` for the environment variables and `benchmarks/memory.py` for how peak
memory is measured (`benchmarks/cuda.py` on a GPU).
"""
