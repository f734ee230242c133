"""Full-ranking evaluation on the model's device, in user chunks (``torch.topk``).

Protocol (the paper's, RecBole's "full" mode):
* every item is a candidate; the user's TRAIN items are removed (and VALID items when testing);
  ``candidates`` (a boolean item mask; default ``RecData.candidate_items``) narrows the
  candidates, e.g. to the cold items only;
* users with at least one held-out item are evaluated and averaged;
* metrics: Recall, MRR, standard NDCG, Hit (and Precision) @ 10 and 20 (:mod:`model.metrics`).

The score matrix exists one chunk at a time (``chunk_users × n_items``) on the device; no
all-users × all-items matrix is ever built on the host and no CPU worker pool is used.

Under data-parallel training (``dist``, :mod:`model.distributed`) each rank ranks its
contiguous share of the evaluated users and the metric SUMS (and the users counted) are
all-reduced before averaging, so every rank gets the metrics of one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from model.data import RecData, user_item_csr
from model.metrics import KS, METRIC_FUNCTIONS, metric_sums, summarize

if TYPE_CHECKING:
    from model.distributed import DistContext


class PairIndex:
    """Items of each user (CSR) for a set of (user, item) pairs, with chunk gathers."""

    def __init__(self, n_users: int, users: torch.Tensor, items: torch.Tensor) -> None:
        self.indptr, self.items = user_item_csr(n_users, users, items)

    def count(self, users: torch.Tensor) -> torch.Tensor:
        return self.indptr[users + 1] - self.indptr[users]

    def rows_cols(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in chunk, item) of every pair of the given users."""
        start = self.indptr[users]
        length = self.indptr[users + 1] - start
        row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), length)
        offset = torch.cumsum(length, 0) - length
        pos = start[row] + torch.arange(row.numel(), device=users.device) - offset[row]
        return row, self.items[pos]


