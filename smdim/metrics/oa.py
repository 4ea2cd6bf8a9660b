"""`compare`: the one OA bundle — framewise OA and attribute OA of a generated vs a reference set in one
flat dict (what `real_vs_real` and the evaluation tables use)."""
from __future__ import annotations

from typing import Optional, Sequence

from .attributes import attribute_oa
from .framewise import FRAMEWISE_KEYS, check_args, framewise_oa
from .notes import prepare

_FRAMEWISE_ARGS = {"protocol", "window_bars", "hop_bars"}
_ATTRIBUTE_ARGS = {"attributes", "bandwidth_floor"}
_SHARED_ARGS = {"empty_gen_as_zero"}


def compare(scores_gen, scores_ref, *, protocols: Optional[Sequence[str]] = None, **kwargs) -> dict:
    """`framewise_oa` and `attribute_oa` in one flat dict.

    Framewise keys: with ``protocols=None``, those of one `framewise_oa` call (``protocol=`` keyword,
    default "published"): ``pitch_consistency``, …, ``n_pairs_ref`` and ``protocol``; with a sequence of
    protocol names, every protocol's numeric keys prefixed by its name (``published_pitch_variance``,
    ``pooled_n_pairs_gen``, …). A protocol under which a set has no frame pair gives NaN for its keys here
    (`framewise_oa` itself raises), so the attribute OA is still reported. Attribute keys: the OAs prefixed
    "oa_" (``oa_pitch``, …) and "mean_oa". Other keyword arguments go to the function that accepts them
    (window_bars, hop_bars / attributes, bandwidth_floor); ``empty_gen_as_zero`` goes to both.
    """
    bad = set(kwargs) - _FRAMEWISE_ARGS - _ATTRIBUTE_ARGS - _SHARED_ARGS
    if bad:
        hint = " (the framewise OA takes protocol='published' or 'pooled' now)" if bad & {"pooling", "sigma_floor"} \
            else ""
        raise TypeError(f"compare: unexpected keyword arguments {sorted(bad)}{hint}")
    if protocols is not None and "protocol" in kwargs:
        raise TypeError("compare: pass either protocol= (unprefixed keys) or protocols= (prefixed keys)")
    fw_args = {k: v for k, v in kwargs.items() if k in (_FRAMEWISE_ARGS | _SHARED_ARGS) and k != "protocol"}
    names = [kwargs.get("protocol", "published")] if protocols is None else list(protocols)
    if not names:
        raise ValueError("compare: protocols is empty")
    for p in names:
        check_args(p, fw_args.get("window_bars", 4), fw_args.get("hop_bars", 2))
    gen = prepare(scores_gen, "scores_gen")
    ref = prepare(scores_ref, "scores_ref")
    out = {}
    for p in names:
        try:
            fw = framewise_oa(gen, ref, protocol=p, **fw_args)
        except ValueError:  # no frame pair in one of the sets under this protocol
            fw = {**dict.fromkeys(FRAMEWISE_KEYS, float("nan")), "protocol": p}
        if protocols is None:
            out.update(fw)
        else:
            out.update({f"{p}_{k}": v for k, v in fw.items() if k != "protocol"})
    att = attribute_oa(gen, ref, **{k: v for k, v in kwargs.items() if k in _ATTRIBUTE_ARGS | _SHARED_ARGS})
    for k, v in att.items():
        out[k if k == "mean_oa" else "oa_" + k] = v
    return out
