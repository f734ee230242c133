"""The baselines of the paper's tables: BPR-MF, LightGCN and CKE (KGAT is MultiKG4Rec without
modality graphs, in :mod:`model.multikg4rec`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.data import RecData
from model.layers import TransR, normalized_bipartite
from model.recommender_base import Recommender, TransRLossMixin, xavier_embedding


class BPRMF(Recommender):
    def __init__(self, config: ModelConfig, data: RecData) -> None:
        super().__init__(config, data)
        self.user = xavier_embedding(data.n_users, config.embed_dim)
        self.item = xavier_embedding(data.n_items, config.embed_dim)

    def forward(self):
        return self.user.weight, self.item.weight

    def regularized_embeddings(self, users, items):
        return [self.user(users), self.item(items)]

    def bpr_loss(self, users, pos, neg):
        u, i, j = self.user(users), self.item(pos), self.item(neg)
        bpr = F.softplus((u * j).sum(1) - (u * i).sum(1)).mean()
        reg = u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()
        return bpr, reg / (2 * users.shape[0])


class LightGCN(Recommender):
    """He et al. 2020: e^(l+1) = D^-½ A D^-½ e^(l); representation = mean over layers 0..L."""

    def __init__(self, config: ModelConfig, data: RecData) -> None:
        super().__init__(config, data)
        self.n_layers = len(config.layer_sizes)
        self.embedding = xavier_embedding(data.n_users + data.n_items, config.embed_dim)
        self.adjacency = normalized_bipartite(data.n_users, data.n_items, data.train_user,
                                              data.train_item).to(data.device)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        device = self.embedding.weight.device
        if self.adjacency.csr.device != device:
            self.adjacency = self.adjacency.to(device)
        return out

    def forward(self):
        x = self.embedding.weight
        total = x.float()
        for _ in range(self.n_layers):
            x = self.adjacency @ x
            total = total + x
        total = total / (self.n_layers + 1)
        return total[: self.n_users], total[self.n_users:]

    def regularized_embeddings(self, users, items):
        return [self.embedding(users), self.embedding(items + self.n_users)]


class CKE(TransRLossMixin, Recommender):
    """Zhang et al. 2016 (adapted): item = η_i + v_i (TransR entity) + Σ_m proj_m(feature_i)."""

    uses_kg = True

    def __init__(self, config: ModelConfig, data: RecData) -> None:
        super().__init__(config, data)
        d = config.embed_dim
        self.user = xavier_embedding(data.n_users, d)
        self.item = xavier_embedding(data.n_items, d)
        self.node_embedding = xavier_embedding(data.n_entities, d)
        self.transr = TransR(2 + 2 * data.n_relations, d, config.relation_dim)
        self.modalities = [m for m in ("visual", "text") if m in data.features]
        self.proj = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(data.features[m].dim, d), nn.LeakyReLU())
            for m in self.modalities})
        for m in self.modalities:
            f = data.features[m]
            item_rows = f.row[: data.n_items]
            self.register_buffer(f"{m}_vectors", f.vectors, persistent=False)
            self.register_buffer(f"{m}_item_rows", item_rows, persistent=False)

    def forward(self):
        items = self.item.weight + self.node_embedding.weight[: self.n_items]
        for m in self.modalities:
            rows = getattr(self, f"{m}_item_rows")
            has = rows >= 0
            content = self.proj[m](getattr(self, f"{m}_vectors"))
            add = torch.zeros_like(items)
            add[has] = content[rows[has]].to(add.dtype)
            items = items + add
        return self.user.weight, items

    def regularized_embeddings(self, users, items):
        return [self.user(users), self.item(items)]
