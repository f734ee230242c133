"""Readers of link, triple, name/type and metadata files, on tiny fixtures in upstream format.

The fixtures copy the *format* of the staged files (CRLF ends in KB4Rec/MKR files, RecBole
``name:type`` headers, KGAT space-separated lists with literal org ids, RecBole CSV quoting of
category lists, OMDb JSON lines), never their content.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from datasources.errors import MalformedInputError
from datasources.kg.attributes import (
    amazon_category_triples,
    movielens_metadata_triples,
    omdb_triples,
    read_omdb_metadata,
    read_recbole_item_titles,
)
from datasources.kg.readers import (
    normalize_freebase_key,
    read_freebase_names,
    read_freebase_types,
    read_item_index2entity_id,
    read_kb4rec_links,
    read_kgat_item_list,
    read_kgat_kg_final,
    read_kgat_remap_list,
    read_mkr_kg,
    read_recbole_atomic,
    read_recbole_kg,
    read_recbole_link,
)


def write(tmp_path: Path, name: str, text: str, *, gz: bool = False) -> Path:
    """Write ``text`` byte-exactly (CRLF stays CRLF); gzip when ``gz``."""
    data = text.encode("utf-8")
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def rows(df: pd.DataFrame) -> list[list[object]]:
    return df.to_numpy().tolist()


def assert_str_columns(df: pd.DataFrame, columns: list[str]) -> None:
    assert list(df.columns) == columns
    for col in columns:
        assert df[col].dtype == object
        assert all(isinstance(v, str) for v in df[col])


# --------------------------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------------------------

KB4REC = "1\tm.0dyb1\r\n2\tm.09w353\r\n3\tm.0676dr\r\n"


@pytest.mark.parametrize("gz", [False, True])
def test_kb4rec_links_plain_and_gz_with_crlf(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path, "ml2fb.txt", KB4REC, gz=gz)
    df = read_kb4rec_links(path)
    assert_str_columns(df, ["item_key", "entity_key"])
    assert rows(df) == [["1", "m.0dyb1"], ["2", "m.09w353"], ["3", "m.0676dr"]]


def test_kb4rec_asin_keys_keep_leading_zeros(tmp_path: Path) -> None:
    path = write(tmp_path, "ab2fb.txt", "000102521X\tm.03cm0hv\r\n0001047566\tm.04t37rh\r\n")
    assert rows(read_kb4rec_links(path)) == [
        ["000102521X", "m.03cm0hv"],
        ["0001047566", "m.04t37rh"],
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1\tm.0dyb1\r\n2\tm.09w353\textra\r\n", 2),  # too many fields
        ("1\tm.0dyb1\r\n2\tm.09w353\r\n3\r\n", 3),  # too few fields
        ("1\tm.0dyb1\r\n\r\n2\t\r\n", 3),  # empty key after a blank line
    ],
)
def test_kb4rec_malformed_line_is_named(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, "ml2fb.txt", text)
    with pytest.raises(MalformedInputError) as info:
        read_kb4rec_links(path)
    assert str(info.value).startswith(f"{path}:{line}:")
    assert info.value.line == line


def test_malformed_line_in_gz_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "ml2fb.txt", KB4REC + "4\tm.1\tm.2\r\n", gz=True)
    with pytest.raises(MalformedInputError, match=r"ml2fb\.txt\.gz:4:"):
        read_kb4rec_links(path)


def test_invalid_utf8_is_a_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "e_names_fb.tsv"
    path.write_bytes(b"m.01\tAlpha\nm.02\tB\xffeta\n")
    with pytest.raises(MalformedInputError, match=r"e_names_fb\.tsv:2:"):
        read_freebase_names(path)


def test_files_without_data_lines_are_empty_tables(tmp_path: Path) -> None:
    assert read_kb4rec_links(write(tmp_path, "ml2fb.txt", "")).empty
    assert read_recbole_link(write(tmp_path, "x.link", "item_id:token\tentity_id:token\n")).empty
    kg = read_mkr_kg(write(tmp_path, "kg.txt", "\r\n", gz=True))
    assert kg.empty and list(kg.columns) == ["head_key", "relation_key", "tail_key"]


def test_recbole_link(tmp_path: Path) -> None:
    text = "item_id:token\tentity_id:token\n476\tm.08gjyx\n362\tm.035_kw\n"
    df = read_recbole_link(write(tmp_path, "ml-100k.link", text))
    assert_str_columns(df, ["item_key", "entity_key"])
    assert rows(df) == [["476", "m.08gjyx"], ["362", "m.035_kw"]]


def test_recbole_link_bad_header_and_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.link", "item:token\tentity_id:token\n1\tm.1\n")
    with pytest.raises(MalformedInputError, match=r"a\.link:1: unexpected header"):
        read_recbole_link(path)
    path = write(tmp_path, "b.link", "item_id:token\tentity_id:token\n1\tm.1\n2 m.2\n")
    with pytest.raises(MalformedInputError, match=r"b\.link:3:"):
        read_recbole_link(path)


def test_kgat_item_list_skips_non(tmp_path: Path) -> None:
    text = "org_id remap_id freebase_id\n1 0 m.0dyb1\n2 1 non\n3 2 g.122dshst\n"
    df = read_kgat_item_list(write(tmp_path, "item_list.txt", text))
    assert_str_columns(df, ["item_key", "entity_key"])
    assert rows(df) == [["1", "m.0dyb1"], ["3", "g.122dshst"]]


def test_kgat_item_list_bad_remap_id(tmp_path: Path) -> None:
    text = "org_id remap_id freebase_id\n0553092626 0 m.045wq1q\n0393316041 x m.03_28m\n"
    with pytest.raises(MalformedInputError, match=r"item_list\.txt:3: remap_id is not an integer"):
        read_kgat_item_list(write(tmp_path, "item_list.txt", text))


def test_item_index2entity_id(tmp_path: Path) -> None:
    df = read_item_index2entity_id(write(tmp_path, "item_index2entity_id.txt", "1\t0\r\n2\t1\r\n"))
    assert rows(df) == [["1", "satori:0"], ["2", "satori:1"]]
    bad = write(tmp_path, "bad.txt", "1\t0\r\n2\tm.01\r\n")
    with pytest.raises(MalformedInputError, match=r"bad\.txt:2: satori is not an integer"):
        read_item_index2entity_id(bad)


# --------------------------------------------------------------------------------------------
# Triples
# --------------------------------------------------------------------------------------------

ENTITY_LIST = (
    "org_id remap_id\n"
    "m.045wq1q 0\n"
    "http://rdf.freebase.com/ns/m.03_28m 1\n"
    '"""Power Play""@en" 2\n'
    " 3\n"
    "book.written_work 4\n"
)
RELATION_LIST = (
    "org_id remap_id\n"
    "http://rdf.freebase.com/ns/book.written_work.author 0\n"
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#type 1\n"
)


