"""The dataset registry: for each dataset partition, where its sources live and in which format.

A dataset has one or more *source variants* (GroupLens zip, RecBole atomic files, the KGAT
release, ...). A variant names, for each table role (``interactions``, ``items``, ``users``), the
parser (``format``) and the locations of the files. Locations are real upstream URLs; a file inside
a zip archive is written ``<archive url>!/<member>`` (as in ``jar:`` URLs). A run config can point
any role at a local path, a ``file://`` URL or another URL instead, and the HTTP layer's mirror
setting can redirect whole URL prefixes.

The datasets themselves are data: one YAML file each (:mod:`datasources.dataset_files`,
``configs/datasets/``); this module turns them into the specs the ingest stage reads. The
Dagster wiring lives in ``assets/`` and ``pipeline/``, the parsers in ``datasources.formats``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from datasources.dataset_files import DATASETS_ENV, DatasetDeclaration, load_dataset_files
from datasources.dataset_files import TABLE_ROLES as DECLARED_ROLES

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
KGAT_RAW = (
    "https://raw.githubusercontent.com/xiangwang1223/knowledge_graph_attention_network/"
    "master/Data/amazon-book"
)

# "item_metadata" is optional side information keyed like the items (e.g. titles and categories
# of Amazon books from a RecBole .item file): it fills the items' missing title/year/genres.
TABLE_ROLES = DECLARED_ROLES


ARCHIVE_SEPARATOR = "!/"


@dataclass(frozen=True)
class Checksum:
    """How to verify a download: a digest given here, or a published ``.md5`` file next to it."""

    md5_url: str | None = None
    md5: str | None = None


def split_archive_location(location: str) -> tuple[str, str | None]:
    """``"https://x/a.zip!/dir/f.dat"`` -> ``("https://x/a.zip", "dir/f.dat")``; plain -> (loc, None)."""
    if ARCHIVE_SEPARATOR in location:
        archive, member = location.split(ARCHIVE_SEPARATOR, 1)
        return archive, member
    return location, None


@dataclass(frozen=True)
class TableSource:
    """Where one table role is read from, and with which parser.

    ``locations`` are read in order and concatenated (KGAT ships interactions as train + test).
    A location inside a zip archive is written ``<archive url>!/<member>``.
    """

    format: str
    locations: tuple[str, ...]
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class SourceVariant:
    name: str
    description: str
    tables: Mapping[str, TableSource]
    # "native": interaction files carry the users'/items' own keys. "index": they carry row
    # indices into the items/users lists (the KGAT release), translated by the assembler.
    key_space: str = "native"

    def with_table(self, role: str, table: TableSource) -> SourceVariant:
        tables = dict(self.tables)
        tables[role] = table
        return replace(self, tables=MappingProxyType(tables))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    variants: Mapping[str, SourceVariant]
    default_variant: str
    homepage: str

    def variant(self, name: str | None = None) -> SourceVariant:
        key = name or self.default_variant
        if key not in self.variants:
            known = ", ".join(sorted(self.variants))
            raise KeyError(f"dataset {self.name!r} has no source variant {key!r} (known: {known})")
        return self.variants[key]


def _spec(declaration: DatasetDeclaration) -> DatasetSpec:
    variants = {
        name: SourceVariant(
            name, variant.description,
            MappingProxyType({role: TableSource(t.format, t.locations, MappingProxyType(dict(t.options)))
                              for role, t in variant.tables.items()}),
            variant.key_space)
        for name, variant in declaration.variants.items()
    }
    return DatasetSpec(name=declaration.name, description=declaration.description,
                       variants=MappingProxyType(variants),
                       default_variant=declaration.default_variant, homepage=declaration.homepage)


#: The dataset files (``configs/datasets/*.yaml`` and ``$KG4REC_DATASETS``), read once at import:
#: they are the Dagster partitions, so they are fixed for the life of a code location.
DECLARATIONS: Mapping[str, DatasetDeclaration] = MappingProxyType(load_dataset_files())
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {name: _spec(d) for name, d in DECLARATIONS.items()})
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)

# How to verify downloads, from every dataset file's ``checksums`` section.
KNOWN_CHECKSUMS: Mapping[str, Checksum] = MappingProxyType({
    url: Checksum(md5_url=entry.get("md5_url"), md5=entry.get("md5"))
    for d in DECLARATIONS.values() for url, entry in d.checksums.items()})


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        hint = difflib.get_close_matches(name, DATASET_NAMES, n=1, cutoff=0.6)
        raise KeyError(f"unknown dataset {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                       f"known: {', '.join(DATASET_NAMES)} (a dataset is a file in configs/datasets/ "
                       f"or in ${DATASETS_ENV})") from None
