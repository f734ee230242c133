"""The dataset registry: for each dataset partition, where its sources live and in which format.

A dataset has one or more *source variants* (GroupLens zip, RecBole atomic files, the KGAT
release, ...). A variant names, for each table role (``interactions``, ``items``, ``users``), the
parser (``format``) and the locations of the files. Locations are real upstream URLs; a file inside
a zip archive is written ``<archive url>!/<member>`` (as in ``jar:`` URLs). A run config can point
any role at a local path, a ``file://`` URL or another URL instead, and the HTTP layer's mirror
setting can redirect whole URL prefixes.

Everything here is plain data: the Dagster wiring lives in ``pipeline/`` and the parsers in
``datasources.formats``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
KGAT_RAW = (
    "https://raw.githubusercontent.com/xiangwang1223/knowledge_graph_attention_network/"
    "master/Data/amazon-book"
)
ML100K_ZIP = f"{GROUPLENS}/ml-100k.zip"
ML1M_ZIP = f"{GROUPLENS}/ml-1m.zip"
RECBOLE_ML100K = "https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets/MovieLens/ml-100k.zip"

# "item_metadata" is optional side information keyed like the items (e.g. titles and categories
# of Amazon books from a RecBole .item file): it fills the items' missing title/year/genres.
TABLE_ROLES = ("interactions", "items", "users", "item_metadata")


ARCHIVE_SEPARATOR = "!/"


@dataclass(frozen=True)
class Checksum:
    """How to verify a download: a digest given here, or a published ``.md5`` file next to it."""

    md5_url: str | None = None
    md5: str | None = None


# GroupLens publishes "<zip>.md5" next to each zip; the HTTP layer verifies against it.
KNOWN_CHECKSUMS: Mapping[str, Checksum] = MappingProxyType(
    {
        f"{GROUPLENS}/ml-100k.zip": Checksum(md5_url=f"{GROUPLENS}/ml-100k.zip.md5"),
        f"{GROUPLENS}/ml-1m.zip": Checksum(md5_url=f"{GROUPLENS}/ml-1m.zip.md5"),
    }
)


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


def _t(fmt: str, *locations: str, **options: str) -> TableSource:
    return TableSource(format=fmt, locations=tuple(locations), options=MappingProxyType(options))


def _variant(name: str, description: str, key_space: str = "native",
             **tables: TableSource) -> SourceVariant:
    return SourceVariant(name, description, MappingProxyType(tables), key_space)


# A plain TSV of interactions (user, item, optional rating/timestamp/label) for users' own data.
# It has no upstream; a run config supplies the path (and column names when they differ).
TSV_VARIANT = _variant(
    "tsv",
    "Your own interactions as a tab-separated file with a header "
    "(options: user_col, item_col, rating_col, ts_col, label_col, delimiter, null_item).",
    interactions=_t("tsv", "interactions.tsv"),
)

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        "ml-100k": DatasetSpec(
            name="ml-100k",
            description="MovieLens 100K: 100,000 ratings by 943 users on 1,682 movies (1998).",
            homepage="https://grouplens.org/datasets/movielens/100k/",
            default_variant="grouplens",
            variants=MappingProxyType(
                {
                    "grouplens": _variant(
                        "grouplens",
                        "GroupLens ml-100k.zip (u.data, u.item, u.user).",
                        interactions=_t("ml100k.data", f"{ML100K_ZIP}!/ml-100k/u.data"),
                        items=_t("ml100k.item", f"{ML100K_ZIP}!/ml-100k/u.item"),
                        users=_t("ml100k.user", f"{ML100K_ZIP}!/ml-100k/u.user"),
                    ),
                    "recbole": _variant(
                        "recbole",
                        "RecBole atomic files (ml-100k.inter/.item/.user).",
                        interactions=_t("recbole.inter", f"{RECBOLE_ML100K}!/ml-100k/ml-100k.inter"),
                        items=_t("recbole.item", f"{RECBOLE_ML100K}!/ml-100k/ml-100k.item"),
                        users=_t("recbole.user", f"{RECBOLE_ML100K}!/ml-100k/ml-100k.user"),
                    ),
                    "tsv": TSV_VARIANT,
                }
            ),
        ),
        "ml-1m": DatasetSpec(
            name="ml-1m",
            description="MovieLens 1M: 1,000,209 ratings by 6,040 users on 3,706 movies (2003).",
            homepage="https://grouplens.org/datasets/movielens/1m/",
            default_variant="grouplens",
            variants=MappingProxyType(
                {
                    "grouplens": _variant(
                        "grouplens",
                        "GroupLens ml-1m.zip (ratings.dat, movies.dat, users.dat; '::'-separated, Latin-1).",
                        interactions=_t("ml1m.ratings", f"{ML1M_ZIP}!/ml-1m/ratings.dat"),
                        items=_t("ml1m.movies", f"{ML1M_ZIP}!/ml-1m/movies.dat"),
                        users=_t("ml1m.users", f"{ML1M_ZIP}!/ml-1m/users.dat"),
                    ),
                    "tsv": _variant(
                        "tsv",
                        "Interactions from a TSV with the MovieLens movies.dat/users.dat side files.",
                        interactions=_t("tsv", "interactions.tsv"),
                        items=_t("ml1m.movies", f"{ML1M_ZIP}!/ml-1m/movies.dat"),
                        users=_t("ml1m.users", f"{ML1M_ZIP}!/ml-1m/users.dat"),
                    ),
                }
            ),
        ),
        "amazon-book": DatasetSpec(
            name="amazon-book",
            description="Amazon-Book as released with KGAT (Wang et al., KDD 2019): 70,679 users, "
            "24,915 books, 846,434 interactions, items linked to Freebase.",
            homepage="https://github.com/xiangwang1223/knowledge_graph_attention_network",
            default_variant="kgat",
            variants=MappingProxyType(
                {
                    "kgat": _variant(
                        "kgat",
                        "KGAT release files: train.txt + test.txt ('user item item ...'), "
                        "user_list.txt, item_list.txt (with Freebase MIDs).",
                        key_space="index",
                        interactions=_t("kgat.pairs", f"{KGAT_RAW}/train.txt", f"{KGAT_RAW}/test.txt"),
                        items=_t("kgat.item_list", f"{KGAT_RAW}/item_list.txt"),
                        users=_t("kgat.user_list", f"{KGAT_RAW}/user_list.txt"),
                    ),
                    "tsv": TSV_VARIANT,
                }
            ),
        ),
    }
)

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}") from None
