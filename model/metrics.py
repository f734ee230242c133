"""Top-k ranking metrics on hit matrices (pure torch; one row per user).

Every function takes ``hits`` (bool/0-1, shape (B, K), column r = the item ranked r+1 is a
held-out item) and ``n_relevant`` (B,), the user's number of held-out items, and returns a
(B,) float tensor; averaging over users with ``n_relevant > 0`` is the caller's job
(:func:`summarize`).

NDCG is the STANDARD one: IDCG@k is the DCG of an ideal list with ``min(|GT|, k)`` hits on
top. The KGAT reference code computes IDCG from the retrieved hits themselves
(``dcg(sorted(r, reverse=True))``), which makes any list whose hits are all at the top score
1.0 regardless of how many relevant items were missed; :func:`kgat_ndcg_at_k` reproduces that
definition only so tests can show the difference.
"""

from __future__ import annotations

import torch

KS: tuple[int, ...] = (10, 20)
METRICS: tuple[str, ...] = ("recall", "mrr", "ndcg", "hit", "precision")


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def recall_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    found = hits[:, :k].double().sum(1)
    return found / n_relevant.double().clamp(min=1)


def precision_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].double().sum(1) / k


def hit_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].any(1).double()


def mrr_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Reciprocal rank of the first hit within the top k (0 when there is none)."""
    top = hits[:, :k].bool()
    first = torch.argmax(top.int(), dim=1)
    return torch.where(top.any(1), 1.0 / (first.double() + 1.0), torch.zeros_like(first.double()))


def ndcg_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Standard binary NDCG@k: ideal DCG from min(|GT|, k), not from the retrieved hits."""
    disc = _discounts(k, hits.device)
    top = hits[:, :k].double()
    dcg = (top * disc[: top.shape[1]]).sum(1)
    ideal_cum = torch.cumsum(disc, 0)
    n_ideal = n_relevant.long().clamp(min=1, max=k)
    return dcg / ideal_cum[n_ideal - 1]


def kgat_ndcg_at_k(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """The KGAT code's NDCG (ideal DCG from the retrieved hits): for comparison only."""
    disc = _discounts(k, hits.device)
    top = hits[:, :k].double()
    dcg = (top * disc[: top.shape[1]]).sum(1)
    ideal = (torch.sort(top, dim=1, descending=True).values * disc[: top.shape[1]]).sum(1)
    return torch.where(ideal > 0, dcg / ideal.clamp(min=1e-12), torch.zeros_like(dcg))


METRIC_FUNCTIONS = {
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "ndcg": ndcg_at_k,
    "hit": hit_at_k,
    "precision": precision_at_k,
}


def metric_sums(hits: torch.Tensor, n_relevant: torch.Tensor, ks=KS) -> dict[str, float]:
    """Sum of every metric over the rows with n_relevant > 0, plus ``"users"`` (their count).

    Sums (not means) so that user chunks can be accumulated exactly.
    """
    keep = n_relevant > 0
    hits, n_relevant = hits[keep], n_relevant[keep]
    out = {"users": float(keep.sum().item())}
    for name, fn in METRIC_FUNCTIONS.items():
        for k in ks:
            out[f"{name}@{k}"] = float(fn(hits, n_relevant, k).sum().item())
    return out


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Turn accumulated :func:`metric_sums` into means over the evaluated users."""
    users = max(sums.get("users", 0.0), 1.0)
    return {k: v / users for k, v in sums.items() if k != "users"} | {"users": sums.get("users", 0)}
