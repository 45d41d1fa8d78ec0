"""The dual-tower bridge: per-layer cross-attention from each tower to the other.

Keys: ``audio_to_video_conditioners.I.{y_norm, inner.{q,k,v,o,norm_q,norm_k}}`` and
``video_to_audio_conditioners.I.…`` for every interacting layer I.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configs import BridgeConfig
from .dit import Attention
from .fused import rms_rope_half, scaled_residual
from .layers import param_like
from .ops import torch_ops
from .rope import aligned_positions, bridge_rope


class Conditioner(nn.Module):
    """Cross-attention of one tower (q) onto the LayerNormed states of the other (k, v)."""

    def __init__(self, dim: int, kv_dim: int, head_dim: int, eps: float,
                 operations=torch_ops, device=None, dtype=None):
        super().__init__()
        self.num_heads = dim // head_dim
        self.y_norm = operations.LayerNorm(kv_dim, eps=eps, elementwise_affine=True, device=device, dtype=dtype)
        self.inner = Attention(dim, self.num_heads, eps, kv_dim=kv_dim,
                               operations=operations, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_rope=None, y_rope=None) -> torch.Tensor:
        """x [B,Lx,C], y [B,Ly,Cy], ropes (cos, sin) [L,head_dim] -> update for x [B,Lx,C]."""
        inner = self.inner
        y = self.y_norm(y)
        if x_rope is None:
            q, k, v = inner.project(x, y)
        else:  # norm and rotation in one step (one kernel with the fused kernels)
            q, k, v = inner.q(x), inner.k(y), inner.v(y)
            q = rms_rope_half(q, param_like(inner.norm_q.weight, q), inner.norm_q.eps, *x_rope, self.num_heads)
            k = rms_rope_half(k, param_like(inner.norm_k.weight, k), inner.norm_k.eps, *y_rope, self.num_heads)
        return inner.o(inner.attend(q, k, v, self.num_heads))


class DualTowerBridge(nn.Module):
    """Bidirectional audio<->video conditioning applied before the interacting tower layers."""

    def __init__(self, config: BridgeConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        self.config = config
        c = config
        args = dict(head_dim=c.head_dim, eps=c.eps, operations=operations, device=device, dtype=dtype)
        layers = [str(i) for i in c.interaction_layers]
        self.audio_to_video_conditioners = nn.ModuleDict(
            {i: Conditioner(c.visual_hidden_dim, c.audio_hidden_dim, **args) for i in layers}
        )
        self.video_to_audio_conditioners = nn.ModuleDict(
            {i: Conditioner(c.audio_hidden_dim, c.visual_hidden_dim, **args) for i in layers}
        )

    def interacts(self, layer: int) -> bool:
        return str(layer) in self.audio_to_video_conditioners

    def aligned_rope(self, grid: tuple[int, int, int], audio_len: int, video_fps: float, device=None,
                     dtype: torch.dtype = torch.float32):
        """Bridge RoPE tables on the shared time axis, computed in float32 and cast once to ``dtype`` (the
        activations'): ((cos, sin) video [Nv,D], (cos, sin) audio [La,D])."""
        if not self.config.apply_cross_rope:
            return None, None
        video_pos, audio_pos = aligned_positions(grid, audio_len, video_fps, self.config.audio_fps, device=device)
        return tuple(tuple(t.to(dtype) for t in bridge_rope(self.config.head_dim, pos)) for pos in (video_pos, audio_pos))

    def forward(self, layer: int, video: torch.Tensor, audio: torch.Tensor,
                video_rope=None, audio_rope=None, scale: float = 1.0):
        """Both updates read the states from before this layer's exchange: returns (video, audio)."""
        if not self.interacts(layer) or scale == 0:
            return video, audio
        key = str(layer)
        to_video = self.audio_to_video_conditioners[key](video, audio, video_rope, audio_rope)
        to_audio = self.video_to_audio_conditioners[key](audio, video, audio_rope, video_rope)
        return scaled_residual(video, to_video, scale), scaled_residual(audio, to_audio, scale)
