"""CLIP ViT-B/32 throughput of the features stage: images/s and texts/s against their ceilings.

Usage (from the repository root; no install needed, only torch/transformers/pillow/numpy)::

    python bench/clip_throughput.py                       # CPU, small counts (~1-2 min on 2 cores)
    python bench/clip_throughput.py --device cuda --images 20000 --texts 100000 --draft

Random weights with the real architecture (``CLIPConfig()`` defaults = ViT-B/32, nothing is
downloaded); posters are local 500x750 JPEGs generated in a temp dir. In one run it measures

* the two ceilings: the encoder alone on pre-made tensors (images and pre-tokenised texts, same
  batches as end to end), and the host's JPEG decode+resize rate on every core (a process pool
  running exactly the pipeline's PIL preprocessing, results discarded), plus the nvJPEG
  decode+resize rate alone when CUDA and torchvision are present;
* end to end through :class:`features.encoders.ClipEncoder`: files → vectors with the PIL worker
  path, optionally the PIL draft path (DCT-domain downscaling), the GPU nvJPEG path, and texts;

and prints measured / ceiling, where the ceiling of an end-to-end row is the slower of its stages.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

from features.encoders import ClipEncoder, _length_sorted_batches, autocast, pick_device  # noqa: E402
from features.images import (  # noqa: E402
    GpuJpegBatches,
    ImageSpec,
    default_workers,
    gpu_decode_available,
    normalize_batch,
    preprocess_pil,
)
from features.tiny_clip import save_random_clip  # noqa: E402

ROWS: list[dict] = []
FAILURES: list[str] = []
REPEATS = 1  # set from --repeats


def guard(section):
    """Run one measurement; a failure is reported and the other sections still run."""
    try:
        return section()
    except Exception:
        FAILURES.append(traceback.format_exc())
        print("  FAILED:\n" + traceback.format_exc(), flush=True)
        return None


def bound(*ceilings: float | None) -> float | None:
    """The ceiling of a pipeline is its slowest stage."""
    known = [c for c in ceilings if c]
    return min(known) if known else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def record(name: str, count: int, seconds: float, ceiling: float | None = None, note: str = "") -> float:
    rate = count / seconds if seconds > 0 else float("nan")
    ROWS.append({"name": name, "count": count, "seconds": round(seconds, 3), "per_second": round(rate, 1),
                 "ceiling": round(ceiling, 1) if ceiling else None,
                 "ratio": round(rate / ceiling, 3) if ceiling else None, "note": note})
    ratio = f"{rate / ceiling:6.1%} of {ceiling:10,.0f}" if ceiling else ""
    print(f"  {name:<44} {count:>8,} in {seconds:7.2f}s = {rate:10,.0f}/s  {ratio}  {note}", flush=True)
    return rate


# --------------------------------------------------------------------------- synthetic data


def make_words(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    weights = np.linspace(2.0, 0.2, len(letters))
    weights /= weights.sum()
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters, size=int(rng.integers(2, 10)), p=weights)))
    return sorted(words)


def make_texts(words: list[str], n: int, seed: int = 1) -> list[str]:
    """Plot-like sentences of 15-55 one-token words (OMDb plots are ~20-60 CLIP tokens)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(words)
    return [" ".join(rng.choice(vocab, size=int(rng.integers(15, 56)))) + "." for _ in range(n)]


