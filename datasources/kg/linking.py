"""Item links: which entity keys stand for which item, and the lookup from a key to its item.

A key that stands for an item becomes that item's entity, which is how triples from
independent KGs (a Freebase MID, a Satori id) land on the same item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datasources.kg.inputs import as_keys, require_columns
from datasources.kg.readers import ITEM_PREFIX, LINK_COLUMNS


@dataclass(frozen=True)
class ItemLinks:
    """Link rows resolved onto items.

    Attributes:
        table: DataFrame[item_id, entity_key, source], one row per (item, key), sorted by item
            and then link-source order; no key belongs to two items.
        stats: per link source (in argument order), what ``stats["links"]`` reports.
        n_conflicts: links dropped because an earlier claim gave their key to another item.
    """

    table: pd.DataFrame
    stats: dict[str, dict[str, Any]]
    n_conflicts: int


def _stack_links(item_index: pd.Index, links: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """All link rows as DataFrame[item_key, entity_key, _src, item_id] (-1: not an item).

    ``links`` must not be empty.
    """
    parts = []
    for order, (name, df) in enumerate(links):
        require_columns(df, LINK_COLUMNS, f"links {name!r}")
        parts.append(
            pd.DataFrame(
                {
                    "item_key": as_keys(df["item_key"]),
                    "entity_key": as_keys(df["entity_key"]),
                    "_src": order,
                }
            )
        )
    names = [name for name, _ in links]
    if len(set(names)) != len(names):
        raise ValueError(f"link source names must be unique: {names}")
    all_links = pd.concat(parts, ignore_index=True)
    all_links["item_id"] = item_index.get_indexer(all_links["item_key"])
    return all_links


def _link_stats(
    all_links: pd.DataFrame,
    known: pd.DataFrame,
    conflicts: pd.DataFrame,
    names: list[str],
    n_items: int,
) -> dict[str, dict[str, Any]]:
    """Per link source: rows, rows naming no item, keys lost to another item, items linked."""
    stats: dict[str, dict[str, Any]] = {}
    for order, name in enumerate(names):
        rows = all_links[all_links["_src"] == order]
        bad = rows[rows["item_id"] < 0]
        linked = known.loc[known["_src"] == order, "item_id"].nunique()
        # Items this source links at all, even where an earlier source already gave the key.
        linked_any = rows.loc[rows["item_id"] >= 0, "item_id"].nunique()
        stats[name] = {
            "n_links": len(rows),
            "n_links_unknown_item": len(bad),
            "unknown_item_examples": bad["item_key"].drop_duplicates().head(10).tolist(),
            "n_links_key_claimed_by_other_item": int((conflicts["_src"] == order).sum()),
            "conflict_examples": conflicts.loc[conflicts["_src"] == order, "entity_key"]
            .head(10)
            .tolist(),
            "n_items": n_items,
            "n_items_linked": linked_any,
            "n_items_linked_new": linked,
            "share_items_linked": linked_any / n_items if n_items else 0.0,
        }
    return stats


def resolve_links(item_index: pd.Index, links: Sequence[tuple[str, pd.DataFrame]]) -> ItemLinks:
    """Map link rows onto item ids, keeping each key for the first item that claims it.

    Links whose ``item_key`` is not an item are only counted (with examples): link files cover
    a whole catalogue while a dataset keeps a subset of it.
    """
    if not links:
        empty = pd.DataFrame(
            {
                "item_id": pd.Series(dtype=np.int64),
                "entity_key": pd.Series(dtype=object),
                "source": pd.Series(dtype=object),
            }
        )
        return ItemLinks(empty, {}, 0)
    all_links = _stack_links(item_index, links)
    names = [name for name, _ in links]
    unknown = all_links["item_id"].to_numpy() < 0
    repeated = all_links[~unknown].duplicated(["item_id", "entity_key"])
    duplicates = all_links[~unknown][repeated]  # the same link again (same or a later source)
    known = all_links[~unknown][~repeated]
    # A key can stand for one item only; the first claim (source order, then file order) wins.
    claimed_twice = known.duplicated("entity_key")
    conflicts = known[claimed_twice]
    known = known[~claimed_twice]
    stats = _link_stats(all_links, known, conflicts, names, len(item_index))
    for order, name in enumerate(names):
        stats[name]["n_links_duplicate"] = int((duplicates["_src"] == order).sum())
    known = known.sort_values(["item_id", "_src"], kind="stable")
    table = pd.DataFrame(
        {
            "item_id": known["item_id"].to_numpy(dtype=np.int64),
            "entity_key": known["entity_key"].to_numpy(dtype=object),
            "source": np.asarray(names, dtype=object)[known["_src"].to_numpy()],
        }
    )
    return ItemLinks(table, stats, len(conflicts))


@dataclass(frozen=True)
class ItemKeyLookup:
    """Every key that stands for an item, and that item's id.

    Attributes:
        keys: linked keys (in link-table order), then ``item:<item_key>`` for every item; each
            key once, at its first occurrence.
        item_ids: the item id of ``keys[i]``.
    """

    keys: pd.Index
    item_ids: np.ndarray

    def item_ids_of(self, keys: np.ndarray) -> np.ndarray:
        """The item id of each of ``keys``; -1 for a key that is not an item."""
        pos = self.keys.get_indexer(keys)
        return np.where(pos >= 0, self.item_ids[np.maximum(pos, 0)], -1)


def item_key_lookup(item_links: pd.DataFrame, item_keys: np.ndarray) -> ItemKeyLookup:
    """The lookup for ``item_links`` plus ``item:<item_key>``, the form metadata triples use."""
    lookup_keys = np.concatenate(
        [item_links["entity_key"].to_numpy(object), ITEM_PREFIX + item_keys]
    )
    lookup_ids = np.concatenate(
        [item_links["item_id"].to_numpy(np.int64), np.arange(len(item_keys), dtype=np.int64)]
    )
    first = ~pd.Index(lookup_keys).duplicated()
    return ItemKeyLookup(pd.Index(lookup_keys[first]), lookup_ids[first])
