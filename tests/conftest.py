"""Test-session setup shared by every test module."""
import os

# The Triton kernels run on CPU tensors only under the interpreter, which triton reads when it
# is first imported; set it before any test module imports triton (TRITON_INTERPRET=0 on a GPU).
os.environ.setdefault("TRITON_INTERPRET", "1")