def make_jpegs(directory: Path, n: int, width: int, height: int, unique: int = 64) -> list[Path]:
    """``n`` poster files cycling over ``unique`` distinct images (decode cost is per file)."""
    rng = np.random.default_rng(2)
    payloads = []
    for _ in range(min(unique, n)):
        low = rng.integers(0, 255, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        smooth = Image.fromarray(low).resize((width, height), Image.BICUBIC)
        noisy = np.asarray(smooth, dtype=np.int16) + rng.normal(0, 5, (height, width, 3)).astype(np.int16)
        buffer = io.BytesIO()  # ~80 KB at quality 85, like a 500x750 poster
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
        payloads.append(buffer.getvalue())
    paths = []
    for i in range(n):
        path = directory / f"poster_{i:06d}.jpg"
        path.write_bytes(payloads[i % len(payloads)])
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- ceilings


def best_seconds(run, device: torch.device) -> float:
    """Fastest of ``REPEATS`` timed runs (the CPU machines are shared: the best is the signal)."""
    best = float("inf")
    for _ in range(REPEATS):
        sync(device)
        started = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def _decode_only(args: tuple[str, ImageSpec]) -> int:
    path, spec = args
    return preprocess_pil(path, spec).shape[0]


def host_decode_ceiling(paths: list[Path], spec: ImageSpec, processes: int) -> float:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    work = [(str(p), spec) for p in paths]
    with ctx.Pool(processes) as pool:
        pool.map(_decode_only, work[: processes * 4], chunksize=1)  # warm up
        seconds = best_seconds(lambda: pool.map(_decode_only, work, chunksize=16), torch.device("cpu"))
    label = "draft" if spec.draft else "exact"
    return record(f"ceiling: host PIL decode+resize ({label}, {processes}p)", len(paths), seconds)


def gpu_decode_ceiling(paths: list[Path], spec: ImageSpec, batch: int, device: torch.device) -> float:
    list(GpuJpegBatches(paths[: batch * 2], spec, batch, device))  # warm up nvJPEG
    seconds = best_seconds(lambda: [None for _ in GpuJpegBatches(paths, spec, batch, device)], device)
    return record("ceiling: nvJPEG decode+resize alone", len(paths), seconds)


def image_tower_ceiling(encoder: ClipEncoder, batch: int, batches: int) -> float:
    device, spec = encoder.device, encoder.spec
    height, width = spec.output_hw
    pixels = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device)

    def run() -> None:
        for _ in range(batches):
            with autocast(device, encoder.dtype):
                out = encoder.model.get_image_features(pixel_values=normalize_batch(pixels, spec, device))
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
            torch.nn.functional.normalize(out.float(), dim=-1)

    with torch.inference_mode():
        with autocast(device, encoder.dtype):  # warm up
            encoder.model.get_image_features(pixel_values=normalize_batch(pixels, spec, device))
        seconds = best_seconds(run, device)
    return record(f"ceiling: image tower alone (batch {batch})", batch * batches, seconds)


def text_tower_ceiling(encoder: ClipEncoder, texts: list[str]) -> float:
    device = encoder.device
    batches = []
    for index in _length_sorted_batches(texts, encoder.batch_size):  # the same batches as end to end
        tokens = encoder.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                   max_length=encoder.max_text_tokens, return_tensors="pt")
        batches.append((tokens["input_ids"].to(device), tokens["attention_mask"].to(device)))
    lengths = [ids.shape[1] for ids, _ in batches]

    def run() -> None:
        for ids, mask in batches:
            with autocast(device, encoder.dtype):
                out = encoder.model.get_text_features(input_ids=ids, attention_mask=mask)
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
            torch.nn.functional.normalize(out.float(), dim=-1)

    with torch.inference_mode():
        with autocast(device, encoder.dtype):  # warm up
            encoder.model.get_text_features(input_ids=batches[0][0], attention_mask=batches[0][1])
        seconds = best_seconds(run, device)
    return record("ceiling: text tower alone (pre-tokenised)", len(texts), seconds,
                  note=f"tokens/text: mean padded {np.mean(lengths):.0f}")


# --------------------------------------------------------------------------- end to end


def end_to_end_images(encoder: ClipEncoder, paths: list[Path], name: str, ceiling: float | None) -> np.ndarray:
    encoder.encode_images(paths[: min(len(paths), 8)])  # warm up (kernels, autocast caches)
    vectors: list[np.ndarray] = []
    seconds = best_seconds(lambda: vectors.append(encoder.encode_images(paths)), encoder.device)
    record(name, len(paths), seconds, ceiling)
    return vectors[-1]


def end_to_end_texts(encoder: ClipEncoder, texts: list[str], ceiling: float | None) -> float:
    encoder.encode_texts(texts[: min(len(texts), 8)])  # warm up
    seconds = best_seconds(lambda: encoder.encode_texts(texts), encoder.device)
    return record("texts: tokenise + encode", len(texts), seconds, ceiling)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    parser.add_argument("--images", type=int, default=None, help="default: 20000 on CUDA, 48 on CPU")
    parser.add_argument("--texts", type=int, default=None, help="default: 100000 on CUDA, 96 on CPU")
    parser.add_argument("--decode-images", type=int, default=None,
                        help="images for the host decode ceiling (default: --images, at least 400)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1024 on CUDA, 32 on CPU")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: all cores)")
    parser.add_argument("--size", default="500x750", help="poster WIDTHxHEIGHT")
    parser.add_argument("--draft", action="store_true", help="also measure PIL draft-mode decoding")
    parser.add_argument("--no-gpu-decode", action="store_true")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement, best kept (default: 2 on CPU, 1 on CUDA)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser.parse_args(argv)


