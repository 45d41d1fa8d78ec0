"""Small building blocks shared by the towers and the bridge."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMS norm over the last dim with a learned scale (statistics in float32)."""

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # as the official torch.nn.RMSNorm: normalised in float32, rounded to x's dtype, then scaled
        return F.rms_norm(x, (x.shape[-1],), param_like(self.weight, x), self.eps)


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without weights over the last dim: [..., C] -> [..., C]. Like the official nn.LayerNorm
    it runs in the input's dtype; torch's kernels accumulate bf16/fp16 inputs in float32."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN modulation x * (1 + scale) + shift (shift/scale broadcast over tokens)."""
    return x * (1 + scale) + shift


def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal timestep features [B] -> [B, dim] (cos half then sin half), computed in float64."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float64, device=timestep.device) / half
    angles = timestep.to(torch.float64)[:, None] * torch.pow(10000.0, -exponents)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(timestep.dtype)


def param_like(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A raw parameter cast to the dtype/device of the activations it meets."""
    return param.to(device=x.device, dtype=x.dtype)
