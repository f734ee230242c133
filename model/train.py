"""Training: BPR (+ TransR) with Adam, early stopping on validation Recall@20, resumable.

Reads top to bottom like nanoGPT's train.py: settings → device and seeds → model and
optimizer → resume → epochs (sample, batches, KG loss, attention refresh, evaluate, checkpoint)
→ best weights → test. :func:`train` is the whole thing; everything above it is a helper.

Checkpoints (``out_dir``), each written to a temporary file and renamed into place:
* ``last.safetensors`` — model, Adam state and RNG states as tensors; the settings and the loop
  state (epoch, early-stopping state, history) as JSON in the safetensors metadata. Resuming
  from it continues exactly where the interrupted run stopped (same result as no interruption).
* ``best.safetensors`` — the weights of the best validation epoch (+ settings metadata).
* ``config.json`` — the settings, the data summary and, once finished, the result.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import FUSION_VARIANTS, TrainSettings
from model.data import RecData
from model.evaluate import evaluate, evaluate_slices
from model.recommenders import Recommender, build_model
from warehouse.files import atomic_path, atomic_write_json

CHECKPOINT_FORMAT = "kg4rec-checkpoint-1"


@dataclass
class TrainResult:
    settings: dict[str, Any]
    config_hash: str
    device: str
    best_epoch: int
    best_valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]]
    seconds_per_epoch: float
    eval_seconds: float
    total_seconds: float
    epochs_run: int
    stopped: str  # "patience", "epochs", "time"
    resumed_from_epoch: int
    n_parameters: int
    checkpoint_path: str
    notes: list[str] = field(default_factory=list)
    # split → slice ("all", "items:head", "items:tail", "users:q1".."q4") → metrics
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return device


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 / AMX, through oneDNN)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def uses_bf16(precision: str, device: torch.device, variant: str = "full") -> bool:
    """Whether training autocasts to bf16 (fp32 master weights and optimizer either way).

    "auto": on CUDA with bf16; on a CPU with native bf16 for the variants with a fusion
    transformer, where it was validated (docs/MODEL.md: the validation curves of fp32 and bf16
    agree to 0.001 on ml-100k) and where the matmuls are the cost; "bf16": wherever possible."""
    if precision == "fp32":
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if precision == "bf16":
        if not cpu_has_bf16():
            raise RuntimeError("precision 'bf16' asked for, but this CPU has no native bf16")
        return True
    return variant in FUSION_VARIANTS and cpu_has_bf16()


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def is_member(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """Vectorised ``keys ∈ sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    at = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[at] == keys


def sample_negatives(users: torch.Tensor, n_items: int, positive_keys: torch.Tensor,
                     generator: torch.Generator, rounds: int = 20,
                     pool: torch.Tensor | None = None) -> torch.Tensor:
    """One uniformly drawn item per user that is not among the user's train items.

    Rejection sampling, vectorised: redraw only the collisions (positive_keys = sorted
    ``user * n_items + item`` of the train pairs). ``pool``: draw from these item ids only."""

    def draw(shape) -> torch.Tensor:
        if pool is None:
            return torch.randint(n_items, shape, generator=generator, device=users.device)
        return pool[torch.randint(pool.numel(), shape, generator=generator, device=users.device)]

    neg = draw(users.shape)
    for _ in range(rounds):
        bad = is_member(users * n_items + neg, positive_keys)
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        neg[bad] = draw((n_bad,))
    return neg


