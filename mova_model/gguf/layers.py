"""A Linear layer whose weight stays GGUF-quantised in memory and is dequantised on the fly in ``forward``, on
the input's device and in its dtype (only the layer at work holds a float copy, for the duration of its call).

``gguf_operations(base)`` gives an ``operations`` namespace whose Linear is ``base``'s Linear with this behaviour
mixed in: with plain torch layers, or with ComfyUI's ``comfy.ops`` layers (their weight_function / bias_function
lists, which ComfyUI's low-VRAM mode fills with LoRA patches, are applied after the dequantisation). A layer that
holds a float weight (the heads and embeddings the converter keeps in BF16) behaves exactly as ``base``'s.

LoRA on a quantised weight is never merged into the bytes: ``add_weight_patch`` hands the weight a list of
functions (``weight_patches``) applied to the dequantised weight in ``forward``. The list travels with the weight
Parameter (a new Parameter on the same bytes), so dropping that Parameter for the original one removes the LoRA:
that is how ComfyUI's patcher restores weights (``nodes/loaders/comfy_gguf.py``).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .dequant import TYPES, byte_shape, dequantize

OP_NAMES = ("Linear", "Conv1d", "Conv3d", "ConvTranspose1d", "LayerNorm")
PATCHES = "weight_patches"


class GGUFLinearMixin:
    """Mixed in front of an operations family's Linear. ``quant_type`` None: an ordinary layer of that family."""

    quant_type: str | None = None
    quant_shape: tuple[int, ...] | None = None

    def set_quantized(self, raw: torch.Tensor, type_name: str, shape: tuple[int, ...]) -> None:
        """Hold ``raw`` (uint8 [out, bytes per row]) as the weight: ``type_name`` values of ``shape`` [out, in]."""
        if TYPES[type_name].quantized is False:
            raise ValueError(f"{type_name} is a float type, not a quantised one")
        if tuple(shape) != (self.out_features, self.in_features):
            raise ValueError(f"a {tuple(shape)} weight does not fit a Linear({self.in_features}, {self.out_features})")
        if raw.dtype != torch.uint8 or tuple(raw.shape) != byte_shape(tuple(shape), type_name):
            raise ValueError(f"{type_name} bytes of shape {tuple(raw.shape)} do not hold a {tuple(shape)} weight")
        self.weight = nn.Parameter(raw, requires_grad=False)
        self.quant_type, self.quant_shape = type_name, tuple(shape)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The weight as ``dtype`` [out, in] on ``device`` (default: where the bytes are), without LoRA patches."""
        raw = self.weight if device is None else self.weight.to(device)
        if self.quant_type is None:
            return raw.to(dtype)
        return dequantize(raw, self.quant_type, self.quant_shape, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant_type is None:
            return super().forward(x)
        weight = self.weight
        w = dequantize(weight.to(x.device, non_blocking=True), self.quant_type, self.quant_shape, x.dtype)
        for patch in getattr(weight, PATCHES, ()):
            w = patch(w)
        for function in getattr(self, "weight_function", ()):
            w = function(w)
        bias = self.bias
        if bias is not None:
            bias = bias.to(device=x.device, dtype=x.dtype, non_blocking=True)
            for function in getattr(self, "bias_function", ()):
                bias = function(bias)
        return F.linear(x, w.to(x.dtype), bias)

    # ComfyUI's patcher asks a layer for these when it merges patches into a weight (comfy.model_patcher's
    # get_key_weight); nodes/loaders/comfy_gguf.py keeps LoRA off the bytes, these make any other merge correct.
    def convert_weight(self, weight: torch.Tensor, inplace: bool = False, **kwargs) -> torch.Tensor:
        """Bytes (possibly cast to float by the patcher) -> the dequantised float32 weight."""
        if self.quant_type is None or tuple(weight.shape) == self.quant_shape:
            return weight
        return dequantize(weight.to(torch.uint8), self.quant_type, self.quant_shape, torch.float32)

    def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed=None, return_weight=False,
                   **kwargs):
        """A merged float weight replaces the bytes (held in bf16) until the patcher restores the original."""
        merged = weight.to(torch.bfloat16)
        if return_weight:
            return merged
        self.weight = nn.Parameter(merged, requires_grad=False)
        self.quant_type = None


_CLASSES: dict[type, type] = {}


def gguf_linear_class(base: type) -> type:
    """``base`` (an operations family's Linear) with GGUF weights; one class per base."""
    if issubclass(base, GGUFLinearMixin):
        return base
    if base not in _CLASSES:
        _CLASSES[base] = type(f"GGUF{base.__name__}", (GGUFLinearMixin, base), {"__module__": __name__})
    return _CLASSES[base]


def gguf_operations(base) -> SimpleNamespace:
    """``base``'s layers with a Linear that can hold GGUF-quantised weights."""
    ops = {name: getattr(base, name) for name in OP_NAMES if hasattr(base, name)}
    ops["Linear"] = gguf_linear_class(base.Linear)
    name = getattr(base, "__name__", None) or type(base).__name__
    return SimpleNamespace(__name__=f"gguf layers over {name}", **ops)


def quantized_layers(model: nn.Module) -> dict[str, GGUFLinearMixin]:
    """Module name -> the layers of ``model`` that hold a quantised weight."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GGUFLinearMixin) and m.quant_type}


def weight_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape, with the [out, in] shape of each quantised weight (not its byte shape): what
    LoRA files are matched against."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, module in quantized_layers(model).items():
        shapes[f"{name}.weight" if name else "weight"] = module.quant_shape
    return shapes


def add_weight_patch(module: nn.Module, patch) -> None:
    """Apply ``patch`` (dequantised weight -> patched weight) to ``module``'s quantised weight in every forward:
    the module gets a new Parameter on the same bytes carrying the patch after the ones it had."""
    old = module.weight
    carried = nn.Parameter(old.data, requires_grad=False)
    setattr(carried, PATCHES, [*getattr(old, PATCHES, ()), patch])
    module.weight = carried


class LoraDelta:
    """weight + factor * up @ down, computed in float32 on the weight's device and rounded once to its dtype."""

    def __init__(self, up: torch.Tensor, down: torch.Tensor, factor: float):
        self.up, self.down, self.factor = up, down, float(factor)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        up = self.up.to(device=weight.device, dtype=torch.float32)
        down = self.down.to(device=weight.device, dtype=torch.float32)
        return (weight.float() + self.factor * (up @ down)).to(weight.dtype)
