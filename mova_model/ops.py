"""The ``operations`` namespaces: plain torch.nn layers (``torch_ops``) and fp8-weight layers (``fp8_ops``).

Every network takes ``operations=`` (ComfyUI passes ``comfy.ops.manual_cast`` and friends,
which have the same class names and constructor arguments) so that the host can swap in
layers that cast stored weights or stream them in low-VRAM mode.
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

torch_ops = SimpleNamespace(
    Linear=nn.Linear,
    Conv1d=nn.Conv1d,
    Conv3d=nn.Conv3d,
    ConvTranspose1d=nn.ConvTranspose1d,
    LayerNorm=nn.LayerNorm,
)


class Fp8Linear(nn.Linear):
    """nn.Linear whose ``weight`` may be stored in fp8 with a float32 per-tensor ``scale_weight``
    (ComfyUI's scaled-fp8 keys ``X.weight`` + ``X.scale_weight``); computes in the input's dtype:
    x [..., in] -> [..., out] with W = weight * scale_weight cast to x.dtype.

    ``scale_weight`` is None (no state-dict key) until the loader makes the layer an fp8 layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_parameter("scale_weight", None)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as ``dtype`` [out, in]: fp8 values times the scale, rounded once to ``dtype``."""
        weight = self.weight.to(dtype)
        if self.scale_weight is None:
            return weight
        return weight * self.scale_weight.to(device=weight.device, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.scale_weight is not None or weight.dtype != x.dtype:
            weight = self.dequantized_weight(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)


fp8_ops = SimpleNamespace(
    Linear=Fp8Linear,
    Conv1d=nn.Conv1d,
    Conv3d=nn.Conv3d,
    ConvTranspose1d=nn.ConvTranspose1d,
    LayerNorm=nn.LayerNorm,
)
