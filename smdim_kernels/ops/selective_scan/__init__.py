from .constants import CHECKPOINT_CHUNK, MAX_DSTATE
from .interface import selective_scan_fn, selective_state_update
from .reference import selective_scan_ref, selective_state_update_ref

__all__ = [
    "CHECKPOINT_CHUNK",
    "MAX_DSTATE",
    "selective_scan_fn",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
]
