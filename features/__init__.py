"""Stage 4 — features: CLIP image/text embeddings (and an offline sentence encoder) as vectors.

Pure Python + PyTorch + transformers; no Dagster and no DuckDB, so the benchmark runs on a GPU
machine with only torch/transformers/pillow/numpy/pyarrow installed.

* :mod:`features.encoders` — :class:`ClipEncoder`, :class:`SentenceEncoder`, :func:`load_encoders`.
* :mod:`features.images` — PIL preprocessing in worker processes, nvJPEG decoding on the GPU.
* :mod:`features.encode` — what to encode, what to reuse, the ``clip_features`` table.
* :mod:`features.synthetic` — random-weight CLIP models for tests and benchmarks.
"""

from features.encoders import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_REVISION,
    ClipEncoder,
    EncoderInfo,
    EncoderSettings,
    SentenceEncoder,
    default_minilm_dir,
    load_encoders,
)

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_CLIP_REVISION",
    "ClipEncoder",
    "EncoderInfo",
    "EncoderSettings",
    "SentenceEncoder",
    "default_minilm_dir",
    "load_encoders",
]
