"""The interface every recommender implements (see :mod:`model.recommenders`), and shared parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.data import RecData


def xavier_embedding(n: int, dim: int, segments: tuple[int, ...] = ()) -> nn.Embedding:
    """Xavier-uniform init; with ``segments`` (row counts) each block of rows is initialised
    as its own (rows, dim) matrix, so that 30k attribute entities do not shrink the scale of
    the user and item rows that share the table."""
    emb = nn.Embedding(max(n, 1), dim)
    start = 0
    for size in (*segments, n - sum(segments)):
        if size > 0:
            nn.init.xavier_uniform_(emb.weight.data[start: start + size])
        start += size
    return emb


class Recommender(nn.Module):
    uses_kg = False

    def __init__(self, config: ModelConfig, data: RecData) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = data.n_users, data.n_items
        self.notes: list[str] = []

    def refresh_attention(self) -> None:
        """Per-epoch work without gradient (attention weights); default: nothing."""

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def regularized_embeddings(self, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        """Layer-0 parameters of a batch, for the λ‖θ‖² term."""
        raise NotImplementedError

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean −ln σ(ŷ(u,i) − ŷ(u,j)), and ½ Σ‖e⁰‖² of the batch's layer-0 embeddings per
        user (the caller multiplies it by λ)."""
        user_repr, item_repr = self()
        u, i, j = user_repr[users].float(), item_repr[pos].float(), item_repr[neg].float()
        bpr = F.softplus((u * j).sum(1) - (u * i).sum(1)).mean()
        reg = sum(t.float().pow(2).sum()
                  for t in self.regularized_embeddings(users, torch.cat([pos, neg])))
        return bpr, reg / (2 * users.shape[0])

    def kg_loss(self, head, relation, tail, corrupt, l2: float) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no KG loss")

    def align_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                   ) -> torch.Tensor:
        """Auxiliary loss of the last ``bpr_loss`` batch (default: none)."""
        return torch.zeros((), device=users.device)

    @torch.no_grad()
    def item_modality_attention(self) -> torch.Tensor | None:
        """(n_items, 2): attention mass of each item on (visual, text) keys; None if no fusion."""
        return None


class TransRLossMixin:
    """TransR over the KG triples (+ inverses), relation ids of :func:`collaborative_edges`."""

    def kg_loss(self, head, relation, tail, corrupt, l2):
        n = head.shape[0]
        rows = self.node_embedding(torch.cat([head, tail, corrupt]))  # one gather, one backward
        return self.transr.loss(rows[:n], rows[n:2 * n], rows[2 * n:], relation, l2)
