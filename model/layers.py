"""Building blocks: sparse propagation, TransR, the Bi-Transformer fusion, Bi-Interaction.

Equation numbers refer to the paper summary's section 4 (docs/MODEL.md maps each one).
"""

from __future__ import annotations

import math
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


# --------------------------------------------------------------------------- Bi-Transformer

#: Which key/value modalities each query modality attends to, per fusion mode.
ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "intra": {"visual": ("visual",), "text": ("text",)},
    "bi": {"visual": ("visual", "text"), "text": ("visual", "text")},
    "t2v": {"visual": ("visual",), "text": ("visual", "text")},  # text queries see images
    "v2t": {"visual": ("visual", "text"), "text": ("text",)},  # visual queries see text
}


class ModalAttention(nn.Module):
    """Multi-head attention over one or two modality streams with per-modality projections.

    head_i^{M_v} = Attn(Q_v, concat(K_v, K_t), concat(V_v, V_t)); head^v = concat(heads) W_o^v.
    Keys are masked where the token is padding or lacks the modality. A query whose every key
    is masked gets a zero update (no NaN from an all −∞ softmax).
    """

    def __init__(self, modalities: Sequence[str], dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} heads")
        self.modalities, self.heads, self.dropout = tuple(modalities), heads, dropout
        self.qkv = nn.ModuleDict({m: nn.Linear(dim, 3 * dim) for m in modalities})
        self.out = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities})

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                route: dict[str, tuple[str, ...]], need_weights: bool = False,
                first_only: bool = False
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``first_only``: only the query at position 0 (the item itself) is computed."""
        q, k, v = {}, {}, {}
        for m in self.modalities:
            q[m], k[m], v[m] = (self._split(t) for t in self.qkv[m](x[m]).chunk(3, dim=-1))
            if first_only:
                q[m] = q[m][:, :, :1]
        out, weights = {}, {}
        for m in self.modalities:
            sources = [s for s in route[m] if s in self.modalities]
            keys = torch.cat([k[s] for s in sources], dim=2)
            values = torch.cat([v[s] for s in sources], dim=2)
            key_valid = torch.cat([valid[s] for s in sources], dim=1)
            any_valid = key_valid.any(1)
            mask = (key_valid | ~any_valid[:, None])[:, None, None, :]
            h = F.scaled_dot_product_attention(
                q[m], keys, values, attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0)
            b, _, n, _ = h.shape
            h = h.transpose(1, 2).reshape(b, n, -1)
            out[m] = self.out[m](h) * any_valid[:, None, None].to(h.dtype)
            if need_weights:  # attention of every query over the concatenated keys, head mean
                logits = q[m] @ keys.transpose(-1, -2) / math.sqrt(q[m].shape[-1])
                logits = logits.float().masked_fill(~mask, float("-inf"))
                w = torch.softmax(logits, dim=-1).mean(1) * any_valid[:, None, None]
                weights[m] = w  # (B, Lq, sum of key lengths), sources in `sources` order
        return out, weights

    def packed(self, h: dict[str, torch.Tensor], tokens: PackedTokens,
               route: dict[str, tuple[str, ...]], last: bool) -> dict[str, torch.Tensor]:
        """:meth:`forward` on kept tokens (see :class:`PackedTokens`): (T_m, d) in, and out
        (T_m, d) per modality, or (B, d) — the position-0 queries only — when ``last``."""
        b, length, heads = tokens.batch, tokens.length, self.heads
        q, k, v = {}, {}, {}
        for m in self.modalities:
            qm, km, vm = self.qkv[m](h[m]).chunk(3, dim=-1)
            k[m], v[m] = (self._split(tokens.pad(m, t)) for t in (km, vm))
            # the last block reads position 0 only: one query per sequence
            q[m] = qm[tokens.first[m]][:, None] if last else qm
        out = {}
        groups: dict[tuple[str, ...], list[str]] = {}
        for m in self.modalities:  # queries that see the same keys share one attention call
            groups.setdefault(tuple(s for s in route[m] if s in self.modalities), []).append(m)
        for sources, queries in groups.items():
            keys = torch.cat([k[s] for s in sources], dim=2)
            values = torch.cat([v[s] for s in sources], dim=2)
            key_valid = torch.cat([tokens.valid[s] for s in sources], dim=1)
            any_valid = key_valid.any(1)
            mask = (key_valid | ~any_valid[:, None])[:, None, None, :]
            qs = [q[m] if last else tokens.pad(m, q[m]) for m in queries]
            result = attention(self._split(torch.cat(qs, dim=1)), keys, values, mask,
                               self.dropout if self.training else 0.0)
            result = result.transpose(1, 2).reshape(b, -1, heads * result.shape[-1])
            for m, part in zip(queries, result.split([t.shape[1] for t in qs], dim=1),
                               strict=True):
                rows = part[:, 0] if last else tokens.unpad(m, part)
                scale = any_valid if last else any_valid[tokens.index[m] // length]
                out[m] = self.out[m](rows) * scale[:, None].to(rows.dtype)
        return out


class FusionBlock(nn.Module):
    """Attention (routed) + residual + LayerNorm, then FFN(ReLU) + residual + LayerNorm."""

    def __init__(self, modalities: Sequence[str], dim: int, heads: int, ffn_dim: int,
                 dropout: float, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.attn = ModalAttention(modalities, dim, heads, dropout)
        self.norm1 = nn.ModuleDict({m: nn.LayerNorm(dim) for m in modalities})
        self.norm2 = nn.ModuleDict({m: nn.LayerNorm(dim) for m in modalities})
        self.ffn = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
            for m in modalities})
        self.drop = nn.Dropout(dropout)

    def forward(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                need_weights: bool = False, first_only: bool = False):
        h, weights = self.attn(x, valid, ROUTES[self.mode], need_weights, first_only)
        out = {}
        for m, xm in x.items():
            y = self.norm1[m]((xm[:, :1] if first_only else xm) + self.drop(h[m]))
            out[m] = self.norm2[m](y + self.drop(self.ffn[m](y)))
        return out, weights

    def packed(self, h: dict[str, torch.Tensor], tokens: PackedTokens, last: bool
               ) -> dict[str, torch.Tensor]:
        """:meth:`forward` on kept tokens; ``last``: position 0 only, (B, d) per modality."""
        a = self.attn.packed(h, tokens, ROUTES[self.mode], last)
        out = {}
        for m, hm in h.items():
            y = self.norm1[m]((hm[tokens.first[m]] if last else hm) + self.drop(a[m]))
            out[m] = self.norm2[m](y + self.drop(self.ffn[m](y)))
        return out


class BiTransformer(nn.Module):
    """Intra-modal transformers (visual, text), then ``n_blocks`` cross-modal blocks.

    The intra layers are the paper's "visual transformer" and "text transformer" (each stream
    attends to itself); the cross blocks let each modality's queries attend over the
    concatenated keys/values of both (``mode="bi"``) or of one direction only (t2v, v2t).

    Two implementations of one function: :meth:`forward` (padded, every position, optional
    attention weights: the definition, and what the attention report reads) and
    :meth:`item_outputs` (what training runs: see its docstring); a test keeps them equal.
    """

    def __init__(self, modalities: Sequence[str], dim: int, heads: int, ffn_dim: int,
                 n_blocks: int, intra_layers: int, dropout: float, mode: str = "bi") -> None:
        super().__init__()
        if mode not in ROUTES:
            raise ValueError(f"fusion mode must be one of {sorted(ROUTES)}, got {mode!r}")
        self.modalities = tuple(modalities)
        self.blocks = nn.ModuleList(
            [FusionBlock(modalities, dim, heads, ffn_dim, dropout, "intra")
             for _ in range(intra_layers)]
            + [FusionBlock(modalities, dim, heads, ffn_dim, dropout, mode)
               for _ in range(n_blocks)])

    def forward(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                need_weights: bool = False, first_only: bool = False):
        """``first_only``: the last block computes position 0 only (all a caller reading the
        item's own output needs: its queries still attend over every key)."""
        weights: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x, w = block(x, valid, need_weights and last, first_only and last)
            weights = w or weights
        return x, weights

    def item_outputs(self, tokens: PackedTokens) -> dict[str, torch.Tensor]:
        """Position-0 outputs (B, d) per modality, computing only what is ever read.

        Exactly :meth:`forward` at position 0 (same parameters, same arithmetic per token),
        but every per-token operation (QKV, output projection, LayerNorm, FFN) runs on the
        *kept* tokens only: positions that lack the modality are masked as keys and never
        queried, so their hidden states are never read (on the ML-1M/ml-100k lakes ~37 % of
        all tokens). Attention runs on padded (B, H, L, d_h) tensors rebuilt per block; when
        two modalities share their keys (mode "bi"), their queries go through one call.
        """
        h = dict(tokens.hidden)
        for i, block in enumerate(self.blocks):
            h = block.packed(h, tokens, last=i == len(self.blocks) - 1)
        return h


class PackedTokens:
    """The kept tokens of a (B, L) batch of sequences, per modality, row-major.

    ``hidden[m]`` (T_m, d): the kept tokens' vectors; ``index[m]`` (T_m,): their flat
    positions ``b * L + pos`` (sorted, position 0 of every sequence always kept, so that
    ``first[m]`` (B,) locates each sequence's own token); ``valid[m]`` (B, L): the key mask.
    """

    def __init__(self, hidden: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                 index: dict[str, torch.Tensor], batch: int, length: int) -> None:
        self.hidden, self.valid, self.index = hidden, valid, index
        self.batch, self.length = batch, length
        self.first = {m: (idx % length == 0).nonzero(as_tuple=True)[0]
                      for m, idx in index.items()}
        self.any_valid = {m: v.any(1) for m, v in valid.items()}

    @staticmethod
    def keep_mask(valid: torch.Tensor) -> torch.Tensor:
        """Tokens that are ever read: the valid ones, and position 0 (the item's query)."""
        keep = valid.clone()
        keep[:, 0] = True
        return keep

    def pad(self, m: str, packed: torch.Tensor) -> torch.Tensor:
        """(T_m, c) → (B, L, c), zeros where the token is not kept."""
        out = packed.new_zeros(self.batch * self.length, packed.shape[1])
        return out.index_copy(0, self.index[m], packed).view(self.batch, self.length, -1)

    def unpad(self, m: str, padded: torch.Tensor) -> torch.Tensor:
        """(B, L, c) → (T_m, c) at the kept positions."""
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.index[m])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
              dropout: float) -> torch.Tensor:
    """softmax(q kᵀ/√d_h + mask) v on (B, H, L, d_h) tensors, by SDPA.

    On the CPU it always runs in fp32, also under bf16 autocast: the fused fp32 kernel never
    materializes the (B, H, L, L) scores, while a bf16 path must (PyTorch's CPU flash
    backward in bf16 is ~6× slower here) and then spends more time converting them between
    dtypes than the matmuls save (measured on ML-1M: bench/train_speed.py).
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                  attn_mask=mask, dropout_p=dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