def test_kgat_remap_list_splits_at_last_blank(tmp_path: Path) -> None:
    df = read_kgat_remap_list(write(tmp_path, "entity_list.txt", ENTITY_LIST, gz=True))
    assert rows(df) == [
        ["m.045wq1q", 0],
        ["http://rdf.freebase.com/ns/m.03_28m", 1],
        ['"""Power Play""@en"', 2],
        ["", 3],
        ["book.written_work", 4],
    ]


def test_kgat_kg_final_with_lists(tmp_path: Path) -> None:
    ents = write(tmp_path, "entity_list.txt", ENTITY_LIST)
    rels = write(tmp_path, "relation_list.txt", RELATION_LIST)
    kg = write(tmp_path, "kg_final.txt", "0 0 1\n1 1 4\n2 0 3\n")
    df = read_kgat_kg_final(kg, ents, rels)
    assert_str_columns(df, ["head_key", "relation_key", "tail_key"])
    assert rows(df) == [
        ["m.045wq1q", "book.written_work.author", "m.03_28m"],
        ["m.03_28m", "http://www.w3.org/1999/02/22-rdf-syntax-ns#type", "book.written_work"],
        ['"""Power Play""@en"', "book.written_work.author", "kgat:3"],  # empty org id
    ]


def test_kgat_kg_final_without_lists_and_errors(tmp_path: Path) -> None:
    kg = write(tmp_path, "kg_final.txt", "0 0 1\n1  1 4 \n")
    assert rows(read_kgat_kg_final(kg)) == [
        ["kgat:0", "kgat:r0", "kgat:1"],
        ["kgat:1", "kgat:r1", "kgat:4"],
    ]
    bad = write(tmp_path, "bad_kg.txt", "0 0 1\n1 1\n")
    with pytest.raises(MalformedInputError, match=r"bad_kg\.txt:2: expected 3"):
        read_kgat_kg_final(bad)
    ents = write(tmp_path, "entity_list.txt", ENTITY_LIST)
    unknown = write(tmp_path, "unknown_kg.txt", "0 0 1\n\n0 0 99\n")
    with pytest.raises(MalformedInputError, match=r"unknown_kg\.txt:3: id not in"):
        read_kgat_kg_final(unknown, ents)


