"""The content-only baseline: item–item cosine similarity of content features, no training.

score(u, i) = Σ_{j ∈ train(u)} cos(x_i, x_j) / |train(u)| = ⟨mean_j x̂_j, x̂_i⟩ with x̂ the
L2-normalised feature vectors of one modality (the text embeddings offline). It needs no
interaction of item i at all, which is what makes it the reference for cold items: a
collaborative model has nothing but its initialisation for an item never seen in training.
Items (and users) without the modality get a zero vector and hence score 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.data import RecData


class ContentSimilarity(nn.Module):
    """Returns (user profile, item vector) tables like a trained recommender's forward, so that
    :func:`model.evaluate.evaluate` and ``recommend`` rank with it unchanged."""

    def __init__(self, data: RecData, modality: str = "text") -> None:
        super().__init__()
        if modality not in data.features:
            raise ValueError(f"content baseline: the data has no {modality!r} features "
                             f"(have: {sorted(data.features) or 'none'})")
        features = data.features[modality]
        items = torch.zeros(data.n_items, features.dim, device=features.vectors.device)
        own = features.entity_ids < data.n_items  # item rows of the entity feature table
        items[features.entity_ids[own]] = F.normalize(features.vectors[own].float(), dim=1)
        profile = torch.zeros(data.n_users, features.dim, device=items.device)
        profile.index_add_(0, data.train_user, items[data.train_item])
        count = torch.bincount(data.train_user, minlength=data.n_users).clamp(min=1)
        self.register_buffer("user_table", profile / count[:, None])
        self.register_buffer("item_table", items)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_table, self.item_table
