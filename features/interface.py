"""What an encoder is and how it runs, without importing torch or transformers.

The Dagster layer builds its ``encoder`` resource from :class:`EncoderSettings` and the feature
planner types against the protocols, so neither pays for the deep-learning imports until an
encoder is actually loaded (``features.encoders``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from features.images import ImageSource


@dataclass(frozen=True)
class EncoderInfo:
    """What produced a vector: recorded on every row so stale vectors are never reused."""

    model: str
    revision: str
    dim: int
    normalized: bool
    modalities: tuple[str, ...]
    device: str = "cpu"
    dtype: str = "fp32"
    max_text_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class TextEncoder(Protocol):
    info: EncoderInfo

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class ImageEncoder(Protocol):
    info: EncoderInfo

    def try_encode_images(self, images: Sequence[ImageSource]) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class EncoderSettings:
    """Machine-level knobs shared by every encoder of a run."""

    device: str = field(default="auto", metadata={"doc": "auto (cuda when available), cpu, cuda."})
    dtype: str = field(default="auto", metadata={"doc": "auto (bf16 autocast on CUDA, fp16 on "
                                                 "GPUs without bf16; fp32 on CPU), fp32, bf16, fp16."})
    batch_size: int | None = field(default=None, metadata={
        "doc": "Contents per encoder batch; default: by device."})
    num_workers: int | None = field(default=None, metadata={
        "doc": "Image decode processes; default: all cores on CUDA."})
    gpu_decode: bool = field(default=True, metadata={
        "doc": "nvJPEG decoding when torchvision and CUDA are present."})
    jpeg_draft: bool = field(default=False, metadata={
        "doc": "PIL DCT-domain downscaling: faster, not bit-exact CLIP preprocessing."})
    cache_dir: str | None = field(default=None, metadata={
        "doc": "Hugging Face cache; default HF_HOME's."})
    offline: bool | None = field(default=None, metadata={
        "doc": "Load from the cache only; default: HF_HUB_OFFLINE."})
    normalize: bool = True
