"""Benchmarks of smdim_kernels' selective scan against its peers.

    pytest benchmarks/ --benchmark-only [--quick] [--benchmark-json=bench.json]
    python -m benchmarks.report bench.json [--out DIR]

See `benchmarks/test_selective_scan.py` for the cases, the environment variables and how
peak memory is measured.
"""
