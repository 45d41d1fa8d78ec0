"""The one attention entry point: every attention in MOVA goes through ``attention``."""

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Unmasked multi-head attention: q [B,Lq,H*D], k/v [B,Lk,H*D] -> [B,Lq,H*D]."""
    b, lq, c = q.shape
    d = c // num_heads
    q = q.view(b, lq, num_heads, d).transpose(1, 2)
    k = k.view(b, k.shape[1], num_heads, d).transpose(1, 2)
    v = v.view(b, v.shape[1], num_heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, c)
