"""The inputs of :func:`datasources.kg.build.build_kg`, checked and brought to one form.

Every later step may then assume the columns exist, keys are ``str`` and triples sit in one
table whose row order (source order, then file order) decides which duplicate survives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datasources.kg.readers import TRIPLE_COLUMNS, Triples

TripleSource = tuple[str, pd.DataFrame, pd.DataFrame | None] | tuple[str, Triples]


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse ``df`` (called ``what`` in the message) unless it has ``columns``.

    The message lists the columns it does have, since the usual cause is a reader or a file
    with other column names.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing} (has {list(df.columns)})")


def as_keys(values: pd.Series | np.ndarray) -> np.ndarray:
    """``values`` as an object array of ``str``.

    Readers give ids as ints or strings; a key has to compare equal to itself whichever source
    it came from.
    """
    return pd.Series(values).astype(str).to_numpy(dtype=object)


def check_items(items: pd.DataFrame) -> pd.DataFrame:
    """``items`` sorted by ``item_id``, refused unless ids are exactly ``0..n-1`` and keys unique.

    Item ids become entity ids unchanged, so a gap or a key shared by two items would
    misnumber or merge entities.
    """
    require_columns(items, ["item_id", "item_key"], "items")
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    ids = items["item_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(items))):
        raise ValueError("items.item_id must be exactly 0..n_items-1")
    if items["item_key"].astype(str).duplicated().any():
        dup = items.loc[items["item_key"].astype(str).duplicated(), "item_key"].iloc[0]
        raise ValueError(f"items.item_key is not unique (e.g. {dup!r})")
    return items


@dataclass(frozen=True)
class CollectedTriples:
    """Every source's triples, in source order and then file order.

    Attributes:
        rows: DataFrame[head_key, relation_key, tail_key, src], keys as ``str``, ``src`` the
            position of the row's source in ``source_names``.
        source: ``rows["src"]`` as an int64 array.
        source_names: the sources' names, in argument order.
        name_frames: the names frames the sources brought, in source order (sources without
            one are skipped).
    """

    rows: pd.DataFrame
    source: np.ndarray
    source_names: list[str]
    name_frames: list[pd.DataFrame]

    def per_source(self, mask: np.ndarray) -> np.ndarray:
        """How many of the rows selected by ``mask`` each source gave."""
        return np.bincount(self.source[mask], minlength=len(self.source_names))


def _unpack(entry: Any) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """``(name, triples, names | None)`` from either accepted shape of a triple source."""
    if len(entry) == 2 and isinstance(entry[1], Triples):
        return entry[0], entry[1].triples, entry[1].names
    if len(entry) == 3:
        return entry[0], entry[1], entry[2]
    raise ValueError("triple sources are (name, triples, names|None) or (name, Triples)")


def collect_triples(triple_sources: Sequence[TripleSource]) -> CollectedTriples:
    """Stack the triple sources into one table, remembering each row's source.

    Source names must be unique because statistics are reported per name.
    """
    source_names: list[str] = []
    name_frames: list[pd.DataFrame] = []
    parts: list[pd.DataFrame] = []
    for order, entry in enumerate(triple_sources):
        name, df, src_names = _unpack(entry)
        require_columns(df, TRIPLE_COLUMNS, f"triples {name!r}")
        source_names.append(name)
        if src_names is not None:
            require_columns(src_names, ["entity_key"], f"names of {name!r}")
            name_frames.append(src_names)
        parts.append(
            pd.DataFrame(
                {
                    "head_key": as_keys(df["head_key"]),
                    "relation_key": as_keys(df["relation_key"]),
                    "tail_key": as_keys(df["tail_key"]),
                    "src": np.full(len(df), order, dtype=np.int64),
                }
            )
        )
    if len(set(source_names)) != len(source_names):
        raise ValueError(f"triple source names must be unique: {source_names}")
    rows = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({c: pd.Series(dtype=object) for c in TRIPLE_COLUMNS}).assign(
            src=pd.Series(dtype=np.int64)
        )
    )
    return CollectedTriples(rows, rows["src"].to_numpy(np.int64), source_names, name_frames)
