"""Kernel ops, one folder each: reference.py (maths), interface.py (op declaration), triton.py."""
