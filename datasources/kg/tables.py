"""The ``kg_triples`` and ``relations`` tables from the kept graph."""

from __future__ import annotations

import numpy as np
import pandas as pd

from datasources.kg.ids import INVERSE_SUFFIX, KeptGraph


def triples_table(kept: KeptGraph, source_names: list[str], add_reverse: bool) -> pd.DataFrame:
    """DataFrame[head_id, relation_id, tail_id, source] sorted by (head, relation, tail).

    With ``add_reverse`` every triple also appears as ``(t, r + n_forward, h)`` from the same
    source, so models that walk edges one way still reach items from their attributes.
    """
    head_id, rel_id, tail_id = kept.head_id, kept.relation_id, kept.tail_id
    src_labels = np.asarray(source_names, dtype=object)
    if add_reverse:
        kg = pd.DataFrame(
            {
                "head_id": np.concatenate([head_id, tail_id]),
                "relation_id": np.concatenate([rel_id, rel_id + len(kept.relation_keys)]),
                "tail_id": np.concatenate([tail_id, head_id]),
                "source": np.concatenate([src_labels[kept.source], src_labels[kept.source]]),
            }
        )
    else:
        kg = pd.DataFrame(
            {
                "head_id": head_id,
                "relation_id": rel_id,
                "tail_id": tail_id,
                "source": src_labels[kept.source]
                if len(kept.source)
                else np.array([], dtype=object),
            }
        )
    kg = kg.sort_values(["head_id", "relation_id", "tail_id"], kind="stable").reset_index(drop=True)
    kg = kg.astype({"head_id": np.int64, "relation_id": np.int64, "tail_id": np.int64})
    kg["source"] = kg["source"].astype(object)
    return kg


def relations_table(
    relation_keys: np.ndarray, kg_triples: pd.DataFrame, add_reverse: bool
) -> pd.DataFrame:
    """DataFrame[relation_id, relation_key, n_triples]; reverses follow as ``<key>~inv``."""
    rel_keys = relation_keys
    if add_reverse:
        rel_keys = np.concatenate(
            [rel_keys, np.asarray([k + INVERSE_SUFFIX for k in rel_keys], dtype=object)]
        )
    rel_counts = np.bincount(kg_triples["relation_id"].to_numpy(), minlength=len(rel_keys))
    return pd.DataFrame(
        {
            "relation_id": np.arange(len(rel_keys), dtype=np.int64),
            "relation_key": pd.Series(rel_keys, dtype=object),
            "n_triples": rel_counts.astype(np.int64),
        }
    )
