"""Wan-style DiT towers: the video experts (3-D patches) and the audio DiT (1-D patches).

State-dict keys match the MOVA release (``patch_embedding``, ``text_embedding.{0,2}``,
``time_embedding.{0,2}``, ``time_projection.1``, ``blocks.N.*``, ``head.*``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..configs import DiTConfig
from ..memory.offload import iter_blocks
from .attention import attention
from .fused import gated_residual, norm_modulate, rms_rope_interleaved
from .layers import RMSNorm, param_like, timestep_sinusoid
from .ops import Fp8Linear, is_linear, torch_ops
from .rope import tower_rope_audio, tower_rope_video


def _casts_weights(layer: nn.Module) -> bool:
    """Whether a Linear casts its stored weight to the input's dtype itself: our Fp8Linear, and comfy.ops
    layers while ``comfy_cast_weights`` is on (manual_cast, low-VRAM loading; they also apply ComfyUI's
    weight patches on the way). comfy.ops layers with it off (disable_weight_init, the unquantised layers of
    mixed_precision_ops) compute with the weight as stored, like a plain nn.Linear."""
    return isinstance(layer, Fp8Linear) or bool(getattr(layer, "comfy_cast_weights", False))


def run_float32(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Linear layers and activations in float32: x [B,in] float32 -> [B,out] float32. Weights of Linears
    that do not cast them themselves are upcast here."""
    for layer in layers:
        if is_linear(layer) and not _casts_weights(layer) and layer.weight.dtype != torch.float32:
            bias = None if layer.bias is None else layer.bias.float()
            x = F.linear(x, layer.weight.float(), bias)
        else:
            x = layer(x)
    return x


class Attention(nn.Module):
    """Multi-head attention with RMS-normed q/k; q from x, k/v from ``context`` (or x)."""

    attend = staticmethod(attention)  # a parallel run swaps in its own per instance (parallel/sequence.py)

    def __init__(self, dim: int, num_heads: int, eps: float, kv_dim: int | None = None,
                 operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.q = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.k = operations.Linear(kv_dim, dim, device=device, dtype=dtype)
        self.v = operations.Linear(kv_dim, dim, device=device, dtype=dtype)
        self.o = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.norm_q = RMSNorm(dim, eps=eps, device=device, dtype=dtype)
        self.norm_k = RMSNorm(dim, eps=eps, device=device, dtype=dtype)

    def project(self, x: torch.Tensor, context: torch.Tensor):
        """q [B,Lq,C], k [B,Lk,C], v [B,Lk,C] with q/k normalised."""
        return self.norm_q(self.q(x)), self.norm_k(self.k(context)), self.v(context)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, rope=None) -> torch.Tensor:
        """x [B,L,C] -> [B,L,C]; ``rope`` (complex table [L, D/2]) rotates q and k (self-attention only)."""
        if rope is None:
            q, k, v = self.project(x, x if context is None else context)
        else:  # norm and rotation in one step (one kernel with the fused kernels)
            q, k, v = self.q(x), self.k(x), self.v(x)
            q = rms_rope_interleaved(q, param_like(self.norm_q.weight, q), self.norm_q.eps, rope, self.num_heads)
            k = rms_rope_interleaved(k, param_like(self.norm_k.weight, k), self.norm_k.eps, rope, self.num_heads)
        return self.o(self.attend(q, k, v, self.num_heads))


class DiTBlock(nn.Module):
    """AdaLN self-attention (gated), text cross-attention on norm3, AdaLN FFN (gated)."""

    def __init__(self, config: DiTConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        dim, eps = config.dim, config.eps
        self.eps = eps
        self.self_attn = Attention(dim, config.num_heads, eps, operations=operations, device=device, dtype=dtype)
        self.cross_attn = Attention(dim, config.num_heads, eps, operations=operations, device=device, dtype=dtype)
        self.norm3 = operations.LayerNorm(dim, eps=eps, elementwise_affine=True, device=device, dtype=dtype)
        self.ffn = nn.Sequential(
            operations.Linear(dim, config.ffn_dim, device=device, dtype=dtype),
            nn.GELU(approximate="tanh"),
            operations.Linear(config.ffn_dim, dim, device=device, dtype=dtype),
        )
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, context: torch.Tensor, t_mod: torch.Tensor, rope) -> torch.Tensor:
        """x [B,L,C], context [B,Lt,C], t_mod [B,6,C] -> [B,L,C]."""
        mod = param_like(self.modulation, t_mod) + t_mod
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.chunk(6, dim=1)
        x = gated_residual(x, gate_sa, self.self_attn(norm_modulate(x, shift_sa, scale_sa, self.eps), rope=rope))
        x = x + self.cross_attn(self.norm3(x), context)
        return gated_residual(x, gate_ff, self.ffn(norm_modulate(x, shift_ff, scale_ff, self.eps)))


