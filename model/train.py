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

Data-parallel (``dist``, a :class:`model.distributed.DistContext` under torchrun): every rank
draws the same global batches and trains on its share through DDP, evaluation users are split
and the metric sums all-reduced, rank 0 alone writes checkpoints and logs and broadcasts what it
reads; the checkpoints hold nothing per rank, so a run resumes with any world size.
:mod:`model.distributed` says what is split and what every rank still computes in full.

Over 400 lines: the loop state, its checkpoint format and the loop that resumes from it must
change together (an exact resume depends on all three), so they stay in one file.
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

from model.checkpoints import (
    CHECKPOINT_FORMAT,
    atomic_save,
    load_checkpoint,
    model_tensors,
    optimizer_tensors,
    pick_device,
    restore_optimizer,
)
from model.config import FUSION_VARIANTS, TrainSettings
from model.data import RecData, user_item_csr
from model.distributed import DistContext, ParallelSteps
from model.evaluate import evaluate, evaluate_slices
from model.recommenders import build_model
from model.sampling import (
    kg_training_triples,
    sample_corrupt_tails,
    sample_negatives,
)
from warehouse.files import atomic_write_json


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


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopState:
    """Where the loop is. Stored as JSON in ``last.safetensors``: a resume continues from it."""

    epoch: int = 0
    best_epoch: int = -1
    best_score: float = -math.inf  # validation Recall@20 of best_epoch
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    train_seconds: float = 0.0
    eval_seconds: list[float] = field(default_factory=list)
    stopped: str = ""  # why the loop ended: "patience", "epochs", "time"; "" while running
    resumed_from_epoch: int = 0


@dataclass
class EpochLosses:
    """Mean per-batch losses of one epoch."""

    bpr: float
    reg: float  # ‖θ‖² of the batch's layer-0 embeddings, before λ
    kg: float
    align: float

    def total(self, settings: TrainSettings) -> float:
        return self.bpr + settings.reg * self.reg + self.kg + settings.align_weight * self.align


class KGTriples:
    """The TransR training triples (with inverses) and the keys of the true ones, which the
    corrupted tails avoid; :meth:`shuffled` draws one epoch's order and corrupted tails."""

    def __init__(self, data: RecData) -> None:
        self.head, self.relation, self.tail = kg_training_triples(data)
        self.n_entities = data.n_entities
        self.n_relations = 2 + 2 * data.n_relations  # as in model.data.collaborative_edges
        self.true_keys = torch.sort((self.head * self.n_relations + self.relation)
                                    * data.n_entities + self.tail).values

    def shuffled(self, sampler: torch.Generator) -> tuple[torch.Tensor, ...]:
        order = torch.randperm(self.head.numel(), generator=sampler, device=self.head.device)
        head, relation, tail = self.head[order], self.relation[order], self.tail[order]
        corrupt = sample_corrupt_tails(head, relation, self.n_entities, self.true_keys,
                                       self.n_relations, sampler)
        return head, relation, tail, corrupt


