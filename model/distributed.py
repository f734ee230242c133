"""Data-parallel training under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on CUDA).

Launch (the one training command, :mod:`model.job`, under torchrun)::

    torchrun --nproc_per_node N -m model.job --config run.json

The entry point calls :func:`distributed_from_env` and passes the context to
``model.train.train(..., dist=ctx)``; ``None`` (no torchrun) is the ordinary single process.

What is split, and what is not
------------------------------
* **Split:** the loss batches. Every rank draws the same seeded epoch order, negatives, KG
  triples and corrupted tails (the trainer's ``sampler``, seeded identically), then keeps only
  its contiguous share of each global batch (:func:`shard_bounds`): the union of the ranks'
  shares in a step is exactly the batch a one-process run takes in that step (same global
  ``batch_size``, same order). Each rank's BPR/TransR mean is weighted by its share, so DDP's
  gradient average equals the one-process gradient (up to float summation order). The
  evaluation users are split the same way and the metric sums (overall and per slice) are
  all-reduced, so every rank gets the one-process metrics.
* **Not split:** the model's forward. Every rank runs the full Bi-Transformer fusion over ALL
  items' BFS sequences and the full graph propagation over all nodes in every step (the BPR
  loss reads representations of arbitrary users/items), and holds the whole data set and model
  on its device. DDP therefore speeds up only the per-batch part (gathers, losses, backward of
  the batch rows) and adds a gradient all-reduce of every parameter per step; for the fusion
  variants, whose step cost is the fusion over all items, N ranks take about as long per step
  as one. What would split it: shard the fusion's items across ranks (each rank fuses
  ``n_items / N`` sequences), all-gather the fused item vectors (``all_gather`` with autograd,
  ``torch.distributed.nn.functional.all_gather``) before propagation, and likewise partition the
  propagation's rows; not done here.
* **Not split either:** the ID-content alignment loss (InfoNCE with in-batch negatives) does not
  decompose over shards, so every rank computes it on the whole global batch from its full
  forward (identical on all ranks; DDP's average leaves it unchanged).

Randomness: every rank seeds the global RNG identically and runs the same full forward (same
shapes), so message/attention dropout masks and the alignment's row sample are the same on
every rank and the same as in one process; nothing per rank is stored in a checkpoint (the
``sampler`` and RNG states are the same everywhere). A checkpoint therefore resumes with any
world size: 2 → 1 or 1 → 4 continues as if uninterrupted.

Rank 0 alone writes the checkpoints (atomically, :mod:`model.checkpoints`), ``config.json`` and
the log lines; the others wait at a barrier after every epoch's checkpoint. Rank 0 reads
``last.safetensors`` / ``best.safetensors`` and broadcasts them, so only rank 0 needs to see
``out_dir`` (every rank reads the lake itself). The loop state (early stopping, time cap) is
broadcast from rank 0 each epoch, so every rank stops at the same epoch.

Failures: the process group has a timeout (``timeout_s``, default
``KG4REC_DIST_TIMEOUT_S`` or 300 s): a rank that stops responding makes the others' next
collective fail after it, a rank that dies closes its connections (the others fail at once), and
torchrun stops the remaining workers and names the first failure. :meth:`DistContext.failures`
turns the backend's error into :class:`DistributedFailure` saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

#: Default process-group timeout (seconds); ``KG4REC_DIST_TIMEOUT_S`` overrides it. It bounds
#: the longest wait of one rank for the others: keep it above the slowest checkpoint write.
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "KG4REC_DIST_TIMEOUT_S"


class DistributedFailure(RuntimeError):
    """A collective failed: another rank died or stopped responding within the timeout."""


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of n rows; shares differ by at most one row and
    follow each other in rank order (their union is 0..n-1, in order)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


_COLLECTIVE_ERRORS = ("gloo", "nccl", "connection reset", "connection closed", "timed out",
                      "timeout", "pair closure", "processgroup", "broken pipe", "socket")


def is_collective_failure(error: BaseException) -> bool:
    if isinstance(error, torch_dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(s in text for s in _COLLECTIVE_ERRORS)


@dataclass
class DistContext:
    """This process's place in the process group and the collectives the trainer uses."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank; on gloo a monitored barrier that names a missing rank."""
        if self.backend == "gloo":
            torch_dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s))
        else:
            torch_dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda"
                               else None)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or min/max) over ranks, in place on ``tensor`` (moved to the device if needed)."""
        ops = {"sum": torch_dist.ReduceOp.SUM, "min": torch_dist.ReduceOp.MIN,
               "max": torch_dist.ReduceOp.MAX}
        work = tensor if tensor.device == self.device else tensor.to(self.device)
        torch_dist.all_reduce(work, op=ops[op])
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def all_reduce_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """Sum a dict of floats over ranks (float64; every rank must pass the same keys)."""
        keys = sorted(sums)
        values = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
        self.all_reduce(values)
        return dict(zip(keys, values.tolist(), strict=True))

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (one collective: every rank must call it)."""
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        return bool(self.all_reduce(value, "min").item())

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every rank (pickled; tensors come back on the CPU)."""
        box = [obj if self.rank == src else None]
        torch_dist.broadcast_object_list(box, src=src,
                                         device=self.device if self.backend == "nccl" else None)
        return box[0]

    def shard(self, n: int) -> tuple[int, int]:
        return shard_bounds(n, self.rank, self.world_size)

    def wrap(self, module: nn.Module) -> nn.parallel.DistributedDataParallel:
        """DDP over ``module``. Every rank runs the same graph, but which parameters a step
        uses changes (KG-only steps of ``kg_loss='alternate'``, TransR unused by the symmetric
        propagation): find_unused_parameters; the buffers are constants: not broadcast."""
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True, broadcast_buffers=False)

    @contextmanager
    def failures(self, checkpoint: Path | None = None) -> Iterator[None]:
        """Turn a failed collective into :class:`DistributedFailure` with what it means."""
        try:
            yield
        except DistributedFailure:
            raise
        except Exception as error:
            if not is_collective_failure(error):
                raise
            text = str(error)
            kind = ("timed out" if "time" in text.lower() else "lost its connection to a peer")
            where = (f" The last complete checkpoint is {checkpoint}; it resumes with any world "
                     "size." if checkpoint is not None else "")
            raise DistributedFailure(
                f"rank {self.rank} of {self.world_size}: a collective operation {kind}: "
                f"another rank died or stopped responding (process-group timeout "
                f"{self.timeout_s:g} s, {TIMEOUT_ENV} or timeout_s); torchrun's summary shows "
                f"how each rank ended (a killed one by its signal).{where} Backend error: "
                f"{text.strip()[:400]}") from error

    def close(self) -> None:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def distributed_from_env(device: str = "auto", timeout_s: float | None = None
                         ) -> DistContext | None:
    """The process group torchrun asked for, or None outside torchrun (one process).

    Reads RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR/PORT through ``env://``); ``device``
    is TrainSettings.device: "auto" → cuda:LOCAL_RANK with nccl when CUDA is available, else the
    CPU with gloo. ``timeout_s``: the process-group timeout (default: ``KG4REC_DIST_TIMEOUT_S``
    or 300 s)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if timeout_s is None:
        timeout_s = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"under torchrun the device is 'auto', 'cpu' or 'cuda' (each rank "
                         f"takes cuda:LOCAL_RANK), got {device!r}")
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} CUDA "
                               "devices: start at most one process per GPU (nccl)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    kwargs: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
    torch_dist.init_process_group(backend, rank=rank, world_size=world,
                                  timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistContext(rank, world, local_rank, dev, backend, float(timeout_s))


# --------------------------------------------------------------------------- the step DDP wraps


def share(rows: tuple[torch.Tensor, ...], rank: int, world_size: int
          ) -> tuple[tuple[torch.Tensor, ...], float]:
    """Rank's rows of a global batch (parallel tensors) and the weight of its mean:
    world_size × its rows / all rows, so that the ranks' weighted means average to the global
    mean. A rank without rows gets the first row with weight 0 (it still runs the graph)."""
    n = rows[0].numel()
    lo, hi = shard_bounds(n, rank, world_size)
    if hi > lo:
        return tuple(t[lo:hi] for t in rows), world_size * (hi - lo) / n
    return tuple(t[:1] for t in rows), 0.0


class StepLoss(nn.Module):
    """One step's loss as ``forward`` (DDP synchronises the gradients of what forward uses).

    ``batch``: this rank's share of the global BPR batch, ``weight``: world_size × share / global
    size (0 for a rank without rows: it then scores the global batch's first row, so that every
    rank runs the same graph), ``full``: the global batch (for the alignment loss, which does not
    decompose), ``kg``/``kg_weight``: this rank's share of the TransR triples. ``batch`` None: a
    KG-only step (``kg_loss='alternate'``). Returns (loss, this rank's contributions to the
    epoch sums of (bpr, reg, kg, align), which sum over ranks to the one-process values)."""

    def __init__(self, model: nn.Module, reg: float, align_weight: float, kg_l2: float,
                 world_size: int) -> None:
        super().__init__()
        self.model = model
        self.reg, self.align_weight, self.kg_l2 = reg, align_weight, kg_l2
        self.world_size = world_size

    def forward(self, batch, weight: float, full, kg, kg_weight: float):
        model, world = self.model, self.world_size
        if batch is None:
            kg_loss = model.kg_loss(*kg, self.kg_l2)
            zero = torch.zeros((), device=kg_loss.device)
            parts = torch.stack([zero, zero, kg_weight * kg_loss.detach().float() / world, zero])
            return kg_weight * kg_loss, parts
        bpr, reg = model.bpr_loss(*batch)
        align = model.align_loss(*full)  # the global batch, from this step's forward
        loss = weight * (bpr + self.reg * reg) + self.align_weight * align
        kg_loss = torch.zeros((), device=bpr.device)
        if kg is not None:
            kg_loss = model.kg_loss(*kg, self.kg_l2)
            loss = loss + kg_weight * kg_loss
        parts = torch.stack([weight * bpr.detach().float(), weight * reg.detach().float(),
                             kg_weight * kg_loss.detach().float(),
                             align.detach().float()]) / world
        return loss, parts


class ParallelSteps:
    """The trainer's steps under DDP: shard the global batch, weight the shares, run DDP."""

    def __init__(self, model: nn.Module, settings, dist: DistContext) -> None:
        self.dist = dist
        self.ddp = dist.wrap(StepLoss(model, settings.reg, settings.align_weight,
                                      settings.kg_l2, dist.world_size))

    def _share(self, rows: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], float]:
        return share(rows, self.dist.rank, self.dist.world_size)

    def bpr_step(self, users, pos, neg, kg=None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, weight = self._share((users, pos, neg))
        kg_share, kg_weight = self._share(kg) if kg is not None else (None, 0.0)
        return self.ddp(batch, weight, (users, pos, neg), kg_share, kg_weight)

    def kg_step(self, kg) -> tuple[torch.Tensor, torch.Tensor]:
        kg_share, kg_weight = self._share(kg)
        return self.ddp(None, 0.0, None, kg_share, kg_weight)