def _pairs(data: RecData, parts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    users = torch.cat([getattr(data, f"{p}_user") for p in parts])
    items = torch.cat([getattr(data, f"{p}_item") for p in parts])
    return users, items


def eval_users(data: RecData, split: str, max_users: int | None = None, seed: int = 0
               ) -> torch.Tensor:
    """Users with at least one held-out item of ``split`` (a seeded subset if capped)."""
    users = torch.unique(getattr(data, f"{split}_user"))
    if max_users is not None and users.numel() > max_users:
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(users.numel(), generator=gen)[:max_users].to(users.device)
        users = torch.sort(users[pick]).values
    return users


@torch.no_grad()
def rank_top_k(user_repr: torch.Tensor, item_repr: torch.Tensor, users: torch.Tensor,
               exclude: PairIndex, k: int, candidates: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items (and scores) of ``users`` among the items not excluded for them (and, with
    ``candidates``, among the items of that boolean mask only)."""
    scores = user_repr[users].float() @ item_repr.float().T
    row, col = exclude.rows_cols(users)
    scores[row, col] = float("-inf")
    if candidates is not None:
        scores[:, ~candidates] = float("-inf")
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return top.indices, top.values


def _ranked_chunks(model: torch.nn.Module, data: RecData, split: str, k: int,
                   chunk_users: int, max_users: int | None, seed: int,
                   representations: tuple[torch.Tensor, torch.Tensor] | None,
                   dist: DistContext | None = None, candidates: torch.Tensor | None = None):
    """Yield (users, top-k items, held-out matrix) per user chunk of ``split`` (of this rank's
    share of the users under ``dist``)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    was = model.training
    model.eval()
    user_repr, item_repr = representations if representations is not None else model()
    model.train(was)
    if candidates is None:
        candidates = data.candidate_items
    excluded = ("train",) if split == "valid" else ("train", "valid")
    exclude = PairIndex(data.n_users, *_pairs(data, excluded))
    truth = PairIndex(data.n_users, *_pairs(data, (split,)))
    users = eval_users(data, split, max_users, seed)
    if dist is not None:
        users = users[slice(*dist.shard(users.numel()))]
    for lo in range(0, users.numel(), chunk_users):
        chunk = users[lo: lo + chunk_users]
        top, scores = rank_top_k(user_repr, item_repr, chunk, exclude, k, candidates)
        # one column more than items: "no item", never relevant — where fewer than k items
        # were rankable (candidates), the top-k's tail holds excluded items and hits nothing
        relevant = torch.zeros(chunk.numel(), data.n_items + 1, dtype=torch.bool,
                               device=top.device)
        row, col = truth.rows_cols(chunk)
        relevant[row, col] = True
        top = torch.where(torch.isneginf(scores), data.n_items, top)
        yield chunk, top, relevant


def _accumulate(sums: dict[str, float], part: dict[str, float]) -> None:
    for key, value in part.items():
        sums[key] = sums.get(key, 0.0) + value


def _sum_keys(ks) -> list[str]:
    """The keys of :func:`model.metrics.metric_sums`, in its order."""
    return ["users", *(f"{name}@{k}" for name in METRIC_FUNCTIONS for k in ks)]


def _all_reduced(sums: dict[str, float], ks, dist: DistContext) -> dict[str, float]:
    """Metric sums over every rank (a rank without users contributes zeros)."""
    reduced = dist.all_reduce_sums({key: sums.get(key, 0.0) for key in _sum_keys(ks)})
    return {key: reduced[key] for key in _sum_keys(ks)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: RecData, split: str = "valid", ks=KS,
             chunk_users: int = 2048, max_users: int | None = None, seed: int = 0,
             representations: tuple[torch.Tensor, torch.Tensor] | None = None,
             dist: DistContext | None = None, candidates: torch.Tensor | None = None
             ) -> dict[str, float]:
    """Mean metrics over the users of ``split`` ("valid" or "test") with held-out items.

    ``representations`` lets the caller reuse one forward pass for several splits; ``dist``:
    this rank ranks its share of the users, the sums are all-reduced (every rank must call);
    ``candidates``: a boolean (n_items,) mask, the only items ranked (held-out items outside
    it can never be retrieved, so Recall counts them as misses); default
    ``data.candidate_items`` (None: every item).
    """
    sums: dict[str, float] = {}
    for _, top, relevant in _ranked_chunks(model, data, split, max(ks), chunk_users,
                                           max_users, seed, representations, dist, candidates):
        _accumulate(sums, metric_sums(relevant.gather(1, top), relevant.sum(1), ks))
    if dist is not None:
        sums = _all_reduced(sums, ks, dist)
    return summarize(sums)


#: Share of items (the most popular by TRAIN interactions) in the "items:head" slice.
HEAD_SHARE = 0.2
#: The slices of :func:`evaluate_slices`.
SLICES = ("all", "items:head", "items:tail", "users:q1", "users:q2", "users:q3", "users:q4")


def slice_groups(data: RecData) -> tuple[torch.Tensor, torch.Tensor]:
    """(head item mask (n_items,), user activity quartile 1..4 (n_users,)).

    Head = the 20 % most interacted items of TRAIN (ties broken by item id); quartiles of the
    users' TRAIN interaction counts, 1 = least active (users without train pairs are in 1).
    """
    item_count = torch.bincount(data.train_item, minlength=data.n_items)
    order = torch.sort(item_count, descending=True, stable=True).indices
    head = torch.zeros(data.n_items, dtype=torch.bool, device=item_count.device)
    head[order[: max(1, round(HEAD_SHARE * data.n_items))]] = True
    user_count = torch.bincount(data.train_user, minlength=data.n_users).double()
    bounds = torch.quantile(user_count, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64,
                                                     device=user_count.device))
    quartile = torch.bucketize(user_count, bounds, right=True) + 1
    return head, quartile


@torch.no_grad()
def evaluate_slices(model: torch.nn.Module, data: RecData, split: str = "test", ks=KS,
                    chunk_users: int = 2048,
                    representations: tuple[torch.Tensor, torch.Tensor] | None = None,
                    dist: DistContext | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the same full ranking restricted to slices, one pass.

    ``items:head`` / ``items:tail``: only the held-out items among the head (tail) items count
    as relevant — Recall@k is then "what share of a user's held-out tail items reached the top
    k" — averaged over users with at least one such item; ``users:q1`` … ``users:q4``: the
    users of each TRAIN-activity quartile. ``all`` equals :func:`evaluate`. ``dist``: as in
    :func:`evaluate` (one all-reduce of every slice's sums).
    """
    head, quartile = slice_groups(data)
    head = torch.cat([head, head.new_zeros(1)])  # the "no item" column of _ranked_chunks
    sums: dict[str, dict[str, float]] = {}
    for chunk, top, relevant in _ranked_chunks(model, data, split, max(ks), chunk_users,
                                               None, 0, representations, dist):
        groups = {"all": relevant,
                  "items:head": relevant & head[None, :],
                  "items:tail": relevant & ~head[None, :]}
        for name, rel in groups.items():
            _accumulate(sums.setdefault(name, {}), metric_sums(rel.gather(1, top), rel.sum(1), ks))
        hits, count = relevant.gather(1, top), relevant.sum(1)
        for q in range(1, 5):
            rows = quartile[chunk] == q
            _accumulate(sums.setdefault(f"users:q{q}", {}),
                        metric_sums(hits[rows], count[rows], ks))
    if dist is not None:  # one all-reduce for every slice
        reduced = dist.all_reduce_sums({f"{name}\t{key}": sums.get(name, {}).get(key, 0.0)
                                        for name in SLICES for key in _sum_keys(ks)})
        sums = {name: {key: reduced[f"{name}\t{key}"] for key in _sum_keys(ks)}
                for name in SLICES}
    return {name: summarize(values) for name, values in sums.items()}


@torch.no_grad()
def recommend(model: torch.nn.Module, data: RecData, k: int = 20, chunk_users: int = 2048
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k unseen items for every user: (user_id, item_id, score), each (n_users · k,),
    ordered by user then rank. "Seen" = every pair of the split table (train, valid, test)."""
    was = model.training
    model.eval()
    user_repr, item_repr = model()
    model.train(was)
    seen = PairIndex(data.n_users, *_pairs(data, ("train", "valid", "test")))
    users_all = torch.arange(data.n_users, device=user_repr.device)
    out_items, out_scores = [], []
    for lo in range(0, data.n_users, chunk_users):
        top, values = rank_top_k(user_repr, item_repr, users_all[lo: lo + chunk_users], seen, k)
        out_items.append(top)
        out_scores.append(values)
    items = torch.cat(out_items)
    scores = torch.cat(out_scores)
    users = users_all[:, None].expand_as(items).reshape(-1)
    items, scores = items.reshape(-1), scores.reshape(-1)
    keep = torch.isfinite(scores)  # a user who has seen almost everything gets fewer than k
    return users[keep], items[keep], scores[keep]
