"""Multi-KG4Rec, its ablations and the baselines, behind one small interface.

Every model maps a :class:`model.data.RecData` to user and item representations whose inner
product is the score ŷ(u, i) (eq. 4.2.4). The trainer only calls:

* ``refresh_attention()`` — once per epoch, without gradient (KGAT's attention update);
* ``forward()`` → ``(user_repr (n_users, D), item_repr (n_items, D))``;
* ``bpr_loss(users, pos, neg)`` → ``(bpr, reg)``;
* ``kg_loss(head, relation, tail, corrupt_tail)`` when ``uses_kg`` (TransR, eq. L_KG);
* ``align_loss(users, pos, neg)`` — an auxiliary loss of the last batch (zero by default).

Variants (``ModelConfig.variant``; the paper's Tables 2–4). The Multi-KG4Rec variants default
to our propagation (LightGCN-style over the user-item graph, :data:`IMPROVED_PROPAGATION`),
``kgat`` to the paper's (:data:`PAPER_PROPAGATION`); docs/MODEL.md says why.

====================  ==========================================================================
``full``              Multi-KG4Rec: Bi-Transformer fusion (both directions) + one propagated
                      single-modal graph per modality present, visual ‖ text
``no_visual``         w/o v: text graph only      ``no_text``  w/o t: visual graph only
``t2v`` / ``v2t``     only text→visual / visual→text cross attention
``kgat``              w/o t&v: KGAT itself (ID embeddings, one graph)
``bprmf``             matrix factorisation with BPR
``lightgcn``          LightGCN (3 layers, mean of layers)
``cke``               CKE: item = ID + TransR entity embedding + projected features
====================  ==========================================================================
"""

from __future__ import annotations

from model.baselines import BPRMF, CKE, LightGCN
from model.config import FUSION_VARIANTS, ModelConfig
from model.data import RecData
from model.multikg4rec import MultiKG4Rec
from model.recommender_base import Recommender

__all__ = [
    "BPRMF",
    "CKE",
    "MODEL_CLASSES",
    "LightGCN",
    "MultiKG4Rec",
    "Recommender",
    "build_model",
]


MODEL_CLASSES: dict[str, type[Recommender]] = {
    "bprmf": BPRMF, "lightgcn": LightGCN, "cke": CKE,
    **{v: MultiKG4Rec for v in ("kgat", *FUSION_VARIANTS)},
}


def build_model(config: ModelConfig, data: RecData) -> Recommender:
    return MODEL_CLASSES[config.variant](config, data)
