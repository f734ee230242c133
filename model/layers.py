"""Graph building blocks: sparse propagation, TransR, knowledge attention π, Bi-Interaction.

The Bi-Transformer fusion is in :mod:`model.fusion`.

Equation numbers refer to the paper summary's section 4 (docs/MODEL.md maps each one).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- sparse matmul


class SparseMatrix:
    """A fixed sparse matrix in CSR form with its transpose, for ``A @ X`` with autograd.

    PyTorch's autograd through ``torch.sparse.mm`` on CSR rebuilds the transpose on every
    backward (≈ 8× the forward on CPU); keeping ``Aᵀ`` as a second CSR makes the backward one
    more SpMM. The values carry no gradient (attention weights are refreshed without grad,
    KGAT's schedule), so this is all propagation needs. No dense adjacency is ever built.
    """

    def __init__(self, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor,
                 shape: tuple[int, int]) -> None:
        value = value.detach().float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self.csr = torch.sparse_coo_tensor(torch.stack([row, col]), value, shape
                                               ).coalesce().to_sparse_csr()
            self.csr_t = torch.sparse_coo_tensor(torch.stack([col, row]), value,
                                                 (shape[1], shape[0])).coalesce().to_sparse_csr()
        self.shape = shape

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpMM.apply(x, self.csr, self.csr_t)

    def to(self, device: torch.device | str) -> SparseMatrix:
        out = object.__new__(SparseMatrix)
        out.csr, out.csr_t, out.shape = self.csr.to(device), self.csr_t.to(device), self.shape
        return out


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, csr, csr_t):
        ctx.csr_t = csr_t
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.sparse.mm(csr, x.float())

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(device_type=grad.device.type, enabled=False):
            return torch.sparse.mm(ctx.csr_t, grad.float().contiguous()), None, None


def normalized_bipartite(n_users: int, n_items: int, users: torch.Tensor, items: torch.Tensor
                         ) -> SparseMatrix:
    """LightGCN's ``D^-1/2 A D^-1/2`` over users (0..n_users-1) and items (n_users + i)."""
    n = n_users + n_items
    pairs = torch.unique(users * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    row = torch.cat([users, items + n_users])
    col = torch.cat([items + n_users, users])
    deg = torch.bincount(row, minlength=n).float()
    inv = deg.clamp(min=1).pow(-0.5)
    return SparseMatrix(row, col, inv[row] * inv[col], (n, n))


# --------------------------------------------------------------------------- TransR


class TransR(nn.Module):
    """Relation embeddings e_r and projections W_r shared by the KG loss and the attention.

    g(h, r, t) = ‖W_r e_h + e_r − W_r e_t‖²  (eq. TransR score)
    L_KG = Σ −ln σ(g(h, r, t′) − g(h, r, t))  (eq. L_KG, corrupt tails t′)
    """

    def __init__(self, n_relations: int, entity_dim: int, relation_dim: int) -> None:
        super().__init__()
        self.relation = nn.Parameter(torch.empty(n_relations, relation_dim))
        self.W = nn.Parameter(torch.empty(n_relations, entity_dim, relation_dim))
        nn.init.xavier_uniform_(self.relation)
        for r in range(n_relations):
            nn.init.xavier_uniform_(self.W.data[r])

    def project(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """W_r x for a batch whose rows have relations ``r``: grouped by relation, one dense
        matmul per relation present (no (B, d, k) gather of the matrices)."""
        out = None  # allocated at the first product: under autocast its dtype is bf16
        # unbind once: indexing self.W[rel] per relation would allocate a full-size zero
        # gradient for every relation in the backward pass
        matrices = self.W.unbind(0)
        order = torch.argsort(r)
        r_sorted = r[order]
        rels, counts = torch.unique_consecutive(r_sorted, return_counts=True)
        start = 0
        for rel, count in zip(rels.tolist(), counts.tolist(), strict=True):
            sel = order[start: start + count]
            product = x[sel] @ matrices[rel].to(x.dtype)
            if out is None:
                out = product.new_empty(x.shape[0], self.W.shape[2])
            out[sel] = product
            start += count
        return out if out is not None else x.new_empty(0, self.W.shape[2])

    def loss(self, h: torch.Tensor, t: torch.Tensor, t_neg: torch.Tensor, r: torch.Tensor,
             l2: float) -> torch.Tensor:
        """Mean −ln σ(g(h,r,t′) − g(h,r,t)) + l2 · mean of the squared norms (KGAT's reg)."""
        n = h.shape[0]
        projected = self.project(torch.cat([h, t, t_neg]), torch.cat([r, r, r]))
        ph, pt, pn = projected[:n], projected[n:2 * n], projected[2 * n:]
        er = self.relation[r].to(ph.dtype)
        pos = (ph + er - pt).pow(2).sum(1)
        neg = (ph + er - pn).pow(2).sum(1)
        loss = F.softplus(pos - neg).mean()  # = −ln σ(neg − pos)
        reg = (ph.pow(2).sum(1) + er.pow(2).sum(1) + pt.pow(2).sum(1) + pn.pow(2).sum(1)).mean()
        return loss + l2 * reg / 2


# --------------------------------------------------------------------------- attention π


class RelationGroups:
    """Edges grouped by relation with the distinct nodes of each group, so that W_r is applied
    once per (relation, node) and then gathered per edge (amazon-book has ~80 relations and
    ~200k nodes: projecting every node for every relation would not fit)."""

    def __init__(self, head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor) -> None:
        self.groups: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for rel in torch.unique(relation).tolist():
            idx = (relation == rel).nonzero(as_tuple=True)[0]
            nodes, local = torch.unique(torch.cat([head[idx], tail[idx]]), return_inverse=True)
            m = idx.numel()
            self.groups.append((rel, idx, nodes, local[:m], local[m:]))

    def to(self, device: torch.device | str) -> RelationGroups:
        out = object.__new__(RelationGroups)
        out.groups = [(r, i.to(device), n.to(device), h.to(device), t.to(device))
                      for r, i, n, h, t in self.groups]
        return out


@torch.no_grad()
def knowledge_attention(x: torch.Tensor, head: torch.Tensor, groups: RelationGroups,
                        transr: TransR, n_nodes: int, chunk: int = 1 << 20) -> torch.Tensor:
    """π(h,r,t) = (W_r e_t)ᵀ tanh(W_r e_h + e_r), softmax over each head's edges (PyG).

    Computed without gradient, once per epoch (KGAT's "update attentive A" schedule): the
    propagation then multiplies by a fixed sparse matrix in every batch.
    """
    scores = torch.empty(head.shape[0], device=x.device, dtype=torch.float32)
    x = x.float()
    for rel, idx, nodes, lh, lt in groups.groups:
        proj = x[nodes] @ transr.W[rel].float()
        er = transr.relation[rel].float()
        for lo in range(0, idx.numel(), chunk):
            hi = min(lo + chunk, idx.numel())
            ph, pt = proj[lh[lo:hi]], proj[lt[lo:hi]]
            scores[idx[lo:hi]] = (pt * torch.tanh(ph + er)).sum(1)
    # PyG's segment softmax; imported here because torch_geometric pulls in torch._dynamo
    # (about 2 s) and only the paper's attention propagation needs it
    from torch_geometric.utils import softmax as segment_softmax

    return segment_softmax(scores, head, num_nodes=n_nodes)


# --------------------------------------------------------------------------- propagation


class BiInteractionPropagation(nn.Module):
    """Knowledge-aware propagation with the Bi-Interaction aggregator (eqs. e_N, f_Bi).

    layer l: e_N = Σ_t π(h,r,t) e_t = A_π e;  e' = LeakyReLU(W₁(e + e_N)) + LeakyReLU(W₂(e ⊙ e_N));
    message dropout; the output of each layer is L2-normalised (KGAT) and all layers,
    layer 0 included, are concatenated (layer aggregation, eq. e*).
    """

    def __init__(self, in_dim: int, layer_sizes: Sequence[int], dropout: float,
                 normalize: bool = True, init: str = "xavier") -> None:
        super().__init__()
        dims = [in_dim, *layer_sizes]
        self.W1 = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.W2 = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        for lin in [*self.W1, *self.W2]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        if init == "identity":  # start as LeakyReLU(e + e_N): a residual GCN (see MODEL.md)
            for w1, w2 in zip(self.W1, self.W2, strict=True):
                nn.init.eye_(w1.weight)
                nn.init.zeros_(w2.weight)
        elif init != "xavier":
            raise ValueError(f"init must be 'xavier' or 'identity', got {init!r}")
        self.dropout = nn.Dropout(dropout)
        self.normalize = normalize
        self.out_dim = sum(dims)

    def forward(self, x: torch.Tensor, adjacency: SparseMatrix,
                out_rows: torch.Tensor | None = None,
                out_adjacency: SparseMatrix | None = None) -> torch.Tensor:
        """Representations of the ``out_rows`` nodes (all nodes when None).

        ``out_adjacency`` = the rows ``out_rows`` of ``adjacency``: the last layer is only
        computed where it is read (users and items, not the attribute entities).
        """
        def rows(t: torch.Tensor) -> torch.Tensor:
            return t if out_rows is None else t[out_rows]

        layers = [rows(x)]
        n_layers = len(self.W1)
        for index, (w1, w2) in enumerate(zip(self.W1, self.W2, strict=True)):
            last = index == n_layers - 1 and out_rows is not None and out_adjacency is not None
            neigh = ((out_adjacency if last else adjacency) @ x).to(x.dtype)
            ego = x[out_rows] if last else x
            x = F.leaky_relu(w1(ego + neigh)) + F.leaky_relu(w2(ego * neigh))
            x = self.dropout(x)
            x_out = x if last else rows(x)
            layers.append(F.normalize(x_out, dim=1) if self.normalize else x_out)
        return torch.cat([t.float() for t in layers], dim=1)


class LightPropagation(nn.Module):
    """LightGCN-style propagation over the same weighted graph: e^(l+1) = A e^(l), no weights,
    no non-linearity, output = mean of layers 0..L (an improvement over the Bi-Interaction
    aggregator for collaborative signal; see MODEL.md)."""

    def __init__(self, in_dim: int, n_layers: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor, adjacency: SparseMatrix,
                out_rows: torch.Tensor | None = None,
                out_adjacency: SparseMatrix | None = None) -> torch.Tensor:
        x = x.float()
        total = x if out_rows is None else x[out_rows]
        for index in range(self.n_layers):
            last = index == self.n_layers - 1 and out_rows is not None and out_adjacency is not None
            x = (out_adjacency if last else adjacency) @ x
            total = total + (x if last or out_rows is None else x[out_rows])
        return total / (self.n_layers + 1)
