"""A dataset's own media: texts from a column, images from a list of paths/URLs or a folder."""

from __future__ import annotations

import pytest

from datasources.errors import MalformedInputError
from datasources.media import LocalMetadata
from datasources.media.own_files import read_descriptions, read_image_list, scan_image_folder
from datasources.media.types import ItemRef
from tests.test_media_helpers import collect, jpeg_bytes, row, serve_image


def _item(item_id: int, key: str) -> ItemRef:
    return ItemRef(item_id=item_id, item_key=key, title=f"Thing {key}")


def test_texts_from_any_column_and_images_from_paths_urls_and_a_folder(server, tmp_path):
    (tmp_path / "meta.csv").write_text('sku,blurb\nA1,"A red, round ball."\nB2,\nC3,Soft   toy\n')
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a1.jpg").write_bytes(jpeg_bytes((40, 30)))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "C3.png").write_bytes(jpeg_bytes((20, 20)))
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    url = serve_image(server, "/img/b2.jpg", jpeg_bytes((50, 50)))
    (tmp_path / "images.tsv").write_text(f"sku\tpicture\nA1\tpics/a1.jpg\nB2\t{url}\n")
    local = LocalMetadata.load(
        descriptions={"location": str(tmp_path / "meta.csv"), "item_col": "sku", "text_col": "blurb"},
        images={"location": str(tmp_path / "images.tsv"), "item_col": "sku", "image_col": "picture"},
        image_folder=tmp_path / "folder")
    assert local.texts == {"A1": "A red, round ball.", "C3": "Soft toy"}  # empty text left out
    assert local.images["A1"] == str(tmp_path / "pics" / "a1.jpg")  # beside the list file

    refs = [_item(0, "A1"), _item(1, "B2"), _item(2, "C3"), _item(3, "D4")]
    run = collect(tmp_path / "root", refs, local=local,
                  poster_sources=("image_list", "image_folder"),
                  description_sources=("text_file", "title_genres"))
    a1, b2, c3, d4 = (row(run, i) for i in range(4))
    assert (a1["poster_status"], a1["poster_source"], a1["poster_width"]) == ("ok", "image_list", 40)
    assert (b2["poster_status"], b2["poster_source"], b2["poster_width"]) == ("ok", "image_list", 50)
    assert (c3["poster_status"], c3["poster_source"]) == ("ok", "image_folder")
    assert d4["poster_status"] == "no_source"
    assert (a1["description"], a1["description_source"]) == ("A red, round ball.", "dataset_text")
    assert b2["description_source"] == "title_genres_fallback"


def test_local_images_are_read_offline_and_a_replaced_file_is_read_again(tmp_path):
    (tmp_path / "folder").mkdir()
    image = tmp_path / "folder" / "A1.jpg"
    image.write_bytes(jpeg_bytes((40, 30)))
    local = LocalMetadata.load(image_folder=tmp_path / "folder")
    first = row(collect(tmp_path / "root", [_item(0, "A1")], local=local, offline=True,
                        poster_sources=("image_folder",)), 0)
    assert (first["poster_status"], first["poster_width"]) == ("ok", 40)
    image.write_bytes(jpeg_bytes((64, 48)))
    second = row(collect(tmp_path / "root", [_item(0, "A1")], local=local, offline=True,
                         poster_sources=("image_folder",)), 0)
    assert second["poster_width"] == 64 and second["poster_sha256"] != first["poster_sha256"]


def test_a_broken_local_image_is_a_failed_row_not_a_crash(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "A1.jpg").write_bytes(b"<html>not a jpeg</html>")
    run = collect(tmp_path / "root", [_item(0, "A1")],
                  local=LocalMetadata.load(image_folder=tmp_path / "folder"),
                  poster_sources=("image_folder",))
    assert row(run, 0)["poster_status"] not in ("ok", "no_source")


def test_bad_own_files_name_file_and_line(tmp_path):
    (tmp_path / "meta.csv").write_text("sku,blurb\nA1,x\nA1,y\n")
    with pytest.raises(MalformedInputError, match=r"meta\.csv:3: item 'A1' is listed twice"):
        read_descriptions({"location": str(tmp_path / "meta.csv"), "item_col": "sku", "text_col": "blurb"})
    with pytest.raises(MalformedInputError, match=r"meta\.csv:1: no column 'text' \(text_col\)"):
        read_descriptions({"location": str(tmp_path / "meta.csv"), "item_col": "sku"})
    with pytest.raises(ValueError, match="descriptions: unknown key 'text_column' \\(did you mean 'text_col'\\?\\)"):
        read_descriptions({"location": str(tmp_path / "meta.csv"), "text_column": "blurb"})
    (tmp_path / "images.csv").write_text("item,image\nA1,a.jpg,extra\n")
    with pytest.raises(MalformedInputError, match=r"images\.csv:2: 3 fields, the header has 2"):
        read_image_list({"location": str(tmp_path / "images.csv")})
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "A1.jpg").write_bytes(b"x")
    (tmp_path / "folder" / "A1.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"item 'A1' has two images: A1\.jpg and A1\.png"):
        scan_image_folder(tmp_path / "folder")


def test_a_dataset_file_declares_its_own_media_and_the_chains_follow(tmp_path, monkeypatch):
    from datasources.dataset_files import DatasetFileError, parse_dataset_file
    from datasources.media import settings

    (tmp_path / "shop.yaml").write_text(
        "name: shop\nvariants:\n  files:\n    tables:\n"
        "      interactions: {format: tsv, locations: [pairs.tsv]}\n"
        "media:\n  descriptions: {location: meta.csv, item_col: sku, text_col: blurb}\n"
        "  image_folder: pics\n")
    declaration = parse_dataset_file(tmp_path / "shop.yaml")
    assert declaration.media.descriptions == {"location": str(tmp_path / "meta.csv"),
                                              "item_col": "sku", "text_col": "blurb"}
    assert declaration.media.image_folder == str(tmp_path / "pics")
    monkeypatch.setattr("datasources.registry.DECLARATIONS", {"shop": declaration})
    defaults = settings._declared_defaults()["shop"]
    assert defaults.poster_sources == ("image_folder",)  # its own images, no web service asked
    assert defaults.description_sources == ("text_file", "title_genres")

    (tmp_path / "bad.yaml").write_text(
        "name: bad\nvariants:\n  files:\n    tables:\n"
        "      interactions: {format: tsv, locations: [pairs.tsv]}\n"
        "media:\n  descriptions: {location: meta.csv, txt_col: blurb}\n")
    with pytest.raises(DatasetFileError, match=r"bad\.yaml: media\.descriptions\.txt_col: unknown key "
                       r"\(did you mean 'text_col'\?\)"):
        parse_dataset_file(tmp_path / "bad.yaml")
