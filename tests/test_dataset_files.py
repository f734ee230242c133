"""Datasets declared as YAML files: the schema's errors, the built-ins, and a user's own folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datasources.dataset_files import (
    BUILTIN_DIR,
    DatasetFileError,
    load_dataset_files,
    parse_dataset_file,
)

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
name: my-data
variants:
  files:
    tables:
      interactions: {format: tsv, locations: [pairs.tsv], options: {user_col: u, item_col: i}}
"""


def _write(tmp_path: Path, text: str, name: str = "my-data") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_builtin_datasets_are_three_files_with_their_sources():
    found = load_dataset_files([BUILTIN_DIR])
    assert set(found) == {"ml-100k", "ml-1m", "amazon-book"}
    ml1m = found["ml-1m"]
    assert ml1m.default_variant == "grouplens" and set(ml1m.variants) == {"grouplens", "tsv"}
    assert ml1m.variants["grouplens"].tables["interactions"].format == "ml1m.ratings"
    assert [s.kind for s in ml1m.kg_sources][:2] == ["links.kb4rec", "links.item_index2entity_id"]
    assert found["amazon-book"].variants["kgat"].key_space == "index"
    assert found["amazon-book"].media.kind == "book"
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in ml1m.checksums


def test_a_minimal_file_gets_defaults_and_a_tsv_variant(tmp_path):
    declaration = parse_dataset_file(_write(tmp_path, MINIMAL))
    assert declaration.default_variant == "files" and "tsv" in declaration.variants
    assert declaration.variants["files"].tables["interactions"].options == {"user_col": "u", "item_col": "i"}
    assert declaration.media.kind == "movie" and declaration.kg_sources == ()


@pytest.mark.parametrize("text,field,message", [
    (MINIMAL.replace("variants:", "variantz:"), "variantz", "unknown key (did you mean 'variants'?)"),
    (MINIMAL.replace("format: tsv", "format: tvs"), "variants.files.tables.interactions.format",
     "unknown format 'tvs' (did you mean 'tsv'?)"),
    (MINIMAL.replace("format: tsv", "format: ml1m.movies"), "variants.files.tables.interactions.format",
     "'ml1m.movies' parses items, not interactions"),
    (MINIMAL.replace("interactions:", "interaction:"), "variants.files.tables.interaction",
     "unknown key (did you mean 'interactions'?)"),
    (MINIMAL.replace("name: my-data", "name: other"), "name", "'other' differs from the file name"),
    (MINIMAL + "media: {match_by: title}\n", "media.match_by", "'title' is not one of item_key, title_year"),
    (MINIMAL + "default_variant: filez\n", "default_variant", "'filez' is not a variant (did you mean 'files'?)"),
    (MINIMAL.replace("locations: [pairs.tsv]", "locations: []"), "variants.files.tables.interactions.locations",
     "must not be empty"),
])
def test_a_bad_file_names_itself_and_the_field(tmp_path, text, field, message):
    path = _write(tmp_path, text)
    with pytest.raises(DatasetFileError) as caught:
        parse_dataset_file(path)
    assert str(caught.value).startswith(f"{path}: {field}: ")
    assert message in str(caught.value)


def test_invalid_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "name: my-data\nvariants: [\n")
    with pytest.raises(DatasetFileError, match=rf"{path}: line \d+: not valid YAML"):
        parse_dataset_file(path)


def test_a_name_declared_twice_names_both_files(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    _write(tmp_path, MINIMAL)
    _write(other, MINIMAL)
    with pytest.raises(DatasetFileError, match="'my-data' is also declared in"):
        load_dataset_files([tmp_path, other])


def test_a_users_folder_adds_a_partition_and_a_bad_kg_kind_is_named(tmp_path):
    _write(tmp_path, MINIMAL)
    env = {**os.environ, "KG4REC_DATASETS": str(tmp_path)}
    code = "from assets.partitions import dataset_partitions; print(dataset_partitions.get_partition_keys())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "my-data" in out.stdout and "ml-1m" in out.stdout
    _write(tmp_path, MINIMAL + "kg:\n  sources:\n    - {name: g, kind: triples.recbol}\n")
    out = subprocess.run([sys.executable, "-c", "import datasources.kg.sources"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "kg.sources[0].kind: unknown KG source kind 'triples.recbol' (did you mean 'triples.recbole'?)" in out.stderr


def test_a_misspelled_table_option_names_file_field_and_the_near_miss(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text("name: shop\nvariants:\n  files:\n    tables:\n"
                    "      interactions: {format: csv, locations: [p.csv], options: {user_col: c, ratng_col: s}}\n")
    with pytest.raises(DatasetFileError) as error:
        parse_dataset_file(path)
    assert str(error.value).startswith(
        f"{path}: variants.files.tables.interactions.options.ratng_col: format 'csv' has no option "
        "'ratng_col'")
    assert "did you mean 'rating_col'?" in str(error.value)
    # the release's own folds are an interactions option of every format
    path.write_text("name: shop\nvariants:\n  files:\n    tables:\n"
                    "      interactions: {format: kgat.pairs, locations: [a, b], options: {folds: 'train,test'}}\n")
    assert parse_dataset_file(path).variants["files"].tables["interactions"].options == {"folds": "train,test"}
