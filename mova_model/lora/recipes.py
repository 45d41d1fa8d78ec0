"""The two LoRA recipes of MOVA's official trainers: which Linear layers get a LoRA, and the rank and alpha.

- low-resource trainer (one GPU; ``configs/training/mova_train_low_resource.py``): a layer is chosen when the
  last part of its module path IS one of the names (q, k, v, o, …): the attention projections q, k, v, o of
  every self- and cross-attention of the towers and of every bridge conditioner. Rank 8, alpha 8.
- accelerate trainer (the 8-GPU recipe; ``mova_train_accelerate_8gpu.py``), and MOVA's LoRA inference pipeline:
  a layer is chosen when its WHOLE module path (inside its component) CONTAINS one of the names, except paths
  containing ``time_projection`` or ``time_embedding``. Since ``blocks`` contains an ``o``, every Linear of the
  blocks is chosen: the attention projections and both FFN layers (``blocks.N.ffn.0`` and ``ffn.2``), and the
  bridge conditioners' projections; ``text_embedding`` and ``head`` are not. Rank 16, alpha 16.

Both work on module paths relative to a component (``blocks.0.ffn.0`` in ``video_dit``), the official keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..networks.ops import is_linear

LOW_RESOURCE, ACCELERATE = "low_resource", "accelerate"


@dataclass(frozen=True)
class LayerSelection:
    """How a recipe picks Linear layers by module path: ``exact`` last-name match or ``contains`` on the path."""

    name: str
    names: tuple[str, ...]
    contains: bool                  # True: the whole path contains a name; False: its last part is a name
    exclude: tuple[str, ...] = ()   # paths containing one of these are never chosen

    def chooses(self, path: str) -> bool:
        if any(word in path for word in self.exclude):
            return False
        if self.contains:
            return any(re.match(f".*{re.escape(word)}.*", path) for word in self.names)
        return path.rsplit(".", 1)[-1] in self.names


@dataclass(frozen=True)
class LoraRecipe:
    """One official recipe: its layer selection, rank and alpha, and a line for users."""

    name: str
    layers: LayerSelection
    rank: int
    alpha: float
    summary: str


SELECTIONS = {
    LOW_RESOURCE: LayerSelection(LOW_RESOURCE, ("q", "k", "v", "o", "to_q", "to_k", "to_v", "to_out", "proj"),
                                 contains=False),
    ACCELERATE: LayerSelection(ACCELERATE, ("q", "k", "v", "o", "to_q", "to_k", "to_v", "proj"), contains=True,
                               exclude=("time_projection", "time_embedding")),
}
RECIPES = {
    LOW_RESOURCE: LoraRecipe(LOW_RESOURCE, SELECTIONS[LOW_RESOURCE], 8, 8.0,
                             "official low-resource trainer: q, k, v, o of every attention, rank 8, alpha 8"),
    ACCELERATE: LoraRecipe(ACCELERATE, SELECTIONS[ACCELERATE], 16, 16.0,
                           "official 8-GPU (accelerate) trainer: every Linear of the blocks (attention and FFN) and "
                           "of the bridge conditioners, rank 16, alpha 16"),
}


def selection(name: str) -> LayerSelection:
    """The layer selection called ``name``; a ValueError listing the choices otherwise."""
    if name not in SELECTIONS:
        raise ValueError(f"unknown LoRA layer selection {name!r}: choose {' or '.join(SELECTIONS)}")
    return SELECTIONS[name]


def select_layers(model: nn.Module, layers: str = LOW_RESOURCE) -> list[str]:
    """Module paths of the Linear layers of ``model`` that the recipe's selection ``layers`` puts a LoRA on."""
    chosen = selection(layers)
    return [name for name, module in model.named_modules() if name and is_linear(module) and chosen.chooses(name)]
