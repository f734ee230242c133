"""Each upstream format parser on fixtures in its exact format, and malformed input naming file:line."""

from __future__ import annotations

import gzip

import pytest

from datasources.errors import MalformedInputError
from datasources.formats import parse_table, split_title_year
from tests.support import fixtures


def write(tmp_path, name, payload: bytes):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_ml1m_ratings_movies_users(tmp_path):
    files = fixtures.ml1m_files()
    ratings = parse_table("ml1m.ratings", "interactions", write(tmp_path, "r.dat", files["ml-1m/ratings.dat"]))
    assert list(ratings.columns) == ["user_key", "item_key", "rating", "ts", "label"]
    assert len(ratings) == 15
    assert ratings.iloc[0].to_dict() | {"label": None} == {
        "user_key": "1", "item_key": "1", "rating": 2.0, "ts": 978300010, "label": None
    }
    movies = parse_table("ml1m.movies", "items", write(tmp_path, "m.dat", files["ml-1m/movies.dat"]))
    president = movies[movies.item_key == "11"].iloc[0]
    assert president.title == "The American President" and president.year == 1995
    assert president.genres == ["Comedy", "Drama", "Romance"]
    # Latin-1 decoded correctly (movies.dat is ISO-8859-1, not UTF-8).
    assert movies[movies.item_key == "25"].iloc[0].title == "Cité des enfants perdus, La"
    users = parse_table("ml1m.users", "users", write(tmp_path, "u.dat", files["ml-1m/users.dat"]))
    assert users.iloc[1].to_dict() == {"user_key": "2", "gender": "M", "age": 56, "occupation": "16", "zip_code": "70072"}


def test_title_year_parsing():
    assert split_title_year("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title_year("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        "City of Lost Children, The (Cité des enfants perdus, La)", 1995)
    assert split_title_year("An American in Paris") == ("An American in Paris", None)
    assert split_title_year("Graduate, The (1967)") == ("The Graduate", 1967)


def test_ml100k_formats(tmp_path):
    files = fixtures.ml100k_files()
    data = parse_table("ml100k.data", "interactions", write(tmp_path, "u.data", files["ml-100k/u.data"]))
    assert data["rating"].between(1, 5).all() and data["ts"].notna().all()
    items = parse_table("ml100k.item", "items", write(tmp_path, "u.item", files["ml-100k/u.item"]))
    assert items.iloc[0].genres == ["Action"] and items.iloc[0].year == 1991
    assert items.iloc[0].imdb_url.startswith("http://us.imdb.com/")
    users = parse_table("ml100k.user", "users", write(tmp_path, "u.user", files["ml-100k/u.user"]))
    assert users.iloc[0].age == 21


