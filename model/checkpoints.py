"""Checkpoints: one safetensors file of tensors with JSON metadata, written atomically.

``last.safetensors`` holds the model, Adam's state and the RNG states as tensors and the
settings and loop state as JSON metadata (a resume continues exactly); ``best.safetensors``
holds the weights of the best validation epoch. :func:`load_model` rebuilds a model from
either, for inference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import TrainSettings
from model.data import RecData
from model.recommenders import Recommender, build_model
from warehouse.files import atomic_path

CHECKPOINT_FORMAT = "kg4rec-checkpoint-1"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return device


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata=metadata)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata with JSON values decoded) of a safetensors checkpoint."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        meta = handle.metadata() or {}
    return tensors, {k: json.loads(v) for k, v in meta.items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       param_groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def load_model(path: str | Path, data: RecData, device: str = "auto") -> Recommender:
    """Rebuild a model from ``best.safetensors``/``last.safetensors`` for inference."""
    tensors, meta = load_checkpoint(Path(path))
    settings = TrainSettings.from_dict(meta["settings"])
    dev = pick_device(device)
    model = build_model(settings.model_config(), data.to(dev)).to(dev)
    model.load_state_dict(model_tensors(tensors))
    model.refresh_attention()
    return model