class Head(nn.Module):
    """Final LayerNorm, shift/scale from ``modulation`` + time embedding, Linear to patch values."""

    def __init__(self, config: DiTConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        self.eps = config.eps
        out = config.out_dim * math.prod(config.patch_size)
        self.head = operations.Linear(config.dim, out, device=device, dtype=dtype)
        self.modulation = nn.Parameter(torch.zeros(1, 2, config.dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x [B,L,C], t_emb [B,C] -> [B,L,out*prod(patch)]; per-sample modulation (batch-safe)."""
        shift, scale = (param_like(self.modulation, t_emb) + t_emb[:, None, :]).chunk(2, dim=1)
        return self.head(norm_modulate(x, shift, scale, self.eps))


class WanDiT(nn.Module):
    """One tower. Video: x [B,in,T,H,W]; audio: x [B,in,L]. Text states [B,Lt,text_dim]."""

    def __init__(self, config: DiTConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        self.config = config
        dim = config.dim
        conv = operations.Conv3d if config.is_video else operations.Conv1d
        self.patch_embedding = conv(config.in_dim, dim, kernel_size=config.patch_size,
                                    stride=config.patch_size, device=device, dtype=dtype)
        self.text_embedding = nn.Sequential(
            operations.Linear(config.text_dim, dim, device=device, dtype=dtype),
            nn.GELU(approximate="tanh"),
            operations.Linear(dim, dim, device=device, dtype=dtype),
        )
        self.time_embedding = nn.Sequential(
            operations.Linear(config.freq_dim, dim, device=device, dtype=dtype),
            nn.SiLU(),
            operations.Linear(dim, dim, device=device, dtype=dtype),
        )
        self.time_projection = nn.Sequential(nn.SiLU(), operations.Linear(dim, 6 * dim, device=device, dtype=dtype))
        self.blocks = nn.ModuleList(
            [DiTBlock(config, operations=operations, device=device, dtype=dtype) for _ in range(config.num_layers)]
        )
        self.head = Head(config, operations=operations, device=device, dtype=dtype)

    def embed_time(self, timestep: torch.Tensor, dtype: torch.dtype):
        """Timesteps [B] -> (t_emb [B,C], t_mod [B,6,C]) in ``dtype``.

        As the official forward (float32 autocast around the time layers): the sinusoid,
        ``time_embedding`` and ``time_projection`` compute in float32 whatever the weights' dtype (bf16,
        fp16, fp8 layers), and only the results are cast to ``dtype``."""
        sinusoid = timestep_sinusoid(timestep.float(), self.config.freq_dim)
        t_emb = run_float32(self.time_embedding, sinusoid)
        t_mod = run_float32(self.time_projection, t_emb).unflatten(1, (6, self.config.dim))
        return t_emb.to(dtype), t_mod.to(dtype)

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """Text states [B,Lt,text_dim] -> [B,Lt,C]."""
        return self.text_embedding(context)

    def patchify(self, x: torch.Tensor):
        """Latents -> (tokens [B,N,C], grid): grid (f,h,w) for video, (L,) for audio."""
        x = self.patch_embedding(x)
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Head output [B,N,out*prod(patch)] -> latents [B,out,...]."""
        p = self.config.patch_size
        if self.config.is_video:
            return rearrange(x, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)",
                             f=grid[0], h=grid[1], w=grid[2], pf=p[0], ph=p[1], pw=p[2])
        return rearrange(x, "b l (p c) -> b c (l p)", l=grid[0], p=p[0])

    def rope(self, grid: tuple[int, ...], device) -> torch.Tensor:
        """The tower's self-attention RoPE table for a token grid: complex64 [N, head_dim/2]."""
        if self.config.is_video:
            return tower_rope_video(self.config.head_dim, grid, device=device)
        return tower_rope_audio(self.config.head_dim, grid[0], device=device)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The tower alone (no bridge): latents, timesteps [B], text [B,Lt,text_dim] -> velocity."""
        dtype = x.dtype
        t_emb, t_mod = self.embed_time(timestep, dtype)
        ctx = self.embed_text(context.to(dtype))
        tokens, grid = self.patchify(x)
        rope = self.rope(grid, x.device)
        for block in iter_blocks(self):
            tokens = block(tokens, ctx, t_mod, rope)
        return self.unpatchify(self.head(tokens, t_emb), grid)
