"""The generic interaction formats (tsv, csv, jsonl, parquet, npy) on real files: one column mapping,
validated options, and malformed input named by ``file:line`` (``row N`` for binary files)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasources.errors import MalformedInputError
from datasources.formats import FORMAT_OPTIONS, PARSERS, check_options, parse_table

# One small dataset written in every format: (user, item, rating, ts, label); None = no value.
ROWS = [(1, 10, 4.5, 100, 1), (1, 11, 2.0, 200, 0), (2, 10, None, 300, None), (3, 12, 5.0, 400, 1)]
COLUMNS = ("user_id", "item_id", "rating", "ts", "label")
MAPPED = {"rating_col": "rating", "ts_col": "ts", "label_col": "label"}


def tsv_text(rows=ROWS, sep="\t") -> str:
    cell = lambda v: "NA" if v is None else str(v)  # noqa: E731
    return "\n".join([sep.join(COLUMNS), *(sep.join(map(cell, row)) for row in rows)]) + "\n"


def write_tsv(path):
    path.write_text(tsv_text())


def write_csv(path):
    path.write_text(tsv_text(sep=","))


def write_jsonl(path):
    path.write_text("".join(json.dumps(dict(zip(COLUMNS, row, strict=True))) + "\n" for row in ROWS))


def write_parquet(path):
    users, items, ratings, ts, labels = zip(*ROWS, strict=True)
    pq.write_table(pa.table({
        "user_id": pa.array(users, pa.int64()),
        "item_id": pa.array([str(i) for i in items], pa.string()),  # keys may be text or integers
        "rating": pa.array(ratings, pa.float64()),
        "ts": pa.array(ts, pa.int64()),
        "label": pa.array(labels, pa.int8()),
    }), path)


def write_structured_npy(path):
    dtype = [("user_id", "i8"), ("item_id", "i8"), ("rating", "f8"), ("ts", "i8"), ("label", "f8")]
    np.save(path, np.array([tuple(np.nan if v is None else v for v in row) for row in ROWS], dtype=dtype))


def write_matrix_npy(path):
    np.save(path, np.array([[np.nan if v is None else v for v in row] for row in ROWS], dtype=np.float64))


def write_npz(path):
    np.savez(path, **{name: np.array([np.nan if v is None else v for v in values])
                      for name, values in zip(COLUMNS, zip(*ROWS, strict=True), strict=True)})


def expected_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_key": ["1", "1", "2", "3"],
        "item_key": ["10", "11", "10", "12"],
        "rating": [4.5, 2.0, np.nan, 5.0],
        "ts": pd.array([100, 200, 300, 400], dtype="Int64"),
        "label": pd.array([1, 0, None, 1], dtype="Int8"),
    })


def test_tsv_gives_the_expected_frame(tmp_path):
    path = tmp_path / "i.tsv"
    write_tsv(path)
    pd.testing.assert_frame_equal(parse_table("tsv", "interactions", path, MAPPED), expected_frame())


@pytest.mark.parametrize(
    ("fmt", "name", "writer", "options"),
    [
        ("csv", "i.csv", write_csv, MAPPED),
        ("jsonl", "i.jsonl", write_jsonl, MAPPED),
        ("parquet", "i.parquet", write_parquet, MAPPED),
        ("npy", "i.npy", write_structured_npy, MAPPED),
        ("npy", "m.npy", write_matrix_npy,
         {"user_col": "0", "item_col": "1", "rating_col": "2", "ts_col": "3", "label_col": "4"}),
        ("npy", "i.npz", write_npz, MAPPED),
    ],
)
def test_every_format_gives_the_tsv_frame(tmp_path, fmt, name, writer, options):
    tsv, path = tmp_path / "i.tsv", tmp_path / name
    write_tsv(tsv)
    writer(path)
    frame = parse_table(fmt, "interactions", path, options)
    pd.testing.assert_frame_equal(frame, parse_table("tsv", "interactions", tsv, MAPPED))
    pd.testing.assert_frame_equal(frame, expected_frame())


def test_csv_quoting_follows_rfc4180(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(
        'user_id,item_id,note,rating\n'
        '"Smith, J.","The ""Best"" Film",plain,4\n'
        'u2,"two\nlines",x,3\n'
        '"Doe, A.",i3,"a, b",1.5\n'
    )
    frame = parse_table("csv", "interactions", path, {"rating_col": "rating"})
    assert frame.user_key.tolist() == ["Smith, J.", "u2", "Doe, A."]
    assert frame.item_key.tolist() == ['The "Best" Film', "two\nlines", "i3"]
    assert frame.rating.tolist() == [4.0, 3.0, 1.5]


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ('user_id,item_id\n"Smith, J.",a\n"Doe, A."\n', 3, "expected 2 fields, found 1"),
        ('user_id,item_id\n"a\nb",x\nshort\n', 4, "expected 2 fields, found 1"),  # line 2-3 is one record
        ('user_id,item_id\na,b\n\nc,d\n', 3, "blank line"),
        ('user_id,item_id\na,b,c\n', 2, "expected 2 fields, found 3"),
        ('user_id,item_id\n"a"x,b\n', 2, "quoting"),
        ('user_id,item_id,rating\na,b,4\nc,d,four\n', 3, "rating ('rating') is not a number: 'four'"),
    ],
)
def test_csv_malformed_line_is_named(tmp_path, body, line, needle):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    options = {"rating_col": "rating"} if "rating" in body else {}
    with pytest.raises(MalformedInputError) as info:
        parse_table("csv", "interactions", path, options)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert needle in str(info.value)


def test_csv_other_delimiter_and_spaced_header(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text('user_id; item_id\n"a;1";b\n')
    frame = parse_table("csv", "interactions", path, {"delimiter": ";"})
    assert frame[["user_key", "item_key"]].values.tolist() == [["a;1", "b"]]


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ('{"user_id": 1, "item_id": 2}\n{"user_id": 1, "item_id": \n', 2, "invalid JSON"),
        ('{"user_id": 1, "item_id": 2}\n[1, 2]\n', 2, "expected a JSON object, found list"),
        ('{"user_id": 1, "item_id": 2}\n\n{"user_id": 1, "item_id": 3}\n', 2, "blank line"),
        ('{"user_id": 1, "item_id": 2}\n{"user_id": 1}\n', 2, "item ('item_id') is not a key: None"),
        ('{"user_id": 1, "item_id": 2}\n{"user_id": [1], "item_id": 2}\n', 2, "user ('user_id') is not a key"),
        ('{"user_id": 1, "item_id": 2, "r": 4}\n{"user_id": 1, "item_id": 2, "r": "x"}\n', 2, "not a number: 'x'"),
    ],
)
def test_jsonl_malformed_line_is_named(tmp_path, body, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(body)
    with pytest.raises(MalformedInputError) as info:
        parse_table("jsonl", "interactions", path, {"rating_col": "r"} if '"r"' in body else {})
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert needle in str(info.value)


def test_jsonl_boolean_labels_and_absent_values(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"u": "a", "i": "x", "ok": true}\n{"u": "b", "i": 7, "ok": false}\n{"u": "c", "i": 7.0}\n')
    frame = parse_table("jsonl", "interactions", path, {"user_col": "u", "item_col": "i", "label_col": "ok"})
    assert frame.item_key.tolist() == ["x", "7", "7"]  # 7 and 7.0 are one item
    assert frame.label.tolist()[:2] == [1, 0] and frame.label.isna().tolist() == [False, False, True]


def test_parquet_errors_name_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b", "c"], "item_id": ["x", "y", "z"], "r": ["4", "x", "3"]}), path)
    with pytest.raises(MalformedInputError, match=r"bad\.parquet: row 1 \(counting from 0\): .*not a number: 'x'"):
        parse_table("parquet", "interactions", path, {"rating_col": "r"})
    nullable = tmp_path / "nullable.parquet"
    pd.DataFrame({"user_id": pd.array([1, None], dtype="Int64"), "item_id": ["x", "y"]}).to_parquet(nullable)
    with pytest.raises(MalformedInputError, match=r"nullable\.parquet: row 1 \(counting from 0\): user .* not a key"):
        parse_table("parquet", "interactions", nullable)
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("user_id,item_id\n")
    with pytest.raises(MalformedInputError, match="not a readable Parquet file"):
        parse_table("parquet", "interactions", not_parquet)


def test_parquet_timestamps_and_dictionary_keys(tmp_path):
    path = tmp_path / "t.parquet"
    frame = pd.DataFrame({
        "user_id": pd.Categorical(["a", "b"]),
        "item_id": ["x", "y"],
        "when": pd.to_datetime(["1970-01-01 00:01:40", "2001-01-01 00:00:00"]),
    })
    frame.to_parquet(path)
    out = parse_table("parquet", "interactions", path, {"ts_col": "when"})
    assert out.user_key.tolist() == ["a", "b"] and out.ts.tolist() == [100, 978307200]


def test_numpy_errors(tmp_path):
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, user_id=np.arange(3), item_id=np.arange(2))
    with pytest.raises(MalformedInputError, match="differ in length"):
        parse_table("npy", "interactions", uneven)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.arange(4))
    with pytest.raises(MalformedInputError, match=r"flat\.npy: array of shape \(4,\) without named fields"):
        parse_table("npy", "interactions", flat)
    scalar = tmp_path / "scalar.npz"
    np.savez(scalar, user_id=np.arange(2), item_id=np.int64(3))
    with pytest.raises(MalformedInputError, match=r"array 'item_id' has shape \(\), expected 1-D"):
        parse_table("npy", "interactions", scalar)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MalformedInputError, match="not a readable NumPy"):
        parse_table("npy", "interactions", pickled)
    fractional = tmp_path / "frac.npy"
    np.save(fractional, np.array([[1, 2], [3, 4.5]]))
    with pytest.raises(MalformedInputError, match=r"frac\.npy: row 1 \(counting from 0\): item \('1'\) is not a key: 4\.5"):
        parse_table("npy", "interactions", fractional, {"user_col": "0", "item_col": "1"})


def test_threshold_labels_from_rating(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("user_id\titem_id\tstars\na\tx\t4\nb\tx\t3.5\nc\tx\tNA\nd\tx\t5\n")
    frame = parse_table("tsv", "interactions", path, {"rating_col": "stars", "threshold": "4"})
    assert frame.label.tolist()[:2] == [1, 0] and frame.label.tolist()[3] == 1
    assert frame.label.isna().tolist() == [False, False, True, False]
    assert frame.label.dtype == "Int8" and frame.rating.tolist()[:2] == [4.0, 3.5]
    csv = tmp_path / "t.csv"
    csv.write_text("user_id,item_id,stars\na,x,2\nb,x,4.5\n")
    assert parse_table("csv", "interactions", csv, {"rating_col": "stars", "threshold": 3}).label.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"threshold": "4"}, "give rating_col too"),
        ({"threshold": "4", "rating_col": "r", "label_col": "l"}, "not both"),
        ({"threshold": "high", "rating_col": "r"}, "threshold 'high' is not a number"),
        ({"delimiter": "::"}, "delimiter must be one character"),
    ],
)
def test_inconsistent_options(tmp_path, options, needle):
    with pytest.raises(ValueError, match=needle):
        parse_table("tsv", "interactions", tmp_path / "never-read.tsv", options)


def test_unknown_option_suggests_the_key():
    where = "configs/datasets/mine.yaml: variants.default.tables.interactions.options"
    with pytest.raises(ValueError) as info:
        check_options("csv", {"user_col": "u", "ratng_col": "stars"}, where)
    message = str(info.value)
    assert message.startswith(where + ": ")
    assert "format 'csv' has no option 'ratng_col'; did you mean 'rating_col'?" in message
    with pytest.raises(ValueError, match="'parquet' has no option 'delimiter'"):
        check_options("parquet", {"delimiter": ","}, where)
    with pytest.raises(ValueError, match="it takes no options"):
        check_options("ml1m.ratings", {"user_col": "u"}, where)
    with pytest.raises(ValueError, match="did you mean 'parquet'"):
        check_options("parquett", {}, where)
    check_options("npy", {"user_col": "0", "threshold": "3", "rating_col": "2"}, where)  # valid: no error


def test_parse_table_checks_options_before_reading(tmp_path):
    path = tmp_path / "i.tsv"
    write_tsv(path)
    with pytest.raises(ValueError, match=r"options for .*i\.tsv: format 'tsv' has no option 'ratng_col'"):
        parse_table("tsv", "interactions", path, {"ratng_col": "rating"})


def test_format_options_table():
    assert set(FORMAT_OPTIONS) == set(PARSERS)
    mapping = {"user_col", "item_col", "rating_col", "ts_col", "label_col", "threshold", "null_item"}
    assert FORMAT_OPTIONS["tsv"] == FORMAT_OPTIONS["csv"] == mapping | {"delimiter"}
    assert FORMAT_OPTIONS["jsonl"] == FORMAT_OPTIONS["parquet"] == FORMAT_OPTIONS["npy"] == mapping
    assert all(not FORMAT_OPTIONS[name] for name in PARSERS if "." in name)  # upstream formats read none


@pytest.mark.parametrize(
    ("fmt", "name", "writer", "where"),
    [
        ("tsv", "i.tsv", write_tsv, ":1: "),
        ("csv", "i.csv", write_csv, ":1: "),
        ("jsonl", "i.jsonl", write_jsonl, ": "),
        ("parquet", "i.parquet", write_parquet, ": "),
        ("npy", "i.npz", write_npz, ": "),
    ],
)
def test_missing_column_names_file_option_and_columns(tmp_path, fmt, name, writer, where):
    path = tmp_path / name
    writer(path)
    with pytest.raises(MalformedInputError) as info:
        parse_table(fmt, "interactions", path, {"rating_col": "stars"})
    message = str(info.value)
    assert message.startswith(f"{path}{where}column 'stars' (rating_col) not in the columns ")
    assert all(repr(column) in message for column in COLUMNS)


def test_tsv_rejects_what_it_used_to_let_through(tmp_path):
    cases = {
        "user_id\titem_id\tts\na\tx\t1.5\n": "ts ('ts') is not an integer: '1.5'",
        "user_id\titem_id\tl\na\tx\t2\n": "label ('l') must be 0 or 1",
        "user_id\titem_id\n\tx\n": "user ('user_id') is not a key: ''",
        "user_id\tuser_id\titem_id\na\tb\tx\n": "'user_id' (user_col) appears twice",
    }
    for number, (body, needle) in enumerate(cases.items()):
        path = tmp_path / f"bad{number}.tsv"
        path.write_text(body)
        options = {"ts_col": "ts"} if "\tts" in body else {"label_col": "l"} if "\tl\n" in body else {}
        with pytest.raises(MalformedInputError, match=r"bad\d\.tsv:\d: ") as info:
            parse_table("tsv", "interactions", path, options)
        assert needle in str(info.value)


def test_null_item_is_the_same_in_every_format(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"user_id": 1, "item_id": -1}\n{"user_id": 1, "item_id": 5}\n')
    frame = parse_table("jsonl", "interactions", path, {"null_item": "-1"})
    assert frame.item_key.tolist() == [None, "5"]
