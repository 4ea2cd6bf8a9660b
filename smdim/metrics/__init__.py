"""Evaluation metrics for symbolic music (DESIGN §5), one module per concept:

* `notes` — `Piece` (the notes of one score, extracted once, derived values cached) and `prepare`;
* `framewise` — framewise OA consistency/variance under a named protocol (`PROTOCOLS`: "published" =
  SCHmUBERT's per-piece protocol, "pooled" = every window pair pooled), `gaussian_overlap`;
* `attributes` — KDE overlap of the pooled attribute values, generated vs reference (`attribute_oa`);
* `drift` — the attribute OA of each quarter of generated pieces against the same quarter of real ones;
* `oa` — `compare`, the one OA bundle (framewise + attribute OA in one flat dict);
* `intervals` — `CI`, `bootstrap_ci`, `paired_bootstrap_ci`, `real_vs_real`;
* `failures` — `pitch_outlier_rate`, `max_polyphony`, `dense_chord_rate`;
* `tokens` — `copy_rate` (optionally transposition invariant), `invalid_token_rate`;
* `report` — `format_table`.

Note metrics take `symusic.Score` objects (any time unit), MIDI paths or `Piece` objects. All randomness
goes through ``numpy.random.default_rng(seed)``.
"""
from .attributes import ATTRIBUTES, BANDWIDTH_FLOOR, attribute_oa, attribute_values, kde_overlap, values_oa
from .drift import drift_oa, part_values
from .failures import dense_chord_rate, max_polyphony, pitch_outlier_rate
from .framewise import (FRAMEWISE_KEYS, PROTOCOLS, PUBLISHED_SIGMA_EPS, SIGMA_FLOOR, consistency_score, framewise_oa,
                        gaussian_overlap, piece_framewise_oa, variance_score)
from .intervals import CI, bootstrap_ci, paired_bootstrap_ci, real_vs_real
from .notes import STEPS_PER_QUARTER, Piece, prepare
from .oa import compare
from .report import format_table
from .tokens import copy_rate, invalid_token_rate

__all__ = [
    "ATTRIBUTES",
    "BANDWIDTH_FLOOR",
    "CI",
    "FRAMEWISE_KEYS",
    "PROTOCOLS",
    "PUBLISHED_SIGMA_EPS",
    "Piece",
    "SIGMA_FLOOR",
    "STEPS_PER_QUARTER",
    "attribute_oa",
    "attribute_values",
    "bootstrap_ci",
    "compare",
    "consistency_score",
    "copy_rate",
    "dense_chord_rate",
    "drift_oa",
    "format_table",
    "framewise_oa",
    "gaussian_overlap",
    "invalid_token_rate",
    "kde_overlap",
    "max_polyphony",
    "paired_bootstrap_ci",
    "part_values",
    "piece_framewise_oa",
    "pitch_outlier_rate",
    "prepare",
    "real_vs_real",
    "values_oa",
    "variance_score",
]