def test_recbole_atomic_files(tmp_path):
    inter = write(tmp_path, "x.inter.gz", gzip.compress(
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742\n"))
    frame = parse_table("recbole.inter", "interactions", inter)
    assert frame.iloc[1].to_dict() | {"label": None} == {
        "user_key": "186", "item_key": "302", "rating": 3.0, "ts": 891717742, "label": None}
    item = write(tmp_path, "x.item", (
        b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        b"1\tToy Story\t1995\tAnimation Children's Comedy\n267\tunknown\tunkonwn\tunknown\n"))
    items = parse_table("recbole.item", "items", item)
    assert items.iloc[0].genres == ["Animation", "Children's", "Comedy"] and items.iloc[0].year == 1995
    assert items.iloc[1].year is None or str(items.iloc[1].year) == "<NA>"  # "unkonwn" is upstream's typo
    books = write(tmp_path, "b.item", (
        b"item_id:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\ttitle:token\tprice:float\tbrand:token\n"
        b"0001055178\tBooks\t14149327.0\t'Books' 'Literature & Fiction'\tMaster Georgie\t16.95\t\n"))
    book = parse_table("recbole.item", "items", books).iloc[0]
    assert book.item_key == "0001055178" and book.title == "Master Georgie"
    assert book.genres == ["Books", "Literature & Fiction"]


def test_kgat_pairs_and_lists(tmp_path):
    files = fixtures.kgat_files()
    pairs = parse_table("kgat.pairs", "interactions", write(tmp_path, "train.txt", files["train.txt"]))
    assert len(pairs) == 20 and pairs.iloc[0].user_key == "0"
    items = parse_table("kgat.item_list", "items", write(tmp_path, "item_list.txt", files["item_list.txt"]))
    assert items.iloc[0].freebase_mid is None and items.iloc[1].freebase_mid == "m.01"
    assert items["source_index"].tolist() == list(range(8))
    users = parse_table("kgat.user_list", "users", write(tmp_path, "user_list.txt", files["user_list.txt"]))
    assert users.iloc[2].user_key == "A00002REVIEWER"


def test_tsv_with_options(tmp_path):
    path = write(tmp_path, "i.tsv", b"u\tmovie\tstars\twhen\tliked\n1\t10\t4.5\t100\t1\n2\t-1\t3\t200\t0\n3\t12\tNA\t\tNA\n")
    frame = parse_table("tsv", "interactions", path, {
        "user_col": "u", "item_col": "movie", "rating_col": "stars", "ts_col": "when", "label_col": "liked",
        "null_item": "-1"})
    assert frame.item_key.tolist()[0] == "10" and frame.item_key.isna().tolist() == [False, True, False]
    assert frame.rating.tolist()[:2] == [4.5, 3.0] and frame.label.isna().tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("fmt", "role", "payload", "line", "needle"),
    [
        ("ml1m.ratings", "interactions", b"1::2::3::4\n1::2::3\n", 2, "fields"),
        ("ml1m.ratings", "interactions", b"1::2::3::4\n1::x::3::4\n", 2, "MovieID"),
        ("ml1m.ratings", "interactions", b"1::2::3::4\n\n1::3::3::4\n", 2, "blank"),
        ("ml1m.ratings", "interactions", b"1::2::3::4\n1::3::3::4::9\n", 2, "fields"),
        ("ml1m.movies", "items", b"1::Toy Story (1995)::Comedy\nbroken line\n", 2, "fields"),
        ("ml1m.movies", "items", b"1::Toy Story (1995)::Comedy\nX::Heat (1995)::Action\n", 2, "MovieID"),
        ("ml100k.data", "interactions", b"1\t2\t3\t4\n5\t6\t7\n", 2, "fields"),
        ("ml100k.data", "interactions", b"1\t2\t3\t4\n5\t6\tfive\t7\n", 2, "rating"),
        ("recbole.inter", "interactions", b"user_id:token\titem_id:token\n1\t2\n3\n", 3, "fields"),
        ("recbole.inter", "interactions", b"user\titem\n1\t2\n", 1, "RecBole"),
        ("kgat.pairs", "interactions", b"0 1 2\n1 3 x\n", 2, "integer"),
        ("kgat.item_list", "items", b"org_id remap_id freebase_id\nA 0 m.1\nB one m.2\n", 3, "remap_id"),
        ("tsv", "interactions", b"user_id\titem_id\n1\t2\n3\t4\t5\n", 3, "fields"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, fmt, role, payload, line, needle):
    path = write(tmp_path, "bad.txt", payload)
    with pytest.raises(MalformedInputError) as info:
        parse_table(fmt, role, path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert needle in str(info.value)


def test_malformed_gzip_line_is_located(tmp_path):
    body = b"user_id:token\titem_id:token\n" + b"1\t2\n" * 100 + b"oops\n"
    path = write(tmp_path, "x.inter.gz", gzip.compress(body))
    with pytest.raises(MalformedInputError, match=r"x\.inter\.gz:102: "):
        parse_table("recbole.inter", "interactions", path)


def test_bad_utf8_is_located(tmp_path):
    path = write(tmp_path, "bad.tsv", b"user_id\titem_id\n1\t2\n3\t\xff\xfe\n")
    with pytest.raises(MalformedInputError, match=r"bad\.tsv:3: "):
        parse_table("tsv", "interactions", path)


def test_wrong_role_and_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="parses items"):
        parse_table("ml1m.movies", "interactions", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown format"):
        parse_table("nope", "items", tmp_path / "x")
