"""The scan's limits, one source for Python and Triton; the C++ build reports its own
(`torch.ops.smdim_native.scan_constants()`, csrc/selective_scan/scan_params.h) and is refused at
import if they differ (smdim_kernels.backends)."""

CHECKPOINT_CHUNK = 64  # time steps per saved state (the backward re-runs one chunk at a time)
MAX_DSTATE = 256       # the largest state size N
