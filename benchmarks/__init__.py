"""Benchmarks of smdim_kernels against its peers: the selective scan, the Mamba layer, and the
MFA block against a transformer block.

    pytest benchmarks/ --benchmark-only [--quick] [--benchmark-json=bench.json]
    python -m benchmarks.report bench.json [--out DIR] [--check]

See `benchmarks/test_selective_scan.py` and `benchmarks/test_layers.py` for the cases,
`benchmarks/settings.py` for the environment variables and `benchmarks/memory.py` for how peak
memory is measured.
"""
