"""Datasets as data: one YAML file per dataset partition, validated before anything runs.

The built-in datasets are ``configs/datasets/{ml-100k,ml-1m,amazon-book}.yaml``; a user adds one
by putting ``<name>.yaml`` there or in a folder named by ``$KG4REC_DATASETS`` (several folders
separated by ``:``). The Dagster partitions are the names found when the code location loads
(a static set: the partitions a run can name are exactly the files in the folders, so what the
UI lists, what ``make run DATASET=...`` accepts and what is on disk cannot drift apart, which
dynamic partitions stored in the instance could).

Schema (every key but ``name`` and ``variants`` optional)::

    name: my-data                   # = the file name without .yaml; [a-z0-9][a-z0-9._-]*
    description: ...
    homepage: https://...
    default_variant: files          # default: the first variant
    variants:
      files:
        description: ...
        key_space: native           # native (files carry keys) | index (KGAT-style row indices)
        tables:                     # roles: interactions (required), items, users, item_metadata
          interactions: {format: tsv, locations: [data/pairs.tsv], options: {user_col: u}}
    checksums:                      # optional: how to verify a download
      "https://host/file.zip": {md5_url: "https://host/file.zip.md5"}   # or {md5: <hex>}
    kg:
      sources:                      # what the knowledge_graph stage merges by default
        - {name: my_kg, kind: triples.recbole, locations: [data/kg.tsv]}
    media:                          # what the media stage does by default
      kind: movie                   # movie | book (which chains make sense)
      match_by: item_key            # item_key | title_year
      poster_sources: [omdb_file, wikipedia]
      description_sources: [omdb_file, title_genres]
      descriptions: {location: items.csv, item_col: item, text_col: text}   # your own texts
      images: {location: images.csv, item_col: item, image_col: image}     # paths or URLs
      image_folder: images/         # or <item_key>.<ext> files (chains default to these)

An error names the file and the field (``configs/datasets/x.yaml: variants.files.tables.
interactions.format: unknown format 'tvs' (did you mean 'tsv'?)``). Every dataset also gets a
``tsv`` variant (your own interactions as a TSV) unless it declares one.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "configs" / "datasets"
DATASETS_ENV = "KG4REC_DATASETS"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
TABLE_ROLES = ("interactions", "items", "users", "item_metadata")
KEY_SPACES = ("native", "index")
MEDIA_KINDS = ("movie", "book")
MATCH_BY = ("item_key", "title_year")

_TOP = ("name", "description", "homepage", "default_variant", "variants", "checksums", "kg", "media")
_VARIANT = ("description", "key_space", "tables")
_TABLE = ("format", "locations", "options")
_KG_SOURCE = ("name", "kind", "locations", "options")
#: Keys of the media ``descriptions`` / ``images`` sections (datasources.media.own_files reads
#: them; ``file_format``/``delimiter`` as in datasources.columns).
DESCRIPTION_KEYS = frozenset({"location", "item_col", "text_col", "file_format", "delimiter"})
IMAGE_KEYS = frozenset({"location", "item_col", "image_col", "file_format", "delimiter"})
_MEDIA = ("kind", "match_by", "poster_sources", "description_sources", "descriptions", "images",
          "image_folder")


class DatasetFileError(ValueError):
    """A dataset file that does not follow the schema; the message names file and field."""

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        self.path, self.field = str(path), field
        super().__init__(f"{path}: {field}: {message}" if field else f"{path}: {message}")


@dataclass(frozen=True)
class DeclaredTable:
    format: str
    locations: tuple[str, ...]
    options: Mapping[str, str]


@dataclass(frozen=True)
class DeclaredVariant:
    name: str
    description: str
    key_space: str
    tables: Mapping[str, DeclaredTable]


@dataclass(frozen=True)
class DeclaredKGSource:
    name: str
    kind: str
    locations: tuple[str, ...]
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeclaredMedia:
    kind: str = "movie"
    match_by: str = "item_key"
    poster_sources: tuple[str, ...] | None = None
    description_sources: tuple[str, ...] | None = None
    # the dataset's own files (datasources.media.own_files); locations beside the dataset file
    descriptions: Mapping[str, str] | None = None
    images: Mapping[str, str] | None = None
    image_folder: str | None = None


@dataclass(frozen=True)
class DatasetDeclaration:
    """One dataset file, validated."""

    name: str
    path: Path
    description: str
    homepage: str
    default_variant: str
    variants: Mapping[str, DeclaredVariant]
    checksums: Mapping[str, Mapping[str, str]]
    kg_sources: tuple[DeclaredKGSource, ...]
    media: DeclaredMedia


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    """Walks one parsed YAML document, raising :class:`DatasetFileError` with the field path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, message: str) -> DatasetFileError:
        return DatasetFileError(self.path, field, message)

    def mapping(self, value: Any, field: str, allowed: tuple[str, ...] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(field, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if allowed is not None and key not in allowed:
                raise self.fail(f"{field}.{key}".lstrip("."), f"unknown key{_suggest(key, allowed)}; "
                                f"allowed: {', '.join(allowed)}")
        return value

    def text(self, value: Any, field: str, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            raise self.fail(field, "expected a non-empty string")
        return str(value)

    def choice(self, value: Any, field: str, options: tuple[str, ...], default: str) -> str:
        chosen = self.text(value, field, default)
        if chosen not in options:
            raise self.fail(field, f"{chosen!r} is not one of {', '.join(options)}{_suggest(chosen, options)}")
        return chosen

    def strings(self, value: Any, field: str, allow_empty: bool = True) -> tuple[str, ...]:
        if value is None:
            value = []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list of strings, got {type(value).__name__}")
        items = tuple(self.text(v, f"{field}[{i}]") for i, v in enumerate(value))
        if not items and not allow_empty:
            raise self.fail(field, "must not be empty")
        return items


    def located(self, value: Any, field: str, allow_empty: bool = True) -> tuple[str, ...]:
        """File locations, a relative path taken from the dataset file's folder (so a dataset
        folder can be moved or run from anywhere); URLs and absolute paths as written."""
        return tuple(_beside(self.path, location) for location in self.strings(value, field, allow_empty))


def _beside(dataset_file: Path, location: str) -> str:
    if "://" in location or Path(location.split("!/")[0]).is_absolute():
        return location
    return str((dataset_file.parent / location).resolve(strict=False))


def parse_dataset_file(path: Path) -> DatasetDeclaration:
    """Read and validate one dataset file."""
    from datasources.formats import PARSERS  # the parsers a table may name

    path = Path(path)
    read = _Reader(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise DatasetFileError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    top = read.mapping(raw, "", _TOP)
    name = read.text(top.get("name"), "name")
    if not NAME.fullmatch(name):
        raise read.fail("name", f"{name!r} is not a partition name ([a-z0-9][a-z0-9._-]*)")
    if name != path.stem:
        raise read.fail("name", f"{name!r} differs from the file name {path.name!r}")
    variants = _variants(read, top.get("variants"), PARSERS)
    default = read.text(top.get("default_variant"), "default_variant", next(iter(variants)))
    if default not in variants:
        raise read.fail("default_variant", f"{default!r} is not a variant{_suggest(default, variants)}")
    if "tsv" not in variants:
        variants["tsv"] = DeclaredVariant(
            "tsv", "Your own interactions as a tab-separated file with a header "
            "(options: user_col, item_col, rating_col, ts_col, label_col, threshold, delimiter, "
            "null_item).",
            "native", {"interactions": DeclaredTable("tsv", ("interactions.tsv",), {})})
    checksums = {}
    for url, spec in read.mapping(top.get("checksums"), "checksums").items():
        entry = read.mapping(spec, f"checksums.{url}", ("md5_url", "md5"))
        if not entry:
            raise read.fail(f"checksums.{url}", "give md5_url or md5")
        checksums[str(url)] = {k: read.text(v, f"checksums.{url}.{k}") for k, v in entry.items()}
    kg = read.mapping(top.get("kg"), "kg", ("sources",))
    kg_sources = tuple(_kg_source(read, s, f"kg.sources[{i}]")
                       for i, s in enumerate(kg.get("sources") or []))
    return DatasetDeclaration(
        name=name, path=path, description=read.text(top.get("description"), "description", name),
        homepage=read.text(top.get("homepage"), "homepage", ""), default_variant=default,
        variants=variants, checksums=checksums, kg_sources=kg_sources,
        media=_media(read, top.get("media")))


def _variants(read: _Reader, value: Any, parsers: Mapping) -> dict[str, DeclaredVariant]:
    variants = {}
    for vname, spec in read.mapping(value, "variants").items():
        field = f"variants.{vname}"
        entry = read.mapping(spec, field, _VARIANT)
        tables = {}
        for role, table in read.mapping(entry.get("tables"), f"{field}.tables", TABLE_ROLES).items():
            tfield = f"{field}.tables.{role}"
            t = read.mapping(table, tfield, _TABLE)
            fmt = read.text(t.get("format"), f"{tfield}.format")
            if fmt not in parsers:
                raise read.fail(f"{tfield}.format", f"unknown format {fmt!r}{_suggest(fmt, parsers)}; "
                                f"known: {', '.join(sorted(parsers))}")
            if parsers[fmt].role != role and not (role == "item_metadata" and parsers[fmt].role == "items"):
                raise read.fail(f"{tfield}.format", f"{fmt!r} parses {parsers[fmt].role}, not {role}")
            options = {str(k): read.text(v, f"{tfield}.options.{k}")
                       for k, v in read.mapping(t.get("options"), f"{tfield}.options").items()}
            _check_table_options(read, fmt, role, options, f"{tfield}.options")
            tables[role] = DeclaredTable(fmt, read.located(t.get("locations"), f"{tfield}.locations",
                                                           allow_empty=False), options)
        if "interactions" not in tables:
            raise read.fail(f"{field}.tables", "an interactions table is required")
        variants[str(vname)] = DeclaredVariant(
            str(vname), read.text(entry.get("description"), f"{field}.description", str(vname)),
            read.choice(entry.get("key_space"), f"{field}.key_space", KEY_SPACES, "native"), tables)
    if not variants:
        raise read.fail("variants", "declare at least one variant")
    return variants


def _check_table_options(read: _Reader, fmt: str, role: str, options: Mapping[str, str], field: str) -> None:
    """The format's own options (``datasources.formats.check_options``), plus ``folds`` on an
    interactions table (the release's own split, read by ``datasources.fetch``)."""
    from datasources.formats import check_options

    own = {k: v for k, v in options.items() if not (role == "interactions" and k == "folds")}
    try:
        check_options(fmt, own, field)
    except ValueError as exc:
        message = str(exc).removeprefix(f"{field}: ")
        bad = next((k for k in own if f"option {k!r}" in message), None)
        raise read.fail(f"{field}.{bad}" if bad else field, message) from None


def _kg_source(read: _Reader, value: Any, field: str) -> DeclaredKGSource:
    entry = read.mapping(value, field, _KG_SOURCE)
    options = {str(k): read.text(v, f"{field}.options.{k}")
               for k, v in read.mapping(entry.get("options"), f"{field}.options").items()}
    return DeclaredKGSource(read.text(entry.get("name"), f"{field}.name"),
                            read.text(entry.get("kind"), f"{field}.kind"),
                            read.located(entry.get("locations"), f"{field}.locations"), options)


def _media(read: _Reader, value: Any) -> DeclaredMedia:
    entry = read.mapping(value, "media", _MEDIA)
    chains = {key: read.strings(entry[key], f"media.{key}") if key in entry else None
              for key in ("poster_sources", "description_sources")}
    files = {key: _file_section(read, entry.get(key), f"media.{key}", tuple(sorted(allowed)))
             for key, allowed in (("descriptions", DESCRIPTION_KEYS), ("images", IMAGE_KEYS))}
    folder = entry.get("image_folder")
    return DeclaredMedia(kind=read.choice(entry.get("kind"), "media.kind", MEDIA_KINDS, "movie"),
                         match_by=read.choice(entry.get("match_by"), "media.match_by", MATCH_BY, "item_key"),
                         image_folder=read.located(folder, "media.image_folder")[0] if folder else None,
                         **chains, **files)


def _file_section(read: _Reader, value: Any, field: str, allowed: tuple[str, ...]) -> dict | None:
    """A ``{location, <column options>}`` section, its location taken beside the dataset file."""
    if value is None:
        return None
    entry = {str(k): read.text(v, f"{field}.{k}") for k, v in read.mapping(value, field, allowed).items()}
    if "location" not in entry:
        raise read.fail(f"{field}.location", "the file is required")
    entry["location"] = read.located(entry["location"], f"{field}.location")[0]
    return entry


def dataset_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The built-in folder, then every folder of ``$KG4REC_DATASETS``."""
    env = os.environ if environ is None else environ
    extra = [Path(p) for p in env.get(DATASETS_ENV, "").split(os.pathsep) if p.strip()]
    return [BUILTIN_DIR, *extra]


def load_dataset_files(dirs: list[Path] | None = None) -> dict[str, DatasetDeclaration]:
    """Every dataset file of ``dirs`` (default :func:`dataset_dirs`), by name; a name declared
    twice is an error naming both files."""
    found: dict[str, DatasetDeclaration] = {}
    for directory in dirs if dirs is not None else dataset_dirs():
        if not directory.is_dir():
            raise DatasetFileError(directory, "", f"{DATASETS_ENV} names a folder that does not exist")
        for path in sorted(directory.glob("*.yaml")):
            declaration = parse_dataset_file(path)
            if declaration.name in found:
                raise DatasetFileError(path, "name", f"{declaration.name!r} is also declared in "
                                       f"{found[declaration.name].path}")
            found[declaration.name] = declaration
    return found
