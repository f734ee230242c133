"""Resolve a source variant's table locations to verified local files, then parse and assemble.

A location is an http(s) URL, a ``file://`` URL or a local path, optionally inside a zip archive
(``<archive>!/<member>``). Downloads go through :class:`datasources.http.HttpClient` (retries,
cache, checksums, mirrors); archives are extracted once, safely, next to the download cache.

A source that publishes its own split says so with the interactions table's ``folds`` option:
one fold (``train``, ``valid`` or ``test``) per location, in order, comma-separated (table
options are strings), e.g. KGAT's ``locations: [train.txt, test.txt]`` with
``options: {folds: "train,test"}``. Every row read from a location then carries its fold in
the interactions' ``fold`` column (``strategy: predefined`` of the split uses it); a table
without the option has no ``fold`` column at all, so its tables are exactly as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from datasources.archive import extract_zip
from datasources.assemble import AssembledDataset, assemble_dataset, enrich_items
from datasources.formats import parse_table
from datasources.http import HttpClient
from datasources.registry import KNOWN_CHECKSUMS, TABLE_ROLES, SourceVariant, split_archive_location
from datasources.split import FOLD_NAMES

#: The table option naming the source's fold of each location (interactions only).
FOLDS_OPTION = "folds"


@dataclass(frozen=True)
class ResolvedTable:
    role: str
    format: str
    locations: tuple[str, ...]
    paths: tuple[Path, ...]
    options: Mapping[str, str] = field(default_factory=dict)


def declared_folds(role: str, locations: tuple[str, ...], options: Mapping[str, str]) -> tuple[str, ...] | None:
    """The fold of each location from the table's ``folds`` option, or None when not declared
    (an empty value counts as not declared, so a run config can clear an inherited one)."""
    value = str(options.get(FOLDS_OPTION, "")).strip()
    if not value:
        return None
    if role != "interactions":
        raise ValueError(f"table {role!r}: option {FOLDS_OPTION!r} is for the interactions table only")
    folds = tuple(f.strip() for f in value.split(","))
    unknown = [f for f in folds if f not in FOLD_NAMES]
    if unknown or len(folds) != len(locations):
        problem = (f"unknown fold {unknown[0]!r}" if unknown
                   else f"{len(folds)} folds for {len(locations)} locations")
        raise ValueError(f"table {role!r}: option {FOLDS_OPTION}={value!r}: {problem}; give one fold "
                         f"({', '.join(FOLD_NAMES)}) per location, in the order of the locations, "
                         f"comma-separated (e.g. {FOLDS_OPTION}: \"train,test\")")
    return folds


def resolve_location(location: str, client: HttpClient, extract_root: Path, refresh: bool = False) -> Path:
    """Return a local path for one location, downloading/extracting as needed."""
    archive_url, member = split_archive_location(location)
    checksum = KNOWN_CHECKSUMS.get(archive_url)
    local = client.fetch(
        archive_url,
        md5=checksum.md5 if checksum else None,
        md5_url=checksum.md5_url if checksum else None,
        refresh=refresh,
    )
    if member is None:
        return local
    target = extract_root / hashlib.sha1(archive_url.encode()).hexdigest()[:16]
    extract_zip(local, target)
    path = target / member
    if not path.is_file():
        raise FileNotFoundError(f"{archive_url} has no member {member!r}")
    return path


def resolve_variant(
    variant: SourceVariant, client: HttpClient, extract_root: str | Path, refresh: bool = False
) -> dict[str, ResolvedTable]:
    extract_root = Path(extract_root)
    resolved = {}
    for role in TABLE_ROLES:
        table = variant.tables.get(role)
        if table is None:
            continue
        declared_folds(role, tuple(table.locations), table.options)  # a bad option fails before any download
        paths = tuple(resolve_location(loc, client, extract_root, refresh) for loc in table.locations)
        resolved[role] = ResolvedTable(role, table.format, table.locations, paths, dict(table.options))
    if "interactions" not in resolved:
        raise ValueError(f"source variant {variant.name!r} has no interactions table")
    return resolved


def load_dataset(
    resolved: Mapping[str, ResolvedTable], key_space: str = "native", keep_inactive: bool = False
) -> AssembledDataset:
    """Parse every resolved file and assemble the contract tables (parsing fails before any write)."""
    import pandas as pd

    frames = {}
    for role, table in resolved.items():
        # item_metadata is parsed with an items parser: it carries item side information.
        parser_role = "items" if role == "item_metadata" else role
        folds = declared_folds(role, table.locations, table.options)
        options = {k: v for k, v in table.options.items() if k != FOLDS_OPTION}
        parts = [parse_table(table.format, parser_role, path, options) for path in table.paths]
        if folds is not None:
            parts = [part.assign(fold=fold) for part, fold in zip(parts, folds, strict=True)]
        frames[role] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    items, titles_added = frames.get("items"), 0
    if "item_metadata" in frames:
        items, titles_added = enrich_items(items, frames["item_metadata"])
    assembled = assemble_dataset(
        frames["interactions"], items, frames.get("users"),
        key_space=key_space, keep_inactive=keep_inactive,
    )
    assembled.report["titles_from_item_metadata"] = titles_added
    return assembled
