"""Kernel ops, one folder each: reference.py (the naive maths, the oracle), interface.py (the op
declared once: schema, fake, autograd, device dispatch, the public function), the algorithms in
files named for them (triton.py for CUDA kernels; composite.py / chain.py / chunked.py for the
Mamba mixer ops; blocked.py for local attention); C++ CPU kernels live in csrc/."""
