"""GGUF parts in ComfyUI's model patcher: LoRA patches stay off the quantised bytes.

ComfyUI merges a LoRA into a weight when it loads a patched model (``patch_weight_to_device``): it would turn each
quantised weight into a full float one. For the quantised layers of a GGUF part the patcher class made here
instead hands the weight a patch that ComfyUI's own ``comfy.lora.calculate_weight`` applies to the dequantised
weight in every forward (``mova_model.gguf.layers``). The original Parameter goes into the patcher's backup as
ComfyUI's own merges do, so unpatching (another clone loading, the LoRA node unplugged) restores the weight
without the patch. Other weights and low-VRAM loads (LoRA through the layers' weight_function, applied after
the dequantisation) take ComfyUI's usual path.
"""

from __future__ import annotations

import collections

import comfy.lora
import torch
from torch import nn

from ...mova_model.gguf.layers import PATCHES, GGUFLinearMixin

_Backup = collections.namedtuple("Dimension", ["weight", "inplace_update"])  # the shape of ComfyUI's backups
_CLASSES: dict[type, type] = {}


class ComfyLoraPatch:
    """The LoRA patches ComfyUI holds for one weight, applied to its dequantised value (float32 math)."""

    def __init__(self, key: str, patches: list):
        self.key, self.patches = key, list(patches)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return comfy.lora.calculate_weight(self.patches, weight.float(), self.key).to(weight.dtype)


def quantized_layer(model: nn.Module, key: str) -> GGUFLinearMixin | None:
    """The quantised GGUF layer whose weight ``key`` names, or None."""
    module_name, _, leaf = key.rpartition(".")
    if leaf != "weight":
        return None
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    return module if isinstance(module, GGUFLinearMixin) and module.quant_type else None


def _carry_patches(self, key, device_to) -> bool:
    """Give the quantised layer of ``key`` its LoRA patches to apply on the fly; False when ``key`` is no such
    layer's weight (ComfyUI merges it as usual)."""
    layer = quantized_layer(self.model, key)
    if layer is None or key not in self.patches:
        return False
    original = layer.weight
    if key not in self.backup:
        self.backup[key] = _Backup(original, False)  # restored by Parameter: the patch stays behind
    data = original.data if device_to is None else original.data.to(device_to)
    carried = nn.Parameter(data, requires_grad=False)
    setattr(carried, PATCHES, [ComfyLoraPatch(key, self.patches[key])])
    layer.weight = carried
    return True


def gguf_patcher_class(base: type) -> type:
    """``base`` (ComfyUI's model patcher class) applying LoRA to GGUF layers on the fly."""
    if base in _CLASSES:
        return _CLASSES[base]

    class GGUFPatcher(base):
        def patch_weight_to_device(self, key, device_to=None, inplace_update=False, **kwargs):
            if kwargs.get("return_weight") or not _carry_patches(self, key, device_to):
                return super().patch_weight_to_device(key, device_to, inplace_update, **kwargs)
            return None

    GGUFPatcher.__name__ = GGUFPatcher.__qualname__ = f"MovaGGUF{base.__name__}"
    _CLASSES[base] = GGUFPatcher
    return GGUFPatcher
