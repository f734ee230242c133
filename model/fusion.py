"""The Bi-Transformer multimodal fusion (paper section 4.2.2): modality attention over the
items' neighbour sequences, fusion blocks, and the packing that computes only the tokens read.

Equation numbers refer to the paper summary's section 4 (docs/MODEL.md maps each one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

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
                 n_blocks: int, intra_layers: int, dropout: float, mode: str = "bi",
                 checkpoint: bool = False) -> None:
        super().__init__()
        self.checkpoint = checkpoint  # recompute each block in backward (item_outputs only)
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
        recompute = self.checkpoint and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            if recompute:  # keeps the block's input only; the same dropout masks on recompute
                h = torch.utils.checkpoint.checkpoint(block.packed, h, tokens, last,
                                                      use_reentrant=False)
            else:
                h = block.packed(h, tokens, last=last)
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
