"""fp8 weights: which tensors become fp8, per-tensor scaled quantisation, and ComfyUI's scaled-fp8 keys.

Layout (the one ComfyUI's ``scaled_fp8`` files use, so the same file loads there with comfy.ops):
``X.weight`` stored fp8, ``X.scale_weight`` float32 scalar with W = weight * scale_weight, and a
``scaled_fp8`` marker tensor whose dtype names the fp8 format (ComfyUI reads a float32 marker as
e4m3fn). A marker of 2 elements tells ComfyUI to compute in bf16 from the dequantised weight
(no fp8 matrix multiply, no input scales), which is what these files are made for.
"""

from __future__ import annotations

import torch
from torch import nn

from .ops import Fp8Linear

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# safetensors dtype names of the fp8 formats we read.
STORED_FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
MARKER_KEY = "scaled_fp8"
MARKER_DTYPES = {**STORED_FP8, "F32": torch.float8_e4m3fn}  # ComfyUI: a float32 marker means e4m3fn
SCALE_SUFFIX = ".scale_weight"
INPUT_SCALE_SUFFIX = ".scale_input"   # ComfyUI's fp8-matmul input scales; unused when computing in bf16
# Only the big matrices of the transformer blocks and the bridge's conditioners are stored in fp8.
# Biases, norms, modulation tables, the patch/text/time embeddings and the heads stay in bf16: they
# are small (a few % of the bytes) and sensitive (they set the scale of every block's input/output).
FP8_PREFIXES = ("blocks.", "audio_to_video_conditioners.", "video_to_audio_conditioners.")


def is_fp8_target(key: str, shape: tuple[int, ...]) -> bool:
    """True for the 2-D Linear weights inside blocks / conditioners (the tensors fp8 is used for)."""
    return key.endswith(".weight") and len(shape) == 2 and key.startswith(FP8_PREFIXES)


def fp8_scale(tensor: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> torch.Tensor:
    """Per-tensor scale amax / fp8 max (448 for e4m3fn), rounded to a bf16 value so that W = q * s is
    rounded once whatever dtype the product is taken in; 1 for an all-zero tensor. Float32 scalar."""
    amax = tensor.detach().abs().amax().float() if tensor.numel() else torch.zeros(())
    scale = (amax / torch.finfo(fp8_dtype).max).to(torch.bfloat16).float()
    return torch.where(scale > 0, scale, torch.ones_like(scale)).cpu().reshape(())


def quantize_fp8(tensor: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn):
    """(q, scale): q = round(tensor / scale) in ``fp8_dtype`` (same shape, saturated), scale float32 []."""
    if fp8_dtype not in FP8_DTYPES:
        raise ValueError(f"{fp8_dtype} is not an fp8 dtype (use torch.float8_e4m3fn or torch.float8_e5m2)")
    scale = fp8_scale(tensor, fp8_dtype)
    fmax = torch.finfo(fp8_dtype).max
    q = tensor.to(torch.float32, copy=True).div_(scale.to(tensor.device)).clamp_(-fmax, fmax).to(fp8_dtype)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """q * scale as ``dtype`` (computed in float32, rounded once)."""
    out = q.float()
    if scale is not None:
        out = out * scale.to(out.device).float().reshape(())
    return out.to(dtype)


def rounding_bound(source: torch.Tensor, scale: torch.Tensor, fp8_dtype: torch.dtype) -> torch.Tensor:
    """Largest |dequantised - source| round-to-nearest allows, per element (float32, source's shape):
    half a unit in the last place, i.e. |x| 2^-(m+1), or half the smallest subnormal step times scale."""
    info = torch.finfo(fp8_dtype)
    mantissa = {torch.float8_e4m3fn: 3, torch.float8_e5m2: 2}[fp8_dtype]
    half_ulp = 2.0 ** -(mantissa + 1)
    floor = float(scale) * info.smallest_normal * half_ulp
    return source.to(torch.float32, copy=True).abs_().mul_(half_ulp * (1 + 1e-3)).clamp_(min=floor * (1 + 1e-3))


@torch.no_grad()
def quantize_fp8_(model: nn.Module, fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> nn.Module:
    """Store the fp8 targets of ``model`` (see ``is_fp8_target``) in fp8 in place, on their device:
    plain nn.Linear modules become ``Fp8Linear`` (keys ``X.weight`` fp8 + ``X.scale_weight``)."""
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and is_fp8_target(name + ".weight", tuple(m.weight.shape))]
    for name, module in targets:
        q, scale = quantize_fp8(module.weight, fp8_dtype)
        if not isinstance(module, Fp8Linear):
            if type(module) is not nn.Linear:
                raise TypeError(f"{name} is a {type(module).__name__}, not an nn.Linear: cannot store it in fp8")
            new = Fp8Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            new.bias = module.bias
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
            module = new
        module.weight = nn.Parameter(q, requires_grad=False)
        module.scale_weight = nn.Parameter(scale.to(q.device), requires_grad=False)
    return model