class TrainingRun:
    """One run's model, optimizer, sampler and loop state, and the steps :func:`train` takes."""

    def __init__(self, settings: TrainSettings, data: RecData, out_dir: Path,
                 log: Callable[[str], None], dist: DistContext | None = None) -> None:
        self.settings, self.out_dir = settings, out_dir
        self.dist, self.is_main = dist, dist is None or dist.is_main
        self.log = log if self.is_main else _silent
        self.started = time.perf_counter()
        self.device = pick_device(settings.device) if dist is None else dist.device
        seed_everything(settings.seed, settings.deterministic)
        if self.device.type == "cpu":  # denormal gradients of tiny embeddings slow CPU kernels ~10x
            torch.set_flush_denormal(True)
        self.data = data = data.to(self.device)
        self.autocast = torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16,
            enabled=uses_bf16(settings.precision, self.device, settings.variant))

        self.model = build_model(settings.model_config(), data).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.sampler = torch.Generator(device=self.device).manual_seed(settings.seed)
        self.positive_keys = torch.sort(data.train_user * data.n_items + data.train_item).values
        self.user_items = (self._users_sampler_tables(data)
                           if settings.bpr_pairs == "users" else None)
        # "train": the catalogue known at training time; items without a train pair (cold items)
        # are then never pushed down as negatives before anyone has seen them
        self.negative_pool = (torch.unique(data.train_item) if settings.negative_items == "train"
                              else None)
        use_kg = (self.model.uses_kg and settings.kg_loss != "none"
                  and data.kg_head.numel() > 0)
        self.kg = KGTriples(data) if use_kg else None
        self.n_batches = max(1, math.ceil(data.train_user.numel() / settings.batch_size))
        # the data's notes on the modalities concern the fusion variants only (for bprmf or
        # lightgcn "the text graph is dropped" would describe a graph they never had)
        data_notes = [n for n in data.notes
                      if settings.variant in FUSION_VARIANTS or not n.startswith("modality ")]
        self.notes = [*data_notes, *self.model.notes]
        # under DDP: the steps of this rank's share of each global batch (model/distributed.py)
        self.parallel = ParallelSteps(self.model, settings, dist) if dist is not None else None
        if dist is not None:
            self.notes.append(f"data-parallel over {dist.world_size} ranks ({dist.backend}): "
                              f"each global batch of {settings.batch_size} split between them")
        self.state = LoopState()
        self.last_path = out_dir / "last.safetensors"
        self.best_path = out_dir / "best.safetensors"

    # -- checkpoints

    def resume(self) -> None:
        """Continue from ``last.safetensors`` if it exists (weights, Adam, RNGs, loop state).

        Under ``dist`` rank 0 reads it and broadcasts it (or the reason it cannot be used)."""
        if self.dist is None:
            if not self.last_path.is_file():
                return
            tensors, meta = self._read_last()
        else:
            payload = None
            if self.is_main and self.last_path.is_file():
                try:
                    payload = self._read_last()
                except ValueError as error:
                    payload = str(error)
            payload = self.dist.broadcast_object(payload)
            if payload is None:
                return
            if isinstance(payload, str):
                raise ValueError(payload)
            tensors, meta = payload
        self._restore(tensors, meta)

    def _read_last(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = load_checkpoint(self.last_path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.last_path}: not a {CHECKPOINT_FORMAT} checkpoint")
        if TrainSettings.from_dict(meta["settings"]).config_hash() != self.settings.config_hash():
            raise ValueError(f"{self.last_path} was written with other settings; use another out_dir")
        return tensors, meta

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        state = LoopState(**meta["state"])
        if state.stopped:  # finished: no more epochs; its best weights are evaluated
            self.log(f"{self.last_path}: finished run ({state.stopped}), evaluating its best epoch")
        else:
            self.model.load_state_dict(model_tensors(tensors))
            restore_optimizer(self.optimizer, tensors, meta["param_groups"])
            torch.set_rng_state(tensors["rng.cpu"])
            if self.device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
            self.sampler.set_state(tensors["rng.sampler"])
            self.log(f"resumed from {self.last_path} at epoch {state.epoch}")
            if self.dist is not None and meta.get("world_size", 1) != self.dist.world_size:
                # nothing in it is per rank: the same global batches follow on any world size
                self.log(f"written by {meta.get('world_size', 1)} rank(s), continued by "
                         f"{self.dist.world_size}")
        state.resumed_from_epoch = state.epoch
        self.state = state

    def save_last(self) -> None:
        if not self.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        adam, param_groups = optimizer_tensors(self.optimizer)
        tensors |= adam
        tensors["rng.cpu"] = torch.get_rng_state()
        tensors["rng.sampler"] = self.sampler.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"format": CHECKPOINT_FORMAT, "settings": self.settings.to_dict(),
                "state": asdict(self.state), "param_groups": param_groups}
        if self.dist is not None:  # provenance only: nothing else in the file is per rank
            meta["world_size"] = self.dist.world_size
        atomic_save(tensors, self.last_path, {k: json.dumps(v, default=str) for k, v in meta.items()})

    def save_best(self) -> None:
        if not self.is_main:
            return
        atomic_save({f"model.{k}": v for k, v in self.model.state_dict().items()}, self.best_path,
                    {"format": json.dumps(CHECKPOINT_FORMAT),
                     "settings": json.dumps(self.settings.to_dict()),
                     "epoch": json.dumps(self.state.best_epoch)})

    def write_config(self, result: TrainResult | None = None) -> None:
        if not self.is_main:
            return
        summary = {"settings": self.settings.to_dict(), "config_hash": self.settings.config_hash(),
                   "data": self.data.summary(), "notes": self.notes}
        if result is not None:
            summary["result"] = result.to_dict()
        atomic_write_json(self.out_dir / "config.json", summary, indent=2, sort_keys=True,
                          default=str)

    # -- one epoch

    def train_epoch(self) -> EpochLosses:
        """One pass over the shuffled train pairs (BPR + alignment, and L_KG per its mode)."""
        settings, data, model = self.settings, self.data, self.model
        model.train()
        users, pos = self.bpr_pairs()
        neg = sample_negatives(users, data.n_items, self.positive_keys, self.sampler,
                               pool=self.negative_pool)
        kg_batches: list[tuple[torch.Tensor, ...]] = []
        if self.kg is not None:
            triples = self.kg.shuffled(self.sampler)
            # joint: one KG slice beside each BPR batch; alternate: KGAT's second phase in
            # batches of batch_size
            n_chunks = (self.n_batches if settings.kg_loss == "joint"
                        else max(1, math.ceil(triples[0].numel() / settings.batch_size)))
            size = math.ceil(triples[0].numel() / n_chunks)
            kg_batches = [tuple(t[lo:lo + size] for t in triples)
                          for lo in range(0, triples[0].numel(), size)]
        joint = kg_batches if settings.kg_loss == "joint" else []

        sums = torch.zeros(4, device=self.device)  # bpr, reg, kg, align
        for b in range(self.n_batches):
            batch = slice(b * settings.batch_size, (b + 1) * settings.batch_size)
            if self.parallel is not None:  # this rank's share of the same global batch
                with self.autocast:
                    loss, parts = self.parallel.bpr_step(
                        users[batch], pos[batch], neg[batch], joint[b] if b < len(joint) else None)
                self._step(loss)
                sums += parts
                if b % 32 == 31 and not self.dist.all_true(bool(torch.isfinite(sums).all())):
                    break
                continue
            with self.autocast:
                bpr, reg = model.bpr_loss(users[batch], pos[batch], neg[batch])
                align = model.align_loss(users[batch], pos[batch], neg[batch])
                loss = bpr + settings.reg * reg + settings.align_weight * align
                kg = torch.zeros((), device=self.device)
                if b < len(joint):
                    kg = model.kg_loss(*joint[b], settings.kg_l2)
                    loss = loss + kg
            self._step(loss)
            sums += torch.stack([bpr.detach().float(), reg.detach().float(),
                                 kg.detach().float(), align.detach().float()])
            if b % 32 == 31 and not torch.isfinite(sums).all():
                break
        if settings.kg_loss == "alternate":
            for chunk in kg_batches:
                if self.parallel is not None:
                    with self.autocast:
                        kg, parts = self.parallel.kg_step(chunk)
                    self._step(kg)
                    sums[2] += parts[2] * self.n_batches / len(kg_batches)
                    continue
                with self.autocast:
                    kg = model.kg_loss(*chunk, settings.kg_l2)
                self._step(kg)
                sums[2] += kg.detach().float() * self.n_batches / len(kg_batches)
        if self.dist is not None:  # every rank's shares → the global batch's means
            sums = self.dist.all_reduce(sums)
        losses = EpochLosses(*(sums / self.n_batches).tolist())
        if not all(math.isfinite(v) for v in asdict(losses).values()):
            raise FloatingPointError(
                f"{settings.variant}: non-finite loss in epoch {self.state.epoch + 1} "
                f"(bpr={losses.bpr}, reg={losses.reg}, kg={losses.kg}); last good checkpoint: "
                f"{self.last_path}. Lower lr, raise reg, or check the input features for "
                "extreme values.")
        model.refresh_attention()  # attention from the updated weights, before evaluating (KGAT)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return losses

    def bpr_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's (user, positive item) pairs, as many as there are train pairs."""
        data = self.data
        n_train = data.train_user.numel()
        if self.settings.bpr_pairs == "interactions":
            order = torch.randperm(n_train, generator=self.sampler, device=self.device)
            return data.train_user[order], data.train_item[order]
        # "users": a uniformly drawn user (among those with train pairs), then one of its items
        indptr, items, degree, active = self.user_items
        users = active[torch.randint(active.numel(), (n_train,), generator=self.sampler,
                                     device=self.device)]
        offset = (torch.rand(n_train, generator=self.sampler, device=self.device)
                  * degree[users]).long().clamp(max=degree[users] - 1)
        return users, items[indptr[users] + offset]

    @staticmethod
    def _users_sampler_tables(data: RecData) -> tuple[torch.Tensor, ...]:
        """(indptr, items by user, degree, users with train pairs) for ``bpr_pairs: users``."""
        indptr, items = user_item_csr(data.n_users, data.train_user, data.train_item)
        degree = indptr[1:] - indptr[:-1]
        return indptr, items, degree, torch.nonzero(degree > 0).squeeze(1)

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # -- validation, early stopping

    def validate(self, record: dict[str, Any]) -> None:
        """Validation Recall@20 of this epoch: a new best is checkpointed, else patience counts."""
        settings, state = self.settings, self.state
        started = time.perf_counter()
        valid = evaluate(self.model, self.data, "valid", chunk_users=settings.eval_chunk,
                         max_users=settings.max_users_eval, seed=settings.seed, dist=self.dist)
        state.eval_seconds.append(time.perf_counter() - started)
        record |= {f"valid/{k}": v for k, v in valid.items() if k != "users"}
        if valid["recall@20"] > state.best_score:
            state.best_score, state.best_epoch, state.bad_evals = valid["recall@20"], state.epoch, 0
            self.save_best()
        else:
            state.bad_evals += 1
            if state.bad_evals >= settings.patience:
                state.stopped = "patience"

    def sync_state(self) -> None:
        """Rank 0's loop state on every rank (its timings and stop decisions: the time cap is
        measured per rank), so that all ranks stop after the same epoch."""
        if self.dist is not None:
            self.state = LoopState(**self.dist.broadcast_object(asdict(self.state)))

    def end_epoch(self) -> None:
        """Checkpoint the epoch (rank 0) and, under ``dist``, wait until it is written."""
        self.save_last()
        if self.dist is not None:
            self.dist.barrier()

    def log_epoch(self, record: dict[str, Any]) -> None:
        line = (f"{self.settings.variant} epoch {record['epoch']}: loss {record['loss']:.4f} "
                f"({record['seconds']:.2f} s)")
        if "valid/recall@20" in record:
            line += (f" valid recall@20 {record['valid/recall@20']:.4f} ndcg@20 "
                     f"{record['valid/ndcg@20']:.4f} best {self.state.best_score:.4f}"
                     f"@{self.state.best_epoch}")
        self.log(line)

    # -- the end

    def finish(self) -> TrainResult:
        """Load the best epoch's weights, rank the validation (and test) split once, report."""
        settings, state, model = self.settings, self.state, self.model
        if self.dist is None:
            if self.best_path.is_file():
                tensors, _ = load_checkpoint(self.best_path)
                model.load_state_dict(model_tensors(tensors))
        else:  # rank 0 reads the best weights, every rank loads them
            best = (model_tensors(load_checkpoint(self.best_path)[0])
                    if self.is_main and self.best_path.is_file() else None)
            best = self.dist.broadcast_object(best)
            if best is not None:
                model.load_state_dict(best)
        model.refresh_attention()
        model.eval()
        with torch.no_grad():
            representations = model()
        # one ranking pass per split: the whole ("all") and its popularity/activity slices
        splits = (("valid",) if self.data.valid_user.numel() else ()) \
            + (("test",) if settings.evaluate_test else ())
        slices = {split: evaluate_slices(model, self.data, split, chunk_users=settings.eval_chunk,
                                         representations=representations, dist=self.dist)
                  for split in splits}
        epochs_run = len(state.history)
        result = TrainResult(
            settings=settings.to_dict(), config_hash=settings.config_hash(),
            device=str(self.device), best_epoch=state.best_epoch,
            best_valid=slices["valid"]["all"] if "valid" in slices else {},
            test=slices["test"]["all"] if settings.evaluate_test else {},
            history=state.history, seconds_per_epoch=state.train_seconds / max(epochs_run, 1),
            eval_seconds=float(np.mean(state.eval_seconds)) if state.eval_seconds else 0.0,
            total_seconds=time.perf_counter() - self.started, epochs_run=epochs_run,
            stopped=state.stopped, resumed_from_epoch=state.resumed_from_epoch,
            n_parameters=sum(p.numel() for p in model.parameters()),
            checkpoint_path=str(self.best_path), notes=self.notes, slices=slices,
        )
        self.write_config(result)
        if self.dist is not None:
            self.dist.barrier()
        shown = result.test or result.best_valid or {k: math.nan for k in
                                                     ("recall@20", "ndcg@20", "mrr@20")}
        self.log(f"{settings.variant}: best epoch {result.best_epoch}, "
                 f"{'test' if result.test else 'valid'} recall@20 {shown['recall@20']:.4f} "
                 f"ndcg@20 {shown['ndcg@20']:.4f} mrr@20 {shown['mrr@20']:.4f}")
        return result