def kg_training_triples(data: RecData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KG triples and their inverses, relation ids as in :func:`model.data.collaborative_edges`."""
    R = data.n_relations
    head = torch.cat([data.kg_head, data.kg_tail])
    relation = torch.cat([data.kg_relation + 2, data.kg_relation + 2 + R])
    tail = torch.cat([data.kg_tail, data.kg_head])
    return head, relation, tail


def sample_corrupt_tails(head, relation, n_entities: int, true_keys: torch.Tensor,
                         n_rel: int, generator: torch.Generator, rounds: int = 10):
    """t′ uniform over entities with (h, r, t′) not a true triple (vectorised rejection)."""
    tail = torch.randint(n_entities, head.shape, generator=generator, device=head.device)
    base = (head * n_rel + relation) * n_entities
    for _ in range(rounds):
        bad = is_member(base + tail, true_keys)
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        tail[bad] = torch.randint(n_entities, (n_bad,), generator=generator, device=head.device)
    return tail


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


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       param_groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def load_model(path: str | Path, data: RecData, device: str = "auto") -> Recommender:
    """Rebuild a model from ``best.safetensors``/``last.safetensors`` for inference."""
    tensors, meta = load_checkpoint(Path(path))
    settings = TrainSettings.from_dict(meta["settings"])
    dev = pick_device(device)
    model = build_model(settings.model_config(), data.to(dev)).to(dev)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    model.refresh()
    return model


# --------------------------------------------------------------------------- the loop


def train(
    settings: TrainSettings,
    data: RecData,
    out_dir: str | Path,
    *,
    resume: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``settings.variant`` on ``data``; checkpoints in ``out_dir``; returns the result."""
    out_dir = Path(out_dir)
    started = time.perf_counter()

    # -- device, seeds, data
    device = pick_device(settings.device)
    seed_everything(settings.seed, settings.deterministic)
    if device.type == "cpu":  # denormal gradients of tiny embeddings slow CPU kernels ~10x
        torch.set_flush_denormal(True)
    data = data.to(device)
    use_bf16 = uses_bf16(settings.precision, device, settings.variant)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    # -- model, optimizer, sampler state
    model = build_model(settings.model_config(), data).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sampler = torch.Generator(device=device).manual_seed(settings.seed)
    n_parameters = sum(p.numel() for p in model.parameters())
    positive_keys = torch.sort(data.train_user * data.n_items + data.train_item).values
    # "train": the catalogue known at training time; items without a train pair (cold items)
    # are then never pushed down as negatives before anyone has seen them
    negative_pool = torch.unique(data.train_item) if settings.negative_items == "train" else None
    use_kg = model.uses_kg and settings.kg_loss != "none" and data.kg_head.numel() > 0
    if use_kg:
        kg_head, kg_rel, kg_tail = kg_training_triples(data)
        n_rel_all = 2 + 2 * data.n_relations
        kg_true = torch.sort((kg_head * n_rel_all + kg_rel) * data.n_entities + kg_tail).values
    notes = [*data.notes, *model.notes]
    for note in notes:
        log(f"note: {note}")

    # -- resume
    state: dict[str, Any] = {"epoch": 0, "best_epoch": -1, "best_score": -math.inf,
                             "bad_evals": 0, "history": [], "train_seconds": 0.0,
                             "eval_seconds": [], "stopped": "", "resumed_from_epoch": 0}
    last_path, best_path = out_dir / "last.safetensors", out_dir / "best.safetensors"
    if resume and last_path.is_file():
        tensors, meta = load_checkpoint(last_path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{last_path}: not a {CHECKPOINT_FORMAT} checkpoint")
        if TrainSettings.from_dict(meta["settings"]).config_hash() != settings.config_hash():
            raise ValueError(f"{last_path} was written with other settings; use another out_dir")
        if not meta["state"].get("stopped"):
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            _restore_optimizer(optimizer, tensors, meta["param_groups"])
            torch.set_rng_state(tensors["rng.cpu"])
            if device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"], device)
            sampler.set_state(tensors["rng.sampler"])
            log(f"resumed from {last_path} at epoch {meta['state']['epoch']}")
        else:  # finished: no more epochs; the best weights are evaluated below
            log(f"{last_path}: finished run ({meta['state']['stopped']}), evaluating its best epoch")
        state = meta["state"]
        state["resumed_from_epoch"] = state["epoch"]
    atomic_write_json(out_dir / "config.json", {"settings": settings.to_dict(), "config_hash": settings.config_hash(),
                       "data": data.summary(), "notes": notes}, indent=2, sort_keys=True, default=str)

    def save_last() -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt_tensors, groups = _optimizer_tensors(optimizer)
        tensors |= opt_tensors
        tensors["rng.cpu"] = torch.get_rng_state()
        tensors["rng.sampler"] = sampler.get_state()
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        meta = {"format": CHECKPOINT_FORMAT, "settings": settings.to_dict(), "state": state,
                "param_groups": groups}
        atomic_save(tensors, last_path, {k: json.dumps(v, default=str) for k, v in meta.items()})

    # -- epochs
    model.refresh()
    n_train = data.train_user.numel()
    n_batches = max(1, math.ceil(n_train / settings.batch_size))
    epoch = state["epoch"]
    while epoch < settings.epochs and not state["stopped"]:
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n_train, generator=sampler, device=device)
        users, pos = data.train_user[order], data.train_item[order]
        neg = sample_negatives(users, data.n_items, positive_keys, sampler, pool=negative_pool)
        if use_kg:
            kg_order = torch.randperm(kg_head.numel(), generator=sampler, device=device)
            h, r, t = kg_head[kg_order], kg_rel[kg_order], kg_tail[kg_order]
            tn = sample_corrupt_tails(h, r, data.n_entities, kg_true, n_rel_all, sampler)
            kg_chunks = n_batches if settings.kg_loss == "joint" else max(
                1, math.ceil(h.numel() / settings.batch_size))
            kg_size = math.ceil(h.numel() / kg_chunks)
        sums = torch.zeros(4, device=device)  # bpr, reg, kg, align
        for b in range(n_batches):
            sl = slice(b * settings.batch_size, (b + 1) * settings.batch_size)
            with autocast:
                bpr, reg = model.bpr_loss(users[sl], pos[sl], neg[sl])
                align = model.align_loss(users[sl], pos[sl], neg[sl])
                loss = bpr + settings.reg * reg + settings.align_weight * align
                kg = torch.zeros((), device=device)
                if use_kg and settings.kg_loss == "joint" and b * kg_size < h.numel():
                    ks = slice(b * kg_size, (b + 1) * kg_size)
                    kg = model.kg_loss(h[ks], r[ks], t[ks], tn[ks], settings.kg_l2)
                    loss = loss + kg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([bpr.detach().float(), reg.detach().float(), kg.detach().float(),
                                 align.detach().float()])
            if b % 32 == 31 and not torch.isfinite(sums).all():
                break
        if use_kg and settings.kg_loss == "alternate":  # KGAT's second phase
            for c in range(math.ceil(h.numel() / kg_size)):
                ks = slice(c * kg_size, (c + 1) * kg_size)
                with autocast:
                    kg = model.kg_loss(h[ks], r[ks], t[ks], tn[ks], settings.kg_l2)
                optimizer.zero_grad(set_to_none=True)
                kg.backward()
                optimizer.step()
                sums[2] += kg.detach().float() * n_batches / kg_chunks
        losses = (sums / n_batches).tolist()
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(
                f"{settings.variant}: non-finite loss in epoch {epoch + 1} (bpr={losses[0]}, "
                f"reg={losses[1]}, kg={losses[2]}); last good checkpoint: {last_path}. "
                "Lower lr, raise reg, or check the input features for extreme values.")
        model.refresh()  # attention from the updated weights, before evaluating (KGAT)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        state["train_seconds"] += train_seconds
        epoch += 1
        record: dict[str, Any] = {"epoch": epoch, "bpr": losses[0], "reg": losses[1],
                                  "kg": losses[2], "align": losses[3],
                                  "loss": losses[0] + settings.reg * losses[1] + losses[2]
                                  + settings.align_weight * losses[3],
                                  "seconds": train_seconds}

        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            t1 = time.perf_counter()
            valid = evaluate(model, data, "valid", chunk_users=settings.eval_chunk,
                             max_users=settings.max_users_eval, seed=settings.seed)
            state["eval_seconds"].append(time.perf_counter() - t1)
            record |= {f"valid/{k}": v for k, v in valid.items() if k != "users"}
            score = valid["recall@20"]
            if score > state["best_score"]:
                state["best_score"], state["best_epoch"], state["bad_evals"] = score, epoch, 0
                atomic_save({f"model.{k}": v for k, v in model.state_dict().items()}, best_path,
                            {"format": json.dumps(CHECKPOINT_FORMAT),
                             "settings": json.dumps(settings.to_dict()),
                             "epoch": json.dumps(epoch)})
            else:
                state["bad_evals"] += 1
                if state["bad_evals"] >= settings.patience:
                    state["stopped"] = "patience"
            log(f"{settings.variant} epoch {epoch}: loss {record['loss']:.4f} "
                f"({train_seconds:.2f} s) valid recall@20 {score:.4f} ndcg@20 "
                f"{valid['ndcg@20']:.4f} best {state['best_score']:.4f}@{state['best_epoch']}")
        else:
            log(f"{settings.variant} epoch {epoch}: loss {record['loss']:.4f} "
                f"({train_seconds:.2f} s)")
        if settings.max_seconds is not None and state["train_seconds"] >= settings.max_seconds:
            state["stopped"] = state["stopped"] or "time"
        if epoch >= settings.epochs:
            state["stopped"] = state["stopped"] or "epochs"
        state["epoch"] = epoch
        state["history"].append(record)
        save_last()
        if on_epoch_end is not None:
            on_epoch_end(record)

    # -- best weights → test
    if best_path.is_file():
        tensors, _ = load_checkpoint(best_path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    model.refresh()
    model.eval()
    with torch.no_grad():
        reps = model()
    # one ranking pass per split: the whole ("all") and its popularity/activity slices
    slices = {split: evaluate_slices(model, data, split, chunk_users=settings.eval_chunk,
                                     representations=reps)
              for split in (("valid", "test") if settings.evaluate_test else ("valid",))}
    test = slices["test"]["all"] if settings.evaluate_test else {}
    best_valid = slices["valid"]["all"]
    epochs_run = len(state["history"])
    result = TrainResult(
        settings=settings.to_dict(), config_hash=settings.config_hash(), device=str(device),
        best_epoch=state["best_epoch"], best_valid=best_valid, test=test,
        history=state["history"],
        seconds_per_epoch=state["train_seconds"] / max(epochs_run, 1),
        eval_seconds=float(np.mean(state["eval_seconds"])) if state["eval_seconds"] else 0.0,
        total_seconds=time.perf_counter() - started, epochs_run=epochs_run,
        stopped=state["stopped"], resumed_from_epoch=state["resumed_from_epoch"],
        n_parameters=n_parameters, checkpoint_path=str(best_path), notes=notes,
        slices=slices,
    )
    atomic_write_json(out_dir / "config.json", {"settings": settings.to_dict(), "config_hash": settings.config_hash(),
                       "data": data.summary(), "notes": notes, "result": result.to_dict()}, indent=2, sort_keys=True, default=str)
    shown = test or best_valid
    log(f"{settings.variant}: best epoch {result.best_epoch}, {'test' if test else 'valid'} "
        f"recall@20 {shown['recall@20']:.4f} ndcg@20 {shown['ndcg@20']:.4f} "
        f"mrr@20 {shown['mrr@20']:.4f}")
    return result
