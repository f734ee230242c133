"""The one declaration of every model and training setting.

:class:`ModelConfig` holds what a model is built from; :class:`TrainSettings` extends it with
the knobs of the trainer. Both are plain frozen dataclasses (the pure packages import no
Dagster); each field's help text sits in its ``metadata["doc"]``, from which the Dagster run
config (``assets.training.TrainConfig``) is generated, so there is nothing to keep in sync by
hand. Validation and the resolution of per-variant defaults happen here, once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

VARIANTS: tuple[str, ...] = ("full", "kgat", "no_visual", "no_text", "t2v", "v2t",
                             "bprmf", "lightgcn", "cke")
#: Multi-KG4Rec variants: the modalities they use and the cross-attention mode.
FUSION_VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "full": (("visual", "text"), "bi"),
    "no_visual": (("text",), "bi"),
    "no_text": (("visual",), "bi"),
    "t2v": (("visual", "text"), "t2v"),
    "v2t": (("visual", "text"), "v2t"),
}
#: The paper's propagation (KGAT's): knowledge-aware attention + Bi-Interaction over the
#: collaborative KG. The baseline ``kgat`` keeps it by default.
PAPER_PROPAGATION = {"graph": "ckg", "aggregator": "bi", "edge_weight": "attention"}
#: Ours, the default of the Multi-KG4Rec variants: LightGCN-style propagation over the
#: user-item graph; the KG reaches the model through the fused BFS sequences (MODEL.md).
IMPROVED_PROPAGATION = {"graph": "interactions", "aggregator": "light",
                        "edge_weight": "symmetric"}

#: Allowed values of the string settings.
CHOICES: dict[str, tuple[str, ...]] = {
    "graph": ("ckg", "interactions"),
    "aggregator": ("bi", "light"),
    "edge_weight": ("attention", "symmetric"),
    "aggregator_init": ("identity", "xavier"),
    "cold_items": ("propagated", "content", "no_id"),
    "kg_loss": ("joint", "alternate", "none"),
    "negative_items": ("all", "train"),
    "bpr_pairs": ("interactions", "users"),
    "keep_epoch": ("best", "last"),
    "precision": ("auto", "bf16", "fp32"),
}
KG_LOSS_MODES = CHOICES["kg_loss"]
PRECISIONS = CHOICES["precision"]

#: ``preset: paper`` — the paper's model as published (section 4.2, Table 1 settings) with
#: none of our additions: KGAT's propagation (knowledge-aware attention π + Bi-Interaction over
#: the collaborative KG, Xavier-initialised W₁/W₂, no per-layer normalisation in the equations),
#: outputs 64/32/16 concatenated, L_KG (TransR) trained jointly, a 3-block × 8-head
#: Bi-Transformer, one Xavier table for all node ids, and no ID–content alignment loss. What the
#: paper leaves open keeps the reading of docs/MODEL.md ("Ambiguities"): the content gate g_m,
#: the type/hop position embeddings and the intra-modal layer.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"graph": "ckg", "aggregator": "bi", "edge_weight": "attention",
              "aggregator_init": "xavier", "normalize_layers": False, "segment_init": False,
              "embed_dim": 64, "relation_dim": 64, "layer_sizes": (64, 32, 16),
              "kg_loss": "joint", "n_blocks": 3, "n_heads": 8, "intra_layers": 1,
              "align_weight": 0.0, "mess_dropout": 0.1},
}

#: Settings that change neither the model nor its training (left out of the config hash).
NOT_HASHED = ("device", "eval_chunk", "evaluate_test", "fusion_checkpoint")


def default_propagation(variant: str) -> dict[str, str]:
    return dict(IMPROVED_PROPAGATION if variant in FUSION_VARIANTS else PAPER_PROPAGATION)


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with its help text (shown in the Dagster UI and ``--help``)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    return field(default=default, metadata={"doc": doc})


def setting_docs(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in fields(cls)}


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses resolve their defaults once


@dataclass(frozen=True)
class ModelConfig:
    """What a model is built from (``model.recommenders.build_model``)."""

    variant: str = setting("full", f"One of {list(VARIANTS)}.")
    embed_dim: int = setting(64, "ID / modality embedding size.")
    relation_dim: int = setting(64, "TransR relation space size k.")
    layer_sizes: tuple[int, ...] = setting((64, 32, 16), "Output size of each propagation layer.")
    mess_dropout: float = setting(0.1, "Message dropout of the propagation.")
    n_heads: int = setting(8, "Attention heads of the Bi-Transformer.")
    n_blocks: int = setting(3, "Cross-modal blocks of the Bi-Transformer.")
    intra_layers: int = setting(1, "Intra-modal (visual/text transformer) layers.")
    ffn_dim: int = setting(128, "Hidden size of the transformer FFN.")
    fusion_checkpoint: bool = setting(False, "Recompute each fusion block's activations in the "
                                      "backward pass (torch.utils.checkpoint) instead of "
                                      "keeping them: the same function and gradients, about a "
                                      "third more fusion compute, and the fusion's training "
                                      "memory no longer grows with tokens × blocks (for "
                                      "catalogues far past ML-1M: docs/SCALING.md).")
    attn_dropout: float = setting(0.0, "Dropout on the attention weights (about 4x slower "
                                  "attention on CPU).")
    seq_len: int | None = setting(None, "First positions of each BFS sequence S_i used "
                                  "(None: all that neighbor_sequences built).")
    max_hop: int = setting(4, "Hop embeddings for hops 0..max_hop (deeper hops share the last).")
    content_gate: float = setting(0.1, "Initial scale of the fused content added to the ID seed.")
    normalize_layers: bool = setting(False, "L2-normalise each propagation layer (KGAT's code).")
    aggregator_init: str = setting("identity", "Bi-Interaction init: identity (W1 = I, W2 = 0) "
                                   "or xavier (KGAT).")
    segment_init: bool = setting(True, "Xavier per block (items / entities / users) of the node "
                                 "table.")
    align_weight: float = setting(0.01, "Weight of the ID-content contrastive alignment "
                                  "(InfoNCE); 0 turns it off.")
    align_temperature: float = setting(0.2, "Temperature of the alignment InfoNCE.")
    # bounds the O(rows²) cost of the InfoNCE at the large batches the paper's grid allows
    align_max_rows: int = setting(2048, "InfoNCE over at most this many items (users) per step "
                                  "(a seeded sample of the batch's).")
    cold_items: str = setting("propagated", "Items without a train pair: 'propagated' (what the "
                              "graph gives them: little), 'content' (their aligned content view, "
                              "scaled to the warm items' mean norm; needs the light aggregator and "
                              "align_weight > 0) or 'no_id' (their ID embedding, never trained, "
                              "is left out: the fused content seed alone is propagated).")
    graph: str | None = setting(None, "Propagation graph: ckg (collaborative KG, paper) or "
                                "interactions (user-item). Default: per variant (docs/MODEL.md).")
    aggregator: str | None = setting(None, "bi: Bi-Interaction layers (paper); light: "
                                     "LightGCN-style mean of layers. Default: per variant.")
    edge_weight: str | None = setting(None, "attention: knowledge-aware π softmax (paper); "
                                      "symmetric: D^-1/2 A D^-1/2. Default: per variant.")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        # resolve the variant's defaults so that hashes and checkpoints name real values
        self._resolve_defaults()
        _set(self, "layer_sizes", tuple(int(s) for s in self.layer_sizes))
        if not self.layer_sizes:
            raise ValueError("layer_sizes must name at least one layer")
        for name, allowed in CHOICES.items():
            if hasattr(self, name) and getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def _resolve_defaults(self) -> None:
        for name, value in default_propagation(self.variant).items():
            if getattr(self, name) is None:
                _set(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layer_sizes": list(self.layer_sizes)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """From stored settings; keys this version does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class TrainSettings(ModelConfig):
    """Every knob of one training run: the model's config and the trainer's."""

    preset: str | None = setting(None, f"Named bundle of settings, one of {sorted(PRESETS)}: "
                                 "'paper' = the published model without our additions "
                                 "(docs/MODEL.md). Fields set to non-default values win.")
    epochs: int = setting(200, "Maximum epochs (each covers every train pair).")
    batch_size: int = setting(2048, "BPR triples per step (paper grid: 1024/5120/10240).")
    lr: float = setting(5e-3, "Adam learning rate (paper grid 1e-4 … 1e-2).")
    reg: float = setting(1e-5, "λ of the BPR loss's λ‖θ‖² on the batch's layer-0 embeddings.")
    kg_l2: float = setting(1e-5, "L2 weight inside the TransR loss (KGAT).")
    kg_loss: str | None = setting(None, f"How L_KG joins L_CF: {list(KG_LOSS_MODES)} (alternate: "
                                  "KGAT's two phases). Default: joint where KG embeddings reach "
                                  "the score (graph=ckg, cke), else none.")
    patience: int = setting(10, "Early stopping: evaluations without a better validation "
                            "Recall@20.")
    eval_every: int = setting(1, "Validate every this many epochs.")
    seed: int = setting(2020, "Seed of initialisation, sampling and dropout.")
    device: str = setting("auto", "auto (cuda when available), cpu or cuda.")
    deterministic: bool = setting(False, "torch deterministic algorithms.")
    max_users_eval: int | None = setting(None, "Cap on validation users (the test uses all).")
    eval_chunk: int = setting(2048, "Users scored per chunk on the device.")
    max_seconds: float | None = setting(None, "Training time cap (stops keeping the best epoch).")
    negative_items: str = setting("all", "BPR negatives drawn from 'all' items or only 'train' "
                                  "items (the catalogue at training time; use it for cold-item "
                                  "splits).")
    bpr_pairs: str = setting("interactions", "How an epoch's BPR (user, positive) pairs are drawn: "
                             "'interactions' = every train pair once, shuffled; 'users' = as "
                             "many draws of a uniformly chosen user with one of its train items "
                             "(the sampler of KGAT/NGCF's code: every user weighs the same, as "
                             "in the per-user mean of the metrics).")
    keep_epoch: str = setting("best", "Whose weights the run ends with: 'best' = the best "
                              "validation epoch (early stopping); 'last' = the last of exactly "
                              "`epochs` epochs, no validation (a refit on train+valid with the "
                              "epoch count validation chose: bench/tune.py --refit).")
    precision: str = setting("auto", "bf16 autocast of the matmuls: auto (CUDA with bf16; CPUs "
                             "with native bf16 for the fusion variants), bf16 (wherever "
                             "possible), fp32.")
    evaluate_test: bool = setting(True, "Evaluate the best epoch on the test split (False: "
                                  "validation only, for searches: the test split is read only "
                                  "for the configuration a search chooses).")

    def __post_init__(self) -> None:
        _set(self, "layer_sizes", tuple(int(s) for s in self.layer_sizes))  # stored as a list
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
            defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
            for name, value in PRESETS[self.preset].items():
                if getattr(self, name) == defaults[name]:
                    _set(self, name, value)
        super().__post_init__()
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("epochs, batch_size and eval_every must be >= 1")

    def _resolve_defaults(self) -> None:
        super()._resolve_defaults()
        if self.kg_loss is None:
            _set(self, "kg_loss", "none" if self.graph == "interactions" else "joint")

    def model_config(self) -> ModelConfig:
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})

    def config_hash(self) -> str:
        """Hash of everything that changes the result (not the device or the eval chunk)."""
        keep = {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]
