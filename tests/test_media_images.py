"""Poster validation with Pillow: bombs, truncation, HTML-as-JPEG, RGB, size bound, dedupe."""

from __future__ import annotations

import io
import resource
import time

import pytest
from PIL import Image

from datasources.media import (
    ImageLimits,
    ImageRejected,
    ImageStore,
    contact_sheet,
    image_markdown,
    process_image,
)
from tests.test_media_helpers import HTML_ERROR_PAGE, bomb_png, jpeg_bytes, png_bytes


def test_small_rgb_jpeg_is_kept_byte_for_byte():
    data = jpeg_bytes((60, 90))
    image = process_image(data)
    assert image.data == data and not image.reencoded
    assert (image.width, image.height, image.source_format) == (60, 90, "JPEG")


def test_transparent_png_becomes_rgb_jpeg_on_white():
    image = process_image(png_bytes((40, 60), "RGBA", (0, 0, 255, 0)))
    assert image.reencoded
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.format == "JPEG" and decoded.mode == "RGB"
        r, g, b = decoded.getpixel((20, 30))
        assert min(r, g, b) > 240  # transparent → white, not black


def test_cmyk_jpeg_is_converted_to_rgb():
    image = process_image(jpeg_bytes((50, 75), mode="CMYK"))
    assert image.reencoded
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.mode == "RGB"


def test_large_image_is_bounded_to_max_side():
    image = process_image(jpeg_bytes((3000, 1500)), ImageLimits(max_side=1024))
    assert (image.width, image.height) == (1024, 512)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (1024, 512)


def test_truncated_jpeg_is_invalid():
    data = jpeg_bytes((120, 180), noise=True)
    with pytest.raises(ImageRejected) as info:
        process_image(data[: len(data) // 2])
    assert info.value.status == "invalid_image"
    assert "does not decode" in info.value.reason


def test_html_error_page_is_not_an_image():
    with pytest.raises(ImageRejected) as info:
        process_image(HTML_ERROR_PAGE)
    assert info.value.status == "invalid_image"
    assert info.value.reason == "not an image: body looks like HTML"


def test_decompression_bomb_header_is_refused_without_decoding():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ImageRejected) as info:
        process_image(bomb_png(20000, 20000))
    assert info.value.status == "too_large"
    assert time.perf_counter() - started < 0.5
    # Decoding would allocate 1.2 GB; the peak RSS must not have moved by anything like that.
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


def test_pixel_limit_below_pillows_own_threshold():
    with pytest.raises(ImageRejected) as info:
        process_image(bomb_png(8000, 6000), ImageLimits(max_pixels=40_000_000))
    assert info.value.status == "too_large" and "8000×6000" in info.value.reason


def test_byte_limit():
    with pytest.raises(ImageRejected) as info:
        process_image(jpeg_bytes((60, 90)), ImageLimits(max_bytes=100))
    assert info.value.status == "too_large"


def test_placeholder_pixel_is_refused():
    with pytest.raises(ImageRejected) as info:
        process_image(png_bytes((1, 1), "RGB", (0, 0, 0)))
    assert info.value.status == "invalid_image"


def test_store_is_content_addressed(tmp_path):
    store = ImageStore(tmp_path / "images")
    first = store.put(process_image(jpeg_bytes()))
    second = store.put(process_image(jpeg_bytes()))
    assert first == second and first.name.endswith(".jpg")
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 1
    assert first.parent.name == first.name[:2]


def test_contact_sheet_grid_and_markdown(tmp_path):
    store = ImageStore(tmp_path)
    paths = [store.put(process_image(jpeg_bytes(color=(i * 40, 10, 10)))) for i in range(5)]
    paths.append(tmp_path / "missing.jpg")  # unreadable files are skipped
    sheet = contact_sheet(paths, [f"#{i}" for i in range(6)], columns=4, tile=(30, 45))
    assert sheet is not None and sheet.size == (4 * 34 + 4, 2 * 49 + 4)
    markdown = image_markdown(sheet, "posters")
    assert markdown.startswith("![posters](data:image/png;base64,")
    assert contact_sheet([]) is None
