"""Benchmarks of smdim_kernels against its peers: the selective scan, the Mamba layer, and the
MFA block against a transformer block; and of the SMDIM model against its parameter-matched
transformer-diffusion baseline (denoiser forward, training step, full sample).

    pytest benchmarks/ --benchmark-only [--quick] [--benchmark-json=bench.json]
    python -m benchmarks.report bench.json [--out DIR] [--check]

See `benchmarks/test_selective_scan.py`, `benchmarks/test_layers.py` and `benchmarks/test_models.py`
for the cases, `benchmarks/settings.py` for the environment variables and `benchmarks/memory.py`
for how peak memory is measured (`benchmarks/cuda.py` on a GPU).
"""
