"""Stage 4 — features: CLIP image/text embeddings (and an offline sentence encoder) as vectors.

Pure Python + PyTorch + transformers; no Dagster and no DuckDB, so the benchmark runs on a GPU
machine with only torch/transformers/pillow/numpy/pyarrow installed.

* :mod:`features.interface` — :class:`EncoderSettings`, :class:`EncoderInfo`, the encoder protocols (no torch).
* :mod:`features.encoders` — :class:`ClipEncoder`, :class:`SentenceEncoder`, :func:`load_encoders`.
* :mod:`features.images` — PIL preprocessing in worker processes, nvJPEG decoding on the GPU.
* :mod:`features.feature_table` — what to encode, what to reuse, the ``clip_features`` table.
* :mod:`features.tiny_clip` — random-weight CLIP models for tests and benchmarks.
"""

import importlib

#: Public names and the module that defines them; imported on first use (PEP 562) so that
#: ``import features`` (and the Dagster code location) does not pay for torch/transformers.
_EXPORTS = {
    "DEFAULT_CLIP_MODEL": "features.encoders",
    "DEFAULT_CLIP_REVISION": "features.encoders",
    "ClipEncoder": "features.encoders",
    "SentenceEncoder": "features.encoders",
    "default_minilm_dir": "features.encoders",
    "load_encoders": "features.encoders",
    "EncoderInfo": "features.interface",
    "EncoderSettings": "features.interface",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'features' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
