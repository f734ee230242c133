"""Poster validation, normalisation, the content-addressed image store and the contact sheet.

Everything downloaded as a "poster" is hostile until Pillow has decoded all of it: CDNs answer
missing images with HTML error pages labelled ``image/jpeg``, connections die mid-file, and a
few hundred bytes of PNG can claim 20000×20000 pixels (1.2 GB once decoded). So
:func:`process_image`

* refuses bodies over ``max_bytes`` before parsing anything;
* opens with an allow-list of formats (Pillow would otherwise also try EPS, which runs
  Ghostscript, and other plugins no poster uses);
* checks the *header's* pixel count against ``max_pixels`` before decoding, so a bomb is
  rejected without allocating its pixels; Pillow's own ``DecompressionBombError`` (and the
  warning, should a caller turn warnings into errors) are mapped to ``too_large`` as well;
* decodes the whole image (``load()``), so truncated and corrupt files are caught here and not
  in the CLIP stage;
* converts to RGB (flattening transparency onto white) and bounds the longest side, re-encoding
  as JPEG only when something had to change: an RGB JPEG that is small enough is stored
  byte-for-byte, which is lossless and spares an encode.

The stored bytes are addressed by their sha256 (:class:`ImageStore`), so two items whose posters
are the same picture share one file, and a file's name proves its content.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from datasources.media.types import INVALID_IMAGE, TOO_LARGE
from warehouse.files import atomic_write_bytes

__all__ = [
    "ALLOWED_FORMATS",
    "ImageLimits",
    "ImageRejected",
    "ImageStore",
    "ProcessedImage",
    "contact_sheet",
    "image_markdown",
    "process_image",
]

#: Formats posters and covers come in. Anything else is refused without trying other plugins.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageLimits:
    """Bounds applied to every downloaded image (defaults suit posters and book covers)."""

    max_bytes: int = field(default=10_000_000, metadata={"doc": "Largest accepted body (bytes)."})
    # Well below Pillow's own warning threshold (~89.5 Mpx): a poster is < 10 Mpx, and every
    # accepted image is decoded in full, so this also bounds a worker's memory (~120 MB RGB).
    max_pixels: int = field(default=40_000_000, metadata={
        "doc": "Largest accepted width × height (decompression-bomb guard)."})
    max_side: int = field(default=1024, metadata={"doc": "Longest side of a stored poster (px)."})
    min_side: int = field(default=16, metadata={
        "doc": "Smaller images are rejected (spacer GIFs and tracking pixels are not posters)."})
    jpeg_quality: int = field(default=90, metadata={"doc": "JPEG quality of stored posters."})

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_pixels, self.max_side, self.min_side) < 1:
            raise ValueError("image limits must be positive")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError("jpeg_quality must be in 1..95 (Pillow's useful range)")


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; ``status`` is ``too_large`` or ``invalid_image``."""

    def __init__(self, status: str, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclass(frozen=True)
class ProcessedImage:
    """A validated image ready to store: JPEG bytes of an RGB picture and what it looks like."""

    data: bytes
    sha256: str
    width: int
    height: int
    source_format: str
    reencoded: bool


def _sniff(data: bytes) -> str:
    """A short, content-free guess at what a non-image body is (never echoes the bytes)."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "body looks like HTML"
    if head.startswith((b"{", b"[")):
        return "body looks like JSON"
    if head.startswith(b"<?xml") or head.startswith(b"<svg"):
        return "body looks like XML/SVG"
    if not data:
        return "empty body"
    return "unrecognised image format"


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white (black would be CLIP's 'night' prior)."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def process_image(data: bytes, limits: ImageLimits | None = None) -> ProcessedImage:
    """Validate ``data`` and return it as a bounded RGB JPEG; raise :class:`ImageRejected`."""
    limits = limits or ImageLimits()
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            TOO_LARGE, f"{len(data):,} bytes exceeds the {limits.max_bytes:,}-byte limit"
        )
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected(INVALID_IMAGE, f"not an image: {_sniff(data)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(TOO_LARGE, _bomb_reason(exc, limits)) from None
    except Exception as exc:  # Pillow raises a zoo of types on hostile headers
        raise ImageRejected(INVALID_IMAGE, f"unreadable header: {_short(exc)}") from None
    with image:
        width, height = image.size
        source_format = image.format or "unknown"
        if width * height > limits.max_pixels:
            raise ImageRejected(
                TOO_LARGE,
                f"{width}×{height} px exceeds the {limits.max_pixels:,}-pixel limit",
            )
        if min(width, height) < limits.min_side:
            raise ImageRejected(
                INVALID_IMAGE, f"{width}×{height} px is a placeholder, not a poster"
            )
        oriented = _orientation(image) not in (None, 1)  # EXIF sits in the header
        keep_bytes = (
            source_format == "JPEG"
            and image.mode == "RGB"
            and max(width, height) <= limits.max_side
            and not oriented
        )
        try:
            if keep_bytes:
                # The original bytes are what gets stored, so its pixels are never used: decoding
                # at 1/8 DCT scale still entropy-decodes every block (truncation and corruption
                # fail exactly as at full size) for about a third less work.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            elif source_format == "JPEG" and max(width, height) > 2 * limits.max_side:
                # Big JPEGs: decode at the smallest DCT scale that still covers max_side.
                scale = limits.max_side / max(width, height)
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(TOO_LARGE, _bomb_reason(exc, limits)) from None
        except Exception as exc:  # truncated/corrupt data: OSError, SyntaxError, EOFError, ...
            raise ImageRejected(
                INVALID_IMAGE, f"{source_format} does not decode: {_short(exc)}"
            ) from None
        if keep_bytes:
            return ProcessedImage(data, _sha256(data), width, height, source_format, False)
        picture = ImageOps.exif_transpose(image) if oriented else image
        picture = _flatten_to_rgb(picture)
        if max(picture.size) > limits.max_side:
            picture.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=limits.jpeg_quality)
        encoded = buffer.getvalue()
        return ProcessedImage(
            encoded, _sha256(encoded), picture.width, picture.height, source_format, True
        )


def _bomb_reason(exc: BaseException, limits: ImageLimits) -> str:
    """Pillow refused at open (its own limit is 2× ~89.5 Mpx); say so in our terms."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{int(match.group(1)):,} px" if match else "too many pixels"
    return f"decompression bomb: header claims {claimed} (limit {limits.max_pixels:,} px)"


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block is not worth rejecting a poster for
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    """Content-addressed files: ``<root>/<sha[:2]>/<sha>.jpg``, written atomically, once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.jpg"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put(self, image: ProcessedImage) -> Path:
        """Store ``image`` unless an identical file is already there; return its path."""
        target = self.path_for(image.sha256)
        if target.is_file() and target.stat().st_size == len(image.data):
            return target
        # two threads storing the same poster both end up correct; not fsynced: a file cut
        # short by a power loss fails the size check above and is stored again
        return atomic_write_bytes(target, image.data, durable=False)


def contact_sheet(
    paths: Sequence[str | Path],
    labels: Sequence[str] | None = None,
    *,
    columns: int = 4,
    tile: tuple[int, int] = (120, 180),
) -> Image.Image | None:
    """A grid of posters (2:3 tiles, letterboxed), each labelled; ``None`` when there are none.

    Meant for a glance in the Dagster UI: do the stored files look like posters at all?
    Unreadable files are skipped rather than failing the materialization's metadata.
    """
    tiles: list[tuple[Image.Image, str]] = []
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                thumb = ImageOps.pad(im.convert("RGB"), tile, color=(32, 32, 32))
        except Exception:
            continue
        tiles.append((thumb, labels[index] if labels is not None else ""))
    if not tiles:
        return None
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    gap = 4
    sheet = Image.new(
        "RGB",
        (columns * (tile[0] + gap) + gap, rows * (tile[1] + gap) + gap),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for k, (thumb, label) in enumerate(tiles):
        x = gap + (k % columns) * (tile[0] + gap)
        y = gap + (k // columns) * (tile[1] + gap)
        sheet.paste(thumb, (x, y))
        if label:
            draw.rectangle((x, y, x + tile[0] - 1, y + 13), fill=(0, 0, 0))
            draw.text((x + 3, y + 1), label[:22], fill=(255, 255, 255))
    return sheet


def image_markdown(image: Image.Image, alt: str) -> str:
    """Markdown embedding ``image`` as a base64 PNG (Dagster metadata has no image type)."""
    buffer = io.BytesIO()
    # An adaptive palette keeps the embedded sheet small (~4× smaller than RGB PNG).
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=255).save(
        buffer, format="PNG", optimize=True
    )
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"
