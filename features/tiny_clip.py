"""Random-weight CLIP models saved like real ones, for tests and benchmarks (no download).

The tokenizer is byte-level BPE like CLIP's: the 256 byte symbols, each also with ``</w>``, the
two special tokens, and merges learnt on an optional word list so that each word is one token
(benchmark texts then tokenize to realistic lengths). Weights are random; the architecture is real:
``CLIPConfig()`` defaults are exactly ViT-B/32.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 77}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "image_size": 32, "patch_size": 8}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def byte_level_vocab(words: Iterable[str] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges: every byte symbol (alone and word-final), plus BPE merges learnt
    on ``words`` (with the ``tokenizers`` trainer) so that each of them becomes one token."""
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(symbol, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in _learn_merges(list(words))]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def _learn_merges(words: list[str]) -> list:
    if not words:
        return []
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token=EOS))
    # CLIP's normalisation and pre-tokenisation (as in transformers' CLIPTokenizer).
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  end_of_word_suffix="</w>")
    tokenizer.train_from_iterator(words, trainer)
    return json.loads(tokenizer.to_str())["model"]["merges"]


def make_tokenizer(words: Iterable[str] = (), workdir: Path | None = None) -> Any:
    """A ``CLIPTokenizer`` over :func:`byte_level_vocab` (transformers 5, or 4.x via files)."""
    from transformers import CLIPTokenizer

    vocab, merges = byte_level_vocab(words)
    try:
        return CLIPTokenizer(vocab=vocab, merges=merges)
    except TypeError:  # transformers 4.x takes files
        if workdir is None:
            raise
        from transformers import CLIPTokenizerFast

        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "vocab.json").write_text(json.dumps(vocab))
        (workdir / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        return CLIPTokenizerFast(vocab_file=str(workdir / "vocab.json"),
                                 merges_file=str(workdir / "merges.txt"))


def save_random_clip(
    directory: str | Path,
    *,
    text_config: dict | None = None,
    vision_config: dict | None = None,
    projection_dim: int = 512,
    words: Iterable[str] = (),
    seed: int = 0,
) -> Path:
    """Build a random CLIP + processor and ``save_pretrained`` both into ``directory``.

    With no configs this is ViT-B/32 (``CLIPConfig()`` defaults); pass :data:`TINY_TEXT` /
    :data:`TINY_VISION` for a model that loads in milliseconds.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    directory = Path(directory)
    tokenizer = make_tokenizer(words, directory / "_tokenizer_src")
    vocab_size = len(tokenizer)
    text = {**(text_config or {}), "vocab_size": vocab_size,
            "bos_token_id": tokenizer.convert_tokens_to_ids(BOS),
            "eos_token_id": tokenizer.convert_tokens_to_ids(EOS),
            "pad_token_id": tokenizer.convert_tokens_to_ids(EOS)}
    vision = dict(vision_config or {})
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    image_size = config.vision_config.image_size
    processor = CLIPProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