def environment(device: torch.device, cores: int) -> dict:
    """Versions and hardware, printed first and stored with the rows."""
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": __import__("transformers").__version__,
                "pillow": Image.__version__, "cores": cores, "device": str(device)}
    try:
        import torchvision

        versions["torchvision"] = torchvision.__version__
    except ImportError:
        versions["torchvision"] = None
    if device.type == "cuda":
        versions["gpu"] = torch.cuda.get_device_name(device)
    return versions


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    global REPEATS

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    n_images = args.images or (20000 if cuda else 48)
    n_texts = args.texts or (100000 if cuda else 96)
    REPEATS = args.repeats or (1 if cuda else 2)
    cores = default_workers()
    workers = args.workers or cores
    width, height = (int(v) for v in args.size.lower().split("x"))
    versions = environment(device, cores)
    print("environment:", json.dumps(versions), flush=True)
    begun = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="clip-bench-") as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        words = make_words(3000)
        model_dir = save_random_clip(tmp_path / "clip-vit-b32-random", words=words)
        encoder = ClipEncoder(local_dir=model_dir, device=device, dtype=args.dtype,
                              batch_size=args.batch_size, num_workers=workers, gpu_decode=False)
        print(f"model: ViT-B/32 random weights, {sum(p.numel() for p in encoder.model.parameters()) / 1e6:.0f}M "
              f"params, {encoder.info.dtype}, batch {encoder.batch_size}, {workers} decode workers "
              f"(setup {time.perf_counter() - started:.1f}s)", flush=True)
        started = time.perf_counter()
        image_dir = tmp_path / "posters"
        image_dir.mkdir()
        n_decode = args.decode_images or max(n_images, 400)
        paths = make_jpegs(image_dir, max(n_images, n_decode), width, height)
        texts = make_texts(words, n_texts)
        size_kb = np.mean([p.stat().st_size for p in paths[:64]]) / 1024
        print(f"data: {len(paths):,} JPEGs {width}x{height} (~{size_kb:.0f} KB), {n_texts:,} texts "
              f"({time.perf_counter() - started:.1f}s)", flush=True)
        measure(encoder, paths, texts, args, device, cores, n_images, n_decode)
        print(f"total {time.perf_counter() - begun:.0f}s, {len(FAILURES)} failed sections", flush=True)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": versions, "rows": ROWS, "failures": FAILURES}, indent=2))
    return 1 if FAILURES else 0


def measure(encoder, paths: list[Path], texts: list[str], args: argparse.Namespace,
            device: torch.device, cores: int, n_images: int, n_decode: int) -> None:
    """The ceilings (tower alone, decode alone), then end to end against them (into ROWS)."""
    print("ceilings:", flush=True)
    batch = encoder.batch_size
    spec = encoder.spec
    use_gpu_decode = device.type == "cuda" and not args.no_gpu_decode and gpu_decode_available(device)
    tower = guard(lambda: image_tower_ceiling(encoder, batch, max(2, min(20, n_images // batch))))
    text_tower = guard(lambda: text_tower_ceiling(encoder, texts))
    decode = guard(lambda: host_decode_ceiling(paths[:n_decode], spec, cores))
    decode_draft = guard(lambda: host_decode_ceiling(paths[:n_decode], spec.with_draft(True), cores)
                         ) if args.draft else None
    gpu_decode = guard(lambda: gpu_decode_ceiling(paths[:n_images], spec, batch, device)
                       ) if use_gpu_decode else None

    print("end to end (files or strings -> normalised vectors):", flush=True)
    pil_vectors = guard(lambda: end_to_end_images(encoder, paths[:n_images], "images: PIL workers",
                                                  bound(tower, decode)))
    if args.draft:
        encoder.spec = spec.with_draft(True)
        guard(lambda: end_to_end_images(encoder, paths[:n_images], "images: PIL workers, draft",
                                        bound(tower, decode_draft)))
        encoder.spec = spec
    if use_gpu_decode:
        encoder.gpu_decode = True
        gpu_vectors = guard(lambda: end_to_end_images(encoder, paths[:n_images], "images: nvJPEG on GPU",
                                                      bound(tower, gpu_decode)))
        encoder.gpu_decode = False
        if pil_vectors is not None and gpu_vectors is not None:
            k = min(1024, n_images)
            cosine = float(np.mean(np.sum(pil_vectors[:k] * gpu_vectors[:k], axis=1)))
            print(f"  agreement nvJPEG vs PIL vectors: mean cosine {cosine:.5f} over {k} images", flush=True)
            ROWS.append({"name": "agreement nvJPEG vs PIL (mean cosine)", "value": round(cosine, 6)})

    guard(lambda: end_to_end_texts(encoder, texts, text_tower))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    raise SystemExit(main())
