"""A dataset's own media files: item texts from any column, images from paths, URLs or a folder.

What a user brings is keyed by the dataset's own ``item_key`` (not by a MovieLens id), so these
need no matching step:

* **descriptions** — a table file (CSV/TSV/Parquet/JSON lines, :mod:`datasources.columns`) with
  an item column and a text column: ``{location, item_col: item, text_col: text}``;
* **images** — a table file with an item column and an image column whose values are URLs
  (``http(s)://``, ``file://``) or paths, relative ones taken from the list file's folder:
  ``{location, item_col: item, image_col: image}``;
* **an image folder** — ``<item_key>.<ext>`` files (jpg, jpeg, png, webp, gif, bmp).

Every image still goes through the collector's validation (Pillow decode, size limits) and the
content-addressed store, exactly like a downloaded poster; a local file is read even offline.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

from datasources.columns import READER_OPTIONS, column, read_columns, require_values
from datasources.dataset_files import DESCRIPTION_KEYS, IMAGE_KEYS
from datasources.errors import MalformedInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
assert READER_OPTIONS <= DESCRIPTION_KEYS & IMAGE_KEYS  # the reader's options are in both


def _item_values(spec: Mapping[str, str], what: str, allowed: frozenset[str],
                 value_option: str) -> tuple[Path, dict[str, str]]:
    """``item_key → value`` of one section's file: its keys checked, one row per item, rows
    without a value left out."""
    for key in spec:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{what}: unknown key {key!r}{hint}; allowed: {', '.join(sorted(allowed))}")
    if "location" not in spec:
        raise ValueError(f"{what}: give the file as 'location'")
    path = Path(spec["location"])
    frame = read_columns(path, spec)
    item = column(frame, path, "item_col", spec.get("item_col", "item"))
    value = column(frame, path, value_option, spec.get(value_option, value_option.removesuffix("_col")))
    require_values(frame, path, [item])
    _no_repeated_keys(frame, item, path)
    kept = frame[frame[value].notna()]
    return path, dict(zip(kept[item].astype(str), kept[value], strict=True))


def read_descriptions(spec: Mapping[str, str]) -> dict[str, str]:
    """``item_key → text`` from the ``descriptions`` section (whitespace collapsed)."""
    _, texts = _item_values(spec, "descriptions", DESCRIPTION_KEYS, "text_col")
    return {key: " ".join(text.split()) for key, text in texts.items()}


def read_image_list(spec: Mapping[str, str]) -> dict[str, str]:
    """``item_key → URL or absolute path`` from the ``images`` section."""
    path, images = _item_values(spec, "images", IMAGE_KEYS, "image_col")
    return {key: _image_location(value, path.parent) for key, value in images.items()}


def scan_image_folder(folder: str | Path) -> dict[str, str]:
    """``item_key → absolute path`` for every ``<item_key>.<ext>`` image file of ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    found: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise ValueError(f"{folder}: item {path.stem!r} has two images: "
                                 f"{Path(found[path.stem]).name} and {path.name}")
            found[path.stem] = str(path.resolve())
    return found


def _image_location(value: str, base: Path) -> str:
    if "://" in value:
        return value
    return str((base / value).resolve(strict=False))


def _no_repeated_keys(frame, item: str, path: Path) -> None:
    repeated = frame[item].duplicated()
    if repeated.any():
        first = frame.index[repeated.to_numpy()][0]
        raise MalformedInputError(path, int(frame.loc[first, "line"]),
                                  f"item {frame.loc[first, item]!r} is listed twice")
