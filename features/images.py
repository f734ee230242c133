"""Image loading and CLIP preprocessing, off the accelerator's critical path.

Over 400 lines: the CPU (PIL worker) and GPU (nvJPEG) decode paths must produce the same
pixels; they stay in one file so the shared preprocessing spec is read once, next to both.

Two ways to turn posters into model-ready pixels:

* **PIL on CPU workers** (always available): each worker process decodes a JPEG, converts it to
  RGB, resizes its shortest edge and centre-crops, exactly as transformers'
  ``CLIPImageProcessorPil`` does, and hands back ``uint8`` pixels (4x smaller than float32). The
  accelerator does the rescale + mean/std normalisation on the whole batch.
* **nvJPEG on the GPU** (only when torchvision is importable and CUDA is present): file bytes are
  read by threads, decoded in batches by ``torchvision.io.decode_jpeg(device="cuda")`` and resized
  with antialiased bicubic interpolation on the GPU, in a producer thread on its own CUDA stream
  so decoding overlaps the model.

Anything that cannot be decoded is reported in an ``ok`` mask, never silently replaced by zeros
downstream. This module imports only numpy, PIL and torch (torchvision lazily).
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# OpenAI CLIP's pixel statistics (the defaults of CLIPImageProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC
JPEG_MAGIC = b"\xff\xd8\xff"
RESIZE_CHUNK = 128  # images resized per GPU call

ImageSource = Image.Image | str | os.PathLike | bytes


@dataclass(frozen=True)
class ImageSpec:
    """What the vision tower expects: resize rule, crop, pixel statistics."""

    shortest_edge: int | None = 224  # resize so the shorter side has this length ...
    height: int | None = None  # ... or to exactly height x width when shortest_edge is None
    width: int | None = None
    crop_height: int = 224
    crop_width: int = 224
    do_center_crop: bool = True
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = BICUBIC
    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves at least the resize
    # target (PIL ``Image.draft``): 2-4x faster decoding, slightly different pixels.
    draft: bool = False

    @classmethod
    def from_processor(cls, processor: Any, draft: bool = False) -> ImageSpec:
        """Read the spec from a transformers CLIP image processor (PIL or torchvision flavour)."""
        size = _as_dict(getattr(processor, "size", None) or {"shortest_edge": 224})
        crop = _as_dict(getattr(processor, "crop_size", None) or {})
        do_crop = bool(getattr(processor, "do_center_crop", True)) and bool(crop)
        resample = getattr(processor, "resample", BICUBIC)
        return cls(
            shortest_edge=size.get("shortest_edge"),
            height=size.get("height"),
            width=size.get("width"),
            crop_height=int(crop.get("height", size.get("shortest_edge") or size.get("height"))),
            crop_width=int(crop.get("width", size.get("shortest_edge") or size.get("width"))),
            do_center_crop=do_crop,
            mean=tuple(float(x) for x in getattr(processor, "image_mean", CLIP_MEAN)),
            std=tuple(float(x) for x in getattr(processor, "image_std", CLIP_STD)),
            rescale_factor=float(getattr(processor, "rescale_factor", 1 / 255)),
            resample=int(resample) if isinstance(resample, int) else BICUBIC,
            draft=draft,
        )

    def with_draft(self, draft: bool) -> ImageSpec:
        return replace(self, draft=draft)

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.do_center_crop:
            return self.crop_height, self.crop_width
        if self.shortest_edge is not None:
            raise ValueError("without a centre crop a shortest-edge resize gives ragged batches")
        return int(self.height), int(self.width)

    def resize_hw(self, height: int, width: int) -> tuple[int, int]:
        """Target (height, width) of the resize step (transformers' rule, ``int`` truncation)."""
        if self.shortest_edge is None:
            return int(self.height), int(self.width)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


def _as_dict(size: Any) -> dict:
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    if isinstance(size, int):
        return {"shortest_edge": size}
    return dict(size)  # transformers' SizeDict iterates over its set fields


# --------------------------------------------------------------------------- PIL (CPU) path


def open_image(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes | bytearray | memoryview):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(source)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as transformers' ``convert_to_rgb``)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess_pil(source: ImageSource, spec: ImageSpec) -> np.ndarray:
    """Decode, resize and crop one image: ``(H, W, 3) uint8`` ready for :func:`normalize_batch`."""
    image = open_image(source)
    height, width = spec.resize_hw(image.height, image.width)
    if spec.draft and getattr(image, "format", None) == "JPEG":
        image.draft("RGB", (width, height))  # DCT-domain downscale, never below the target
    image = to_rgb(image)
    if (image.height, image.width) != (height, width):
        image = image.resize((width, height), resample=spec.resample)
    if spec.do_center_crop:
        top = (height - spec.crop_height) // 2
        left = (width - spec.crop_width) // 2
        # PIL pads with black outside the image, like transformers' centre crop on small images.
        image = image.crop((left, top, left + spec.crop_width, top + spec.crop_height))
    return np.array(image, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)


def _preprocess_or_blank(source: ImageSource, spec: ImageSpec) -> tuple[np.ndarray, bool]:
    try:
        return preprocess_pil(source, spec), True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        height, width = spec.output_hw
        return np.zeros((height, width, 3), dtype=np.uint8), False


class _PilDataset(torch.utils.data.Dataset):
    """Indexable view for DataLoader workers: one preprocessed image (+ ok flag) per index."""

    def __init__(self, sources: Sequence[ImageSource], spec: ImageSpec) -> None:
        self.sources = sources
        self.spec = spec

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[np.ndarray, bool]:
        return _preprocess_or_blank(self.sources[index], self.spec)


def _collate(items: list[tuple[np.ndarray, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.from_numpy(np.stack([pixels for pixels, _ in items]))
    ok = torch.tensor([flag for _, flag in items], dtype=torch.bool)
    return pixels, ok


def pil_batches(
    sources: Sequence[ImageSource],
    spec: ImageSpec,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
    chunk_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Yield ``(uint8 (B, H, W, 3), ok (B,))`` model batches, decoded by ``num_workers`` processes.

    Workers decode small chunks (not whole model batches), so that with a large batch size the
    last batches do not leave most workers idle; chunks are regrouped into model batches here.
    """
    n = len(sources)
    if n == 0:
        return
    if num_workers <= 0:
        for start in range(0, n, batch_size):
            pixels, ok = _collate([_preprocess_or_blank(s, spec) for s in sources[start : start + batch_size]])
            yield pixels, ok.numpy()
        return
    chunk = chunk_size or max(1, min(32, batch_size, -(-n // (num_workers * 4))))
    loader = torch.utils.data.DataLoader(
        _PilDataset(sources, spec),
        batch_size=chunk,
        shuffle=False,
        num_workers=min(num_workers, -(-n // chunk)),
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4,
        persistent_workers=False,
    )
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    filled = 0
    for pixels, ok in loader:
        parts.append((pixels, ok))
        filled += len(ok)
        while filled >= batch_size:
            batch, parts, filled = _take(parts, batch_size)
            yield batch
    if filled:
        batch, parts, filled = _take(parts, filled)
        yield batch


def _take(parts, size):
    """Split ``size`` rows off the front of a list of (pixels, ok) chunks."""
    taken, rest, count = [], [], 0
    for pixels, ok in parts:
        if count >= size:
            rest.append((pixels, ok))
            continue
        need = size - count
        taken.append((pixels[:need], ok[:need]))
        if len(ok) > need:
            rest.append((pixels[need:], ok[need:]))
        count += min(need, len(ok))
    pixels = taken[0][0] if len(taken) == 1 else torch.cat([p for p, _ in taken])
    ok = torch.cat([o for _, o in taken]).numpy()
    return (pixels, ok), rest, sum(len(o) for _, o in rest)


def normalize_batch(pixels: torch.Tensor, spec: ImageSpec, device: torch.device) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` or ``(B, 3, H, W)`` → normalised ``float32 (B, 3, H, W)`` on ``device``."""
    pixels = pixels.to(device, non_blocking=True)
    if pixels.shape[-1] == 3 and pixels.shape[1] != 3:
        pixels = pixels.permute(0, 3, 1, 2)
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() * spec.rescale_factor - mean) / std


# --------------------------------------------------------------------------- nvJPEG (GPU) path


def gpu_decode_available(device: torch.device) -> bool:
    """nvJPEG decoding needs CUDA and torchvision; neither is required by the project."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import torchvision.io  # noqa: F401
    except Exception:
        return False
    return True


def read_source_bytes(source: ImageSource) -> bytes | Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    with open(source, "rb") as handle:
        return handle.read()


def _gpu_resize_crop(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """``uint8 (B, 3, h, w)`` on the GPU → resized, cropped ``uint8 (B, 3, H, W)``.

    PyTorch's antialiased bicubic uses PIL's kernel (a = -0.5), so the pixels stay close to the
    CPU path; rounding back to uint8 mimics PIL too.
    """
    height, width = spec.resize_hw(images.shape[-2], images.shape[-1])
    out = images
    if (height, width) != tuple(images.shape[-2:]):
        out = torch.nn.functional.interpolate(
            images.float(), size=(height, width), mode="bicubic", antialias=True, align_corners=False
        )
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    if spec.do_center_crop:
        top = (height - spec.crop_height) // 2
        left = (width - spec.crop_width) // 2
        if top < 0 or left < 0:
            pad = (max(0, -left), max(0, -left), max(0, -top), max(0, -top))
            out = torch.nn.functional.pad(out, pad)
            top, left = max(0, top), max(0, left)
        out = out[..., top : top + spec.crop_height, left : left + spec.crop_width]
    return out


JpegDecoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def nvjpeg_decoder(device: torch.device) -> JpegDecoder:
    """torchvision's fused batch decode on ``device`` (RGB ``(3, H, W) uint8`` per image)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return decode


class GpuJpegBatches:
    """Iterate ``(uint8 (B, 3, H, W) on the device, ok (B,))`` batches decoded by nvJPEG.

    A producer thread reads bytes (through a small thread pool, a few batches ahead), decodes a
    batch with one fused ``decode_jpeg`` call, resizes per distinct input shape, and queues the
    result with a CUDA event; the consumer waits on the event, not on the whole device. Images
    nvJPEG rejects (PNG, CMYK, corrupt) fall back to the PIL path one by one. ``decoder`` is
    injectable (tests run the whole pipeline on CPU with a PIL-backed decoder).
    """

    def __init__(
        self,
        sources: Sequence[ImageSource],
        spec: ImageSpec,
        batch_size: int,
        device: torch.device,
        read_threads: int = 8,
        prefetch_batches: int = 2,
        decoder: JpegDecoder | None = None,
    ) -> None:
        self.sources = sources
        self.spec = spec
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.read_threads = read_threads
        self.prefetch_batches = prefetch_batches
        self.decoder = decoder
        self.cuda = self.device.type == "cuda"

    def __iter__(self) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        results: queue.Queue = queue.Queue(maxsize=self.prefetch_batches)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(results, stop), daemon=True)
        producer.start()
        try:
            while True:
                item = results.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                pixels, ok, ready = item
                if ready is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(ready)
                    pixels.record_stream(stream)
                yield pixels, ok
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    results.get_nowait()
                except queue.Empty:
                    producer.join(timeout=0.05)

    def _produce(self, results: queue.Queue, stop: threading.Event) -> None:
        try:
            decoder = self.decoder or nvjpeg_decoder(self.device)
            stream = torch.cuda.Stream(self.device) if self.cuda else None
            n, size = len(self.sources), self.batch_size
            starts = list(range(0, n, size))
            on_stream = torch.cuda.stream(stream) if self.cuda else contextlib.nullcontext()
            with ThreadPoolExecutor(self.read_threads) as pool, on_stream:
                pending: dict[int, list[Future]] = {}

                def submit(k: int) -> None:
                    if k < len(starts) and k not in pending:
                        chunk = self.sources[starts[k] : starts[k] + size]
                        pending[k] = [pool.submit(read_source_bytes, s) for s in chunk]

                for k in range(self.prefetch_batches + 1):
                    submit(k)
                for k in range(len(starts)):
                    if stop.is_set():
                        return
                    submit(k + self.prefetch_batches + 1)
                    raw = [f.result() for f in pending.pop(k)]
                    ready = None
                    if stream is not None:
                        # torchvision#9606: the decoder may be handed a freed block that kernels
                        # still queued on this stream read; drain the stream before each decode.
                        stream.synchronize()
                    pixels, ok = self._decode_batch(raw, decoder)
                    if stream is not None:
                        ready = torch.cuda.Event()
                        ready.record(stream)
                    results.put((pixels, ok, ready))
            results.put(None)
        except BaseException as exc:  # hand the error to the consumer thread
            results.put(exc)

    def _decode_batch(self, raw: list, decoder: JpegDecoder) -> tuple[torch.Tensor, np.ndarray]:
        height, width = self.spec.output_hw
        out = torch.empty((len(raw), 3, height, width), dtype=torch.uint8, device=self.device)
        ok = np.ones(len(raw), dtype=bool)
        jpeg = [i for i, r in enumerate(raw) if isinstance(r, bytes) and r[:3] == JPEG_MAGIC]
        decoded: dict[int, torch.Tensor] = {}
        if jpeg:
            data = [torch.frombuffer(bytearray(raw[i]), dtype=torch.uint8) for i in jpeg]
            try:
                decoded = dict(zip(jpeg, decoder(data), strict=True))
            except RuntimeError:  # one bad image fails the whole fused call: retry one by one
                for i, tensor in zip(jpeg, data, strict=True):
                    with contextlib.suppress(RuntimeError):
                        decoded[i] = decoder([tensor])[0]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in decoded.items():
            groups[tuple(image.shape[-2:])].append(i)
        for index in groups.values():
            for start in range(0, len(index), RESIZE_CHUNK):  # bounds the float32 full-size copy
                part = index[start : start + RESIZE_CHUNK]
                resized = _gpu_resize_crop(torch.stack([decoded[i] for i in part]), self.spec)
                out[torch.tensor(part, device=self.device)] = resized
        for i in range(len(raw)):
            if i not in decoded:  # not a JPEG nvJPEG can read: PIL on this thread
                pixels, ok[i] = _preprocess_or_blank(raw[i], self.spec)
                out[i] = torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)
        return out, ok


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def is_path_like(source: Any) -> bool:
    return isinstance(source, str | os.PathLike | Path)