def test_recbole_kg(tmp_path: Path) -> None:
    text = (
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.04ctbw8\tfilm.producer.film\tm.0bln8\n"
        "m.0c3wmn\tfilm.film.actor\tm.02vxxgs\n"
    )
    df = read_recbole_kg(write(tmp_path, "ml-100k.kg", text, gz=True))
    assert rows(df) == [
        ["m.04ctbw8", "film.producer.film", "m.0bln8"],
        ["m.0c3wmn", "film.film.actor", "m.02vxxgs"],
    ]
    bad = write(tmp_path, "bad.kg", text + "m.1\tfilm.film.actor\n")
    with pytest.raises(MalformedInputError, match=r"bad\.kg:4:"):
        read_recbole_kg(bad)


def test_mkr_kg(tmp_path: Path) -> None:
    text = "749\tfilm.film.writer\t2347\r\n1410\tfilm.film.language\t2348\r\n"
    df = read_mkr_kg(write(tmp_path, "kg.txt", text))
    assert rows(df) == [
        ["satori:749", "film.film.writer", "satori:2347"],
        ["satori:1410", "film.film.language", "satori:2348"],
    ]
    bad = write(tmp_path, "bad.txt", text + "12\tfilm.film.genre\tabc\r\n")
    with pytest.raises(MalformedInputError, match=r"bad\.txt:3: t is not an integer"):
        read_mkr_kg(bad)


def test_normalize_freebase_key() -> None:
    assert normalize_freebase_key("http://rdf.freebase.com/ns/m.0abc") == "m.0abc"
    assert (
        normalize_freebase_key("<http://rdf.freebase.com/ns/film.film.genre>") == "film.film.genre"
    )
    assert normalize_freebase_key("m.0abc") == "m.0abc"
    other = "http://www.w3.org/2000/01/rdf-schema#label"
    assert normalize_freebase_key(other) == other


# --------------------------------------------------------------------------------------------
# Names / types
# --------------------------------------------------------------------------------------------


def test_freebase_names_prefer_latin_then_first(tmp_path: Path) -> None:
    text = (
        "m.0lhjd\tネヴィル・ブランド\n"
        "m.0g99rgr\tMarion\n"
        "m.0lhjd\tNeville  Brand\n"  # Latin name later in the file wins over the Japanese one
        "m.0lhjd\tNeville Brand (2)\n"
        "m.02\t玩具总动员\n"  # only a non-Latin name: kept
        "m.03\tJosé Ferrer\n"
    )
    df = read_freebase_names(write(tmp_path, "e_names_fb.tsv", text, gz=True))
    assert_str_columns(df, ["entity_key", "name"])
    assert dict(rows(df)) == {
        "m.0lhjd": "Neville Brand",
        "m.0g99rgr": "Marion",
        "m.02": "玩具总动员",
        "m.03": "José Ferrer",
    }
    bad = write(tmp_path, "bad.tsv", "m.01\tA\nm.02\tB\tC\n")
    with pytest.raises(MalformedInputError, match=r"bad\.tsv:2:"):
        read_freebase_names(bad)


