"""KG files in a user's own layout (``triples.table``, ``links.table``, ``names.table``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasources.dataset_files import DatasetFileError, parse_dataset_file
from datasources.errors import MalformedInputError
from datasources.kg.build import KGBuildOptions, build_kg
from datasources.kg.sources import KGSource, load_kg_sources, source_problem

ITEMS = pd.DataFrame({"item_id": [0, 1, 2], "item_key": ["10", "11", "12"],
                      "title": ["Alpha", "Beta", "Gamma"]})
KEEP_ALL = KGBuildOptions(min_entity_degree=1)


def _load(tmp_path: Path, *sources: KGSource):
    return load_kg_sources(sources, lambda location: tmp_path / location, ITEMS)


def _build(inputs):
    return build_kg(ITEMS, inputs.links, inputs.triple_sources, inputs.merged_names(),
                    inputs.merged_types(), KEEP_ALL)


def _named_triples(result) -> set[tuple[str, str, str]]:
    key = result.entities.set_index("entity_id")["entity_key"]
    rel = result.relations.set_index("relation_id")["relation_key"]
    t = result.kg_triples
    return set(zip(key[t["head_id"]].astype(str), rel[t["relation_id"]].astype(str),
                   key[t["tail_id"]].astype(str), strict=True))


def test_item_heads_and_entity_tails_from_a_csv_with_names(tmp_path):
    (tmp_path / "kg.csv").write_text("movie,rel,attr\n10,directed_by,p1\n11,directed_by,p1\n"
                                     '12,genre,"Sci-Fi, Horror"\n')
    (tmp_path / "names.tsv").write_text("id\tlabel\ttype\np1\tJane Doe\tperson\n")
    inputs = _load(tmp_path,
                   KGSource("mine", "triples.table", ("kg.csv",),
                            {"head_col": "movie", "relation_col": "rel", "tail_col": "attr",
                             "head_namespace": "item"}),
                   KGSource("labels", "names.table", ("names.tsv",),
                            {"entity_col": "id", "name_col": "label", "kind_col": "type"}))
    result = _build(inputs)

    # every item keeps entity id = item id; both directed_by triples meet the one person
    assert list(result.entities["entity_id"][:3]) == [0, 1, 2]
    triples = result.kg_triples
    person = result.entities.set_index("entity_key").loc["p1"]
    assert person["name"] == "Jane Doe" and person["kind"] == "person"
    assert sorted(triples.loc[triples["tail_id"] == person["entity_id"], "head_id"]) == [0, 1]
    assert "Sci-Fi, Horror" in set(result.entities["entity_key"])  # a quoted comma stays one key
    assert len(triples) == 3


def test_item_or_entity_keys_make_a_ripplenet_style_file_work(tmp_path):
    """Entity ids whose first values are the items (RippleNet kg.txt style): a key that is an
    item key names the item, any other one an entity; item–item relations survive."""
    (tmp_path / "kg.txt").write_text("head\trelation\ttail\n10\tsequel\t11\n11\tgenre\t500\n12\tgenre\t500\n")
    options = {"head_namespace": "item_or_entity", "tail_namespace": "item_or_entity"}
    result = _build(_load(tmp_path, KGSource("ripple", "triples.table", ("kg.txt",), options)))
    triples = result.kg_triples
    assert ((triples["head_id"] == 0) & (triples["tail_id"] == 1)).any()  # item 10 → item 11
    genre = result.entities.set_index("entity_key").loc["500", "entity_id"]
    assert genre >= 3 and sorted(triples.loc[triples["tail_id"] == genre, "head_id"]) == [1, 2]


def test_links_route_items_to_their_entities_and_parquet_is_read(tmp_path):
    pq.write_table(pa.table({"item": ["10", "12"], "entity": ["m.a", "m.c"]}), tmp_path / "links.parquet")
    pq.write_table(pa.table({"head": ["m.a", "m.c"], "relation": ["genre", "genre"],
                             "tail": ["m.g", "m.g"]}), tmp_path / "kg.parquet")
    result = _build(_load(tmp_path, KGSource("links", "links.table", ("links.parquet",)),
                          KGSource("fb", "triples.table", ("kg.parquet",))))
    genre = result.entities.set_index("entity_key").loc["m.g", "entity_id"]
    assert sorted(result.kg_triples.loc[result.kg_triples["tail_id"] == genre, "head_id"]) == [0, 2]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("head\trelation\ttail\n10\tr\tx\n11\tr\n", 3, "2 fields, the header has 3"),
    ("head\trelation\ttail\n10\tr\tx\n\tr\ty\n", 3, "empty 'head'"),
    ("head\trelation\ttail\n10\tr\titem:12\n", 2, "starts with 'item:'"),
    ("h\trelation\ttail\n10\tr\tx\n", 1, "no column 'head' (head_col); the file has ['h', 'relation', 'tail']"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, line, message):
    (tmp_path / "kg.tsv").write_text(text)
    with pytest.raises(MalformedInputError) as error:
        _load(tmp_path, KGSource("mine", "triples.table", ("kg.tsv",)))
    assert error.value.line == line and message in str(error.value)
    assert str(tmp_path / "kg.tsv") in str(error.value)


def test_a_broken_json_line_is_named(tmp_path):
    (tmp_path / "kg.jsonl").write_text('{"head": "10", "relation": "r", "tail": "x"}\n{"head": "11",\n')
    with pytest.raises(MalformedInputError, match=r"kg\.jsonl:2: invalid JSON"):
        _load(tmp_path, KGSource("mine", "triples.table", ("kg.jsonl",)))


def test_options_are_checked_with_a_suggestion():
    assert source_problem("triples.table", {"head_namespce": "item"}) == (
        "options.head_namespce",
        "triples.table takes no option 'head_namespce' (did you mean 'head_namespace'?); it takes: "
        "delimiter, file_format, head_col, head_namespace, relation_col, tail_col, tail_namespace")
    assert source_problem("triples.kgat", {"head_col": "h"})[1].endswith("it takes: none")
    assert source_problem("triples.tabel", {})[1].startswith(
        "unknown KG source kind 'triples.tabel' (did you mean 'triples.table'?)")
    with pytest.raises(ValueError, match="head_namespace 'items' is not one of entity, item, item_or_entity"):
        from datasources.kg.generic import _namespace

        _namespace({"head_namespace": "items"}, "head_namespace", Path("kg.tsv"))


def test_a_dataset_file_declares_generic_kg_sources_beside_itself(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "shop.yaml").write_text(
        "name: shop\nvariants:\n  files:\n    tables:\n"
        "      interactions: {format: tsv, locations: [data/pairs.tsv]}\n"
        "kg:\n  sources:\n"
        "    - {name: mine, kind: triples.table, locations: [data/kg.csv], options: {head_namespace: item}}\n")
    declaration = parse_dataset_file(folder / "shop.yaml")
    [source] = declaration.kg_sources
    assert source.options == {"head_namespace": "item"}
    # relative locations are taken from the dataset file's folder, wherever the command runs
    assert source.locations == (str(folder / "data" / "kg.csv"),)
    assert declaration.variants["files"].tables["interactions"].locations == (str(folder / "data" / "pairs.tsv"),)


def test_a_misspelled_option_in_a_dataset_file_names_file_and_field(tmp_path, monkeypatch):
    from datasources.kg import sources

    (tmp_path / "shop.yaml").write_text(
        "name: shop\nvariants:\n  files:\n    tables:\n"
        "      interactions: {format: tsv, locations: [pairs.tsv]}\n"
        "kg:\n  sources:\n"
        "    - {name: mine, kind: triples.table, locations: [kg.csv], options: {tail_col: t, haed_col: h}}\n")
    monkeypatch.setattr("datasources.registry.DECLARATIONS", {"shop": parse_dataset_file(tmp_path / "shop.yaml")})
    with pytest.raises(DatasetFileError) as error:
        sources._declared_sources()
    assert str(error.value).startswith(f"{tmp_path / 'shop.yaml'}: kg.sources[0].options.haed_col: "
                                       "triples.table takes no option 'haed_col' (did you mean 'head_col'?)")
