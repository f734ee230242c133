"""Stage 5 — neighbour sequences: BFS over the collaborative KG, train edges only.

``neighbor_sequences`` holds, for every item, the sequence S_i the fusion module reads (the
item, then its nearest users/attribute entities by hop; ``model.sequences`` documents the exact
definition, the tie-break and the default length). ``collaborative_kg`` is the graph itself as an
edge table for DuckDB. Only TRAIN user–item pairs enter the graph: a valid/test pair reaching a
sequence would leak the held-out answer into the model's input.
"""

import dagster as dg
import numpy as np
from pydantic import Field

from assets.checks import published
from assets.figures import length_histogram
from assets.metadata import check_result, png_markdown, stats_markdown, table_metadata
from assets.partitions import Stage
from assets.resources import LakeResource, WarehouseResource
from model.graph import collaborative_kg_from_tables
from model.sequence_checks import sequence_stats
from model.sequences import (
    DEFAULT_SEQUENCE_LENGTH,
    TIE_BREAKS,
    bfs_neighbor_sequences,
)

STAGE = Stage(group="neighbors", owners=("team:ml",))


class NeighborsConfig(dg.Config):
    """Stage 5 — the BFS neighbour sequences."""

    sequence_length: int = Field(default=DEFAULT_SEQUENCE_LENGTH, description="n: positions per item, the item included.")
    tie_break: str = Field(default="degree", description=f"Which nodes of a truncated hop are kept: one of {TIE_BREAKS}.")
    seed: int = Field(default=0, description="Seed of the 'random' tie-break.")
    max_hops: int | None = Field(default=None, description="Stop after this many hops (default: until full).")


@STAGE.multi_asset(
    specs=[
        STAGE.spec("collaborative_kg", deps=["split", "entities", "kg_triples", "users"], kinds={"parquet"}, description="The collaborative KG as an undirected edge table: user–item TRAIN pairs + KG triples."),
        STAGE.spec("neighbor_sequences", deps=["split", "entities", "kg_triples", "users"], kinds={"parquet"}, description="Per item, its BFS neighbour sequence: pos, node_id, node_type (item/user/entity), hop."),
    ],
    can_subset=True,  # the graph alone, or the sequences (always published with their graph)
)
def neighbor_sequences(context: dg.AssetExecutionContext, config: NeighborsConfig, lake: LakeResource,
                       warehouse: WarehouseResource):
    dataset = context.partition_key
    snapshot = lake.lake().snapshot(dataset)  # every input from one published snapshot
    tables = {
        "users": snapshot.read_pandas("users", ["user_id"]),
        "items": snapshot.read_pandas("items", ["item_id"]),
        "entities": snapshot.read_pandas("entities", ["entity_id"]),
        "split": snapshot.read_pandas("split"),
        "kg_triples": snapshot.read_pandas("kg_triples", ["head_id", "relation_id", "tail_id"]),
    }
    graph = collaborative_kg_from_tables(tables)
    train = tables["split"][tables["split"]["split"] == "train"]
    triples = tables["kg_triples"]
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    # The sequences are published with the graph they were walked on, in one snapshot: their
    # leak audit reads that graph, and sequences beside an older graph would not match it.
    written = {"collaborative_kg": (edges := graph.to_edge_table())}
    checks = None
    if "neighbor_sequences" in selected:
        sequences = bfs_neighbor_sequences(graph, n=config.sequence_length, max_hops=config.max_hops,
                                           tie_break=config.tie_break, seed=config.seed)
        written["neighbor_sequences"] = table = sequences.to_table()
        checks = {"sequences_well_formed": sequences_problems}
        if "collaborative_kg" not in selected:
            context.log.info(f"{dataset}: also publishing collaborative_kg, the graph the sequences were walked on")
    paths = lake.publish(context, written, checks=checks)
    warehouse.ensure_views(context.log)
    if "collaborative_kg" in selected:
        yield dg.MaterializeResult(
            asset_key="collaborative_kg",
            metadata={
                **table_metadata(edges, paths["collaborative_kg"]),
                "n_nodes": graph.n_nodes,
                "n_train_pairs": len(train),
                "n_kg_triples": len(triples),
            },
        )
    if "neighbor_sequences" not in selected:
        return
    seq_path = paths["neighbor_sequences"]
    stats = sequence_stats(sequences, graph)
    length = stats["length"]
    yield dg.MaterializeResult(
        asset_key="neighbor_sequences",
        metadata={
            **table_metadata(table, seq_path, sample_rows=10),
            "length": stats_markdown({k: v for k, v in length.items() if k != "histogram"}, "sequence length"),
            "length_histogram": png_markdown(length_histogram(sequences.length, sequences.n), "lengths"),
            "type_share_by_hop": dg.MetadataValue.json({str(k): v for k, v in stats["type_share_by_hop"].items()}),
            "short_sequences": dg.MetadataValue.json(stats["short"]),
            "sequence_length": sequences.n,
            "tie_break": sequences.tie_break,
        },
    )


def sequences_problems(tables) -> list[str]:
    seqs = tables.read_pandas("neighbor_sequences").sort_values(["item_id", "pos"])
    n_items = tables.read("items", ["item_id"]).num_rows
    problems = []
    first = seqs[seqs["pos"] == 0]
    if len(first) != n_items or not (first["node_id"].to_numpy() == first["item_id"].to_numpy()).all():
        problems.append("not every item starts its sequence with itself")
    same_item = seqs["item_id"].to_numpy()[1:] == seqs["item_id"].to_numpy()[:-1]
    if (np.diff(seqs["hop"].to_numpy())[same_item] < 0).any():
        problems.append("hops decrease inside a sequence")
    # Leak guard: every user–item edge of the graph must be a train pair.
    edges = tables.read_pandas("collaborative_kg")
    interactions = edges[edges["relation"] == "interact"]
    split = tables.read_pandas("split")
    n_entities = tables.read("entities", ["entity_id"]).num_rows
    train = set(zip(split.loc[split["split"] == "train", "user_id"], split.loc[split["split"] == "train", "item_id"], strict=True))
    item_side = np.minimum(interactions["src"].to_numpy(), interactions["dst"].to_numpy())
    user_side = np.maximum(interactions["src"].to_numpy(), interactions["dst"].to_numpy()) - n_entities
    outside = sum((u, i) not in train for u, i in zip(user_side.tolist(), item_side.tolist(), strict=True))
    if outside:
        problems.append(f"{outside} user–item edges are not train pairs (valid/test leak)")
    return problems


@dg.asset_check(asset="neighbor_sequences", blocking=True,
                description="Every item has a sequence starting with itself at hop 0; hops never decrease; "
                "no user–item edge outside the train split.")
def sequences_well_formed(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(sequences_problems(published(context, lake)))


NEIGHBOR_CHECKS = [sequences_well_formed]
