"""Tests of datasources.archive: safe, atomic, idempotent zip extraction."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from datasources.archive import MARKER_NAME, extract_zip, open_member_text
from datasources.errors import MalformedInputError, UnsafeArchiveError

FILES = {
    "ml-1m/ratings.dat": b"1::1193::5::978300760\n1::661::3::978302109\n",
    "ml-1m/movies.dat": b"1::Toy Story (1995)::Animation|Children's|Comedy\n",
    "ml-1m/README": b"readme\n",
}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def ml_zip(tmp_path: Path) -> Path:
    return make_zip(tmp_path / "ml-1m.zip", FILES)


def test_extract_all(ml_zip, tmp_path):
    dest = extract_zip(ml_zip, tmp_path / "out")

    assert dest == tmp_path / "out"
    assert listing(dest) == set(FILES) | {MARKER_NAME}
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    # No temporary or lock debris next to the destination apart from the lock file.
    assert {p.name for p in tmp_path.iterdir()} <= {"ml-1m.zip", "out", ".out.lock"}


def test_extract_named_members_only(ml_zip, tmp_path):
    dest = extract_zip(ml_zip, tmp_path / "out", members=["ml-1m/ratings.dat"])
    assert listing(dest) == {"ml-1m/ratings.dat", MARKER_NAME}


def test_named_directory_selects_its_files(ml_zip, tmp_path):
    dest = extract_zip(ml_zip, tmp_path / "out", members=["ml-1m"])
    assert listing(dest) == set(FILES) | {MARKER_NAME}


def test_widening_the_member_set_keeps_earlier_members(ml_zip, tmp_path):
    extract_zip(ml_zip, tmp_path / "out", members=["ml-1m/ratings.dat"])
    dest = extract_zip(ml_zip, tmp_path / "out", members=["ml-1m/movies.dat"])
    assert listing(dest) == {"ml-1m/ratings.dat", "ml-1m/movies.dat", MARKER_NAME}


def test_parent_traversal_member_refused_before_writing(tmp_path):
    # The safe member comes first: a naive extractor would already have written it.
    bad = make_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", "../evil.txt": b"pwned"})
    dest = tmp_path / "work" / "out"

    with pytest.raises(UnsafeArchiveError) as caught:
        extract_zip(bad, dest)

    assert "bad.zip" in str(caught.value)
    assert "../evil.txt" in str(caught.value)
    assert not dest.exists()
    assert not (tmp_path / "work" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "work").exists()


def test_nested_traversal_and_backslash_refused(tmp_path):
    for name in ("a/../../evil.txt", "a\\..\\..\\evil.txt"):
        bad = make_zip(tmp_path / "bad.zip", {name: b"x"})
        with pytest.raises(UnsafeArchiveError):
            extract_zip(bad, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_absolute_member_refused(tmp_path):
    bad = make_zip(tmp_path / "abs.zip", {"/tmp/evil.txt": b"x"})
    with zipfile.ZipFile(bad) as zf:  # guard: the test archive really holds an absolute name
        assert zf.namelist() == ["/tmp/evil.txt"]

    with pytest.raises(UnsafeArchiveError, match="absolute"):
        extract_zip(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_symlink_member_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("ml-1m/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")

    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_zip(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_zip_raises_malformed_input_naming_file(tmp_path):
    bogus = tmp_path / "broken.zip"
    bogus.write_bytes(b"<html>this is an error page, not a zip</html>")

    with pytest.raises(MalformedInputError, match="not a valid zip archive") as caught:
        extract_zip(bogus, tmp_path / "out")

    assert caught.value.path == str(bogus)
    assert caught.value.line is None
    assert str(caught.value).startswith(str(bogus))
    assert not (tmp_path / "out").exists()


def test_corrupt_member_data_raises_malformed_input(tmp_path):
    path = tmp_path / "crc.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("data.txt", b"A" * 1000)
    raw = bytearray(path.read_bytes())
    offset = raw.index(b"A" * 1000)
    raw[offset : offset + 10] = b"B" * 10  # body changed, CRC-32 in the header not
    path.write_bytes(bytes(raw))

    with pytest.raises(MalformedInputError, match=r"crc\.zip"):
        extract_zip(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == [".out.lock"]


def test_missing_member_lists_contents(ml_zip, tmp_path):
    with pytest.raises(MalformedInputError) as caught:
        extract_zip(ml_zip, tmp_path / "out", members=["ml-1m/users.dat"])

    message = str(caught.value)
    assert "ml-1m/users.dat" in message
    assert "ml-1m/ratings.dat" in message
    assert caught.value.path == str(ml_zip)
    assert not (tmp_path / "out").exists()


def test_second_call_does_not_extract_again(ml_zip, tmp_path):
    dest = extract_zip(ml_zip, tmp_path / "out")
    ratings = dest / "ml-1m/ratings.dat"
    os.utime(ratings, ns=(1_000_000_000, 1_000_000_000))  # a re-extract would reset this
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}

    assert extract_zip(ml_zip, tmp_path / "out") == dest
    assert extract_zip(ml_zip, tmp_path / "out", members=["ml-1m/movies.dat"]) == dest

    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before
    assert ratings.stat().st_mtime_ns == 1_000_000_000


def test_changed_archive_is_extracted_again(ml_zip, tmp_path):
    dest = extract_zip(ml_zip, tmp_path / "out")
    make_zip(ml_zip, {"ml-1m/ratings.dat": b"new\n"})
    st = ml_zip.stat()
    os.utime(ml_zip, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    extract_zip(ml_zip, dest)

    assert listing(dest) == {"ml-1m/ratings.dat", MARKER_NAME}
    assert (dest / "ml-1m/ratings.dat").read_bytes() == b"new\n"


def test_stale_partial_directory_is_replaced(ml_zip, tmp_path):
    dest = tmp_path / "out"
    (dest / "ml-1m").mkdir(parents=True)
    (dest / "ml-1m" / "ratings.dat").write_bytes(b"1::1193")  # half-written by a crashed run
    (dest / "leftover.tmp").write_bytes(b"junk")

    extract_zip(ml_zip, dest)

    assert listing(dest) == set(FILES) | {MARKER_NAME}
    assert (dest / "ml-1m/ratings.dat").read_bytes() == FILES["ml-1m/ratings.dat"]
    marker = json.loads((dest / MARKER_NAME).read_text())
    assert marker["size"] == ml_zip.stat().st_size
    assert marker["members"] is None


def test_marker_for_other_archive_triggers_reextract(ml_zip, tmp_path):
    dest = extract_zip(ml_zip, tmp_path / "out")
    marker = json.loads((dest / MARKER_NAME).read_text())
    marker["size"] += 1
    (dest / MARKER_NAME).write_text(json.dumps(marker))
    (dest / "ml-1m/README").unlink()

    extract_zip(ml_zip, dest)
    assert (dest / "ml-1m/README").read_bytes() == FILES["ml-1m/README"]


def test_missing_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.zip"):
        extract_zip(tmp_path / "nope.zip", tmp_path / "out")


def test_open_member_text_streams_and_closes(ml_zip):
    with open_member_text(ml_zip, "ml-1m/movies.dat", encoding="latin-1") as fh:
        lines = list(fh)
    assert lines == ["1::Toy Story (1995)::Animation|Children's|Comedy\n"]
    assert fh.closed
    assert fh._archive.fp is None  # the ZipFile was closed with the stream

    with pytest.raises(MalformedInputError, match=r"users\.dat"):
        open_member_text(ml_zip, "ml-1m/users.dat")
