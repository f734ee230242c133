"""The samplers of training: BPR negatives and corrupted TransR tails, vectorised rejection
against sorted keys of the true pairs (triples), drawn from one seeded generator."""

from __future__ import annotations

import torch

from model.data import RecData


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
