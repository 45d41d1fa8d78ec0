"""ComfyUI's own optimized attention as MOVA's ``comfy`` attention backend (needs ComfyUI).

ComfyUI picks its kernel at start from its flags (--use-sage-attention, --use-flash-attention,
--use-pytorch-cross-attention, ...). ``auto`` prefers it when that choice is a fused kernel (SDPA,
sage, flash, xformers); where ComfyUI falls back to its chunked CPU attention (sub-quadratic or split,
e.g. with --cpu), ``auto`` keeps PyTorch SDPA, which is exact and faster there.
"""

from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention

from ..mova_model.networks.attention import register_attention_backend
from .sampling.spec import COMFY_ATTENTION

FUSED = ("attention_pytorch", "attention_sage", "attention_flash", "attention_xformers")


def _comfy(q, k, v):
    b, lq, heads, d = q.shape
    out = comfy_attention.optimized_attention(q.reshape(b, lq, heads * d), k.reshape(b, k.shape[1], heads * d),
                                              v.reshape(b, v.shape[1], heads * d), heads)
    return out.view(b, lq, heads, d)


def comfy_kernel() -> str:
    """The name of the attention function ComfyUI chose at start."""
    return getattr(comfy_attention.optimized_attention, "__name__", "unknown")


def register() -> None:
    register_attention_backend(COMFY_ATTENTION, _comfy, cpu=True, prefer_in_auto=comfy_kernel() in FUSED)