def test_freebase_types(tmp_path: Path) -> None:
    text = "m.0yp_n4x\tcharacter\nm.0lhjd\tactor\nm.0lhjd\tactor\n"
    df = read_freebase_types(write(tmp_path, "e_types_fb.tsv", text))
    assert rows(df) == [["m.0yp_n4x", "character"], ["m.0lhjd", "actor"]]


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def omdb_line(movie_id: int, **fields: str) -> str:
    record = {"imdb_id": "0114709", "ml_title": "T (1995)", "movie_id": movie_id, "omdb": fields}
    return json.dumps(record) + "\n"


def omdb_fixture(tmp_path: Path) -> Path:
    text = (
        omdb_line(
            1,
            Director="John Lasseter",
            Writer="John Lasseter (original story by), Joss Whedon (screenplay by), "
            "Joss Whedon (story), Jeff  Pidgeon(additional)",
            Actors="Tom Hanks, Tim Allen",
            Genre="Animation, Comedy",
            Language="English",
            Country="USA",
            Production="Pixar Animation Studios, Children&#39;s Television Workshop (CTW)",
            Rated="G",
            Plot="ignored",
            Response="True",
        )
        + "\n"
        + omdb_line(
            2,
            Director="N/A",
            Writer='Bob (story "The Wolf,  The Forest"), Ann',
            Actors="Ann",
            Genre="N/A",
            Language="Egyptian (Ancient), English",
            Country="UK, USA",
            Rated="Not Rated",
            Response="True",
        )
        + omdb_line(3, Response="False", Error="Movie not found!")
    )
    return write(tmp_path, "omdb_metadata.jsonl", text, gz=True)


def test_read_omdb_metadata_splits_and_normalises(tmp_path: Path) -> None:
    df = read_omdb_metadata(omdb_fixture(tmp_path))
    assert_str_columns(df, ["item_key", "field", "value"])
    got = {(k, f): [] for k, f, _ in rows(df)}
    for k, f, v in rows(df):
        got[(k, f)].append(v)
    assert got[("1", "director")] == ["John Lasseter"]
    assert got[("1", "writer")] == ["John Lasseter", "Joss Whedon", "Jeff Pidgeon"]
    assert got[("1", "actor")] == ["Tom Hanks", "Tim Allen"]
    assert got[("1", "production")] == [
        "Pixar Animation Studios",
        "Children's Television Workshop (CTW)",  # non-person parentheses are part of the name
    ]
    assert got[("1", "rated")] == ["G"]
    assert ("2", "director") not in got and ("2", "genre") not in got  # N/A dropped
    assert got[("2", "writer")] == ["Bob", "Ann"]  # comma inside parentheses is not a separator
    assert got[("2", "language")] == ["Egyptian (Ancient)", "English"]
    assert got[("2", "rated")] == ["Not Rated"]
    assert not any(k == "3" for k, _ in got)


def test_omdb_triples_share_person_entities(tmp_path: Path) -> None:
    result = omdb_triples(read_omdb_metadata(omdb_fixture(tmp_path)))
    triples = {tuple(r) for r in rows(result.triples)}
    assert ("item:1", "omdb.director", "person:John Lasseter") in triples
    assert ("item:1", "omdb.writer", "person:John Lasseter") in triples
    assert ("item:2", "omdb.country", "country:UK") in triples
    assert ("item:1", "omdb.genre", "genre:Comedy") in triples
    names = result.names.set_index("entity_key")
    assert names.index.is_unique
    assert names.loc["person:John Lasseter", "kind"] == "director"  # director > writer
    assert names.loc["person:Ann", "kind"] == "writer"  # writer > actor
    assert names.loc["person:Tom Hanks", "kind"] == "actor"
    assert names.loc["rated:Not Rated", ["name", "kind"]].tolist() == ["Not Rated", "rated"]


