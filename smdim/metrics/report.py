"""`format_table`: a markdown table of metric values with intervals (e.g. ours vs baseline vs real-vs-real)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .intervals import CI, is_numeric


def _cell(v, digits: int, style: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, CI):
        s = v.format(digits, style)
    elif isinstance(v, tuple) and len(v) == 3 and all(is_numeric(x) for x in v):
        s = CI(float(v[0]), float(v[1]), float(v[2])).format(digits, style)
    elif isinstance(v, (bool, np.bool_)):
        s = str(bool(v))
    elif isinstance(v, (int, np.integer)):
        s = str(int(v))
    elif is_numeric(v):
        s = "—" if math.isnan(float(v)) else f"{float(v):.{digits}f}"
    else:
        s = str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def format_table(rows: Union[Mapping[str, Mapping[str, Any]], Sequence[Mapping[str, Any]]],
                 columns: Optional[Sequence[str]] = None, *, index: str = "metric", digits: int = 3,
                 style: str = "pm") -> str:
    """A markdown table. ``rows``: {row label: {column: cell}} or a list of {column: cell} dicts.

    Cells: a `CI` or a (value, low, high) tuple → "value ± half-width" ("value [low, high]" with
    style="interval"); floats with ``digits`` decimals; NaN/None → "—"; anything else via str. Columns
    default to the union of the rows' keys in first-seen order (with ``index`` first for a mapping).
    """
    if isinstance(rows, Mapping):
        rows = [{index: label, **dict(cols)} for label, cols in rows.items()]
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to format")
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    columns = list(columns)
    lines = ["| " + " | ".join(_cell(c, digits, style) for c in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c), digits, style) for c in columns) + " |")
    return "\n".join(lines)