def _silent(_line: str) -> None:
    pass


def train(
    settings: TrainSettings,
    data: RecData,
    out_dir: str | Path,
    *,
    resume: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train ``settings.variant`` on ``data``; checkpoints in ``out_dir``; returns the result.

    ``dist`` (:func:`model.distributed.distributed_from_env` under torchrun): data-parallel over
    its ranks; call on every rank with the same arguments. ``settings.device`` is then the
    context's device; only rank 0 writes ``out_dir`` and calls ``log``; ``on_epoch_end`` runs
    on every rank with the same record (side effects: check ``dist.is_main``); every rank
    returns the same result. A failed collective (a rank died or timed out) raises
    :class:`model.distributed.DistributedFailure`. None: one process, as before.
    """
    if dist is None:
        return _train(TrainingRun(settings, data, Path(out_dir), log), resume, on_epoch_end)
    with dist.failures(Path(out_dir) / "last.safetensors"):
        return _train(TrainingRun(settings, data, Path(out_dir), log, dist), resume, on_epoch_end)


def _train(run: TrainingRun, resume: bool,
           on_epoch_end: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    settings, log = run.settings, run.log
    for note in run.notes:
        log(f"note: {note}")
    if resume:
        run.resume()
    run.write_config()

    state = run.state
    run.model.refresh_attention()
    validates = settings.keep_epoch == "best"  # "last": a refit, no validation split
    while state.epoch < settings.epochs and not state.stopped:
        started = time.perf_counter()
        losses = run.train_epoch()
        seconds = time.perf_counter() - started
        state.train_seconds += seconds
        state.epoch += 1
        record = {"epoch": state.epoch, **asdict(losses), "loss": losses.total(settings),
                  "seconds": seconds}
        if validates and (state.epoch % settings.eval_every == 0
                          or state.epoch == settings.epochs):
            run.validate(record)
        run.log_epoch(record)
        if settings.max_seconds is not None and state.train_seconds >= settings.max_seconds:
            state.stopped = state.stopped or "time"
        if state.epoch >= settings.epochs:
            state.stopped = state.stopped or "epochs"
        if not validates and state.stopped:
            state.best_epoch = state.epoch
            run.save_best()
        state.history.append(record)
        run.sync_state()
        state, record = run.state, run.state.history[-1]
        run.end_epoch()
        if on_epoch_end is not None:
            on_epoch_end(record)
    return run.finish()