def test_omdb_malformed_json_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "omdb.jsonl", omdb_line(1, Genre="Comedy") + '{"movie_id": 2, "omdb": {\n'
    )
    with pytest.raises(MalformedInputError, match=r"omdb\.jsonl:2: invalid JSON"):
        read_omdb_metadata(path)
    path = write(tmp_path, "omdb2.jsonl", omdb_line(1, Genre="Comedy") + '{"omdb": {}}\n')
    with pytest.raises(MalformedInputError, match=r"omdb2\.jsonl:2: record without 'movie_id'"):
        read_omdb_metadata(path)


def test_movielens_metadata_triples() -> None:
    items = pd.DataFrame(
        {
            "item_id": [0, 1, 2],
            "item_key": ["1", "2", "3"],
            "title": ["Toy Story", None, "X"],
            "year": pd.array([1995, None, 1995], dtype="Int64"),
            "genres": [["Animation", "Children's"], None, []],
        }
    )
    result = movielens_metadata_triples(items)
    assert rows(result.triples) == [
        ["item:1", "movie.genre", "genre:Animation"],
        ["item:1", "movie.genre", "genre:Children's"],
        ["item:1", "movie.year", "year:1995"],
        ["item:3", "movie.year", "year:1995"],
    ]
    assert rows(result.names) == [
        ["genre:Animation", "Animation", "genre"],
        ["genre:Children's", "Children's", "genre"],
        ["year:1995", "1995", "year"],
    ]
    no_year = movielens_metadata_triples(items.drop(columns=["year"]))
    assert set(no_year.triples["relation_key"]) == {"movie.genre"}


AMAZON_ITEM = (
    "item_id:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\ttitle:token"
    "\tprice:float\tbrand:token\n"
    "0001055178\tBooks\t14149327.0\t'Books'\tMaster  Georgie\t16.95\t\n"
    '0761139974\tBooks\t1.0\t"\'Books\', ""Children\'s Books"", \'Geography & Cultures\'"\t'
    "Brain Quest\t\t\n"
    "B004EYT9CS\tBooks\t2.0\t'Books', 'Mystery, Thriller & Suspense', 'Arts &amp; Photos'\t\t\t\n"
)


def test_amazon_category_triples_and_titles(tmp_path: Path) -> None:
    path = write(tmp_path, "Amazon-Books.item", AMAZON_ITEM, gz=True)
    assert read_recbole_atomic(path).shape == (3, 7)
    result = amazon_category_triples(path)
    assert rows(result.triples) == [
        ["item:0761139974", "book.category", "category:Children's Books"],
        ["item:0761139974", "book.category", "category:Geography & Cultures"],
        ["item:B004EYT9CS", "book.category", "category:Mystery, Thriller & Suspense"],
        ["item:B004EYT9CS", "book.category", "category:Arts & Photos"],  # HTML-unescaped
    ]
    assert set(result.names["kind"]) == {"category"}
    with_root = amazon_category_triples(path, drop_categories=())
    assert len(with_root.triples) == 7
    titles = read_recbole_item_titles(path)
    assert rows(titles) == [["0001055178", "Master Georgie"], ["0761139974", "Brain Quest"]]


def test_amazon_item_malformed_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Amazon-Books.item", AMAZON_ITEM + "0002\tBooks\t1.0\t'Books'\n")
    with pytest.raises(MalformedInputError, match=r"Amazon-Books\.item:5: expected 7"):
        amazon_category_triples(path)
    bad_cats = AMAZON_ITEM + "0003\tBooks\t1.0\t'Books', oops\tT\t\t\n"
    path = write(tmp_path, "Bad.item", bad_cats)
    with pytest.raises(MalformedInputError, match=r"Bad\.item:5: bad categories"):
        amazon_category_triples(path)
