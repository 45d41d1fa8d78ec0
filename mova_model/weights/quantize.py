"""fp8 weights: which tensors become fp8, per-tensor scaled quantisation, and ComfyUI's two fp8 key layouts.

Both layouts store ``X.weight`` in fp8 with one float32 scale per tensor, W = weight * scale:

- ``comfy_quant`` (ComfyUI v0.8.0 and later, today's convention): ``X.weight_scale`` and a per-layer
  ``X.comfy_quant`` uint8 tensor holding JSON such as ``{"format": "float8_e4m3fn"}``; our files add
  ``"full_precision_matrix_mult": true`` (compute in bf16 from the dequantised weight). ComfyUI also
  accepts the layer table as file metadata ``_quantization_metadata`` = ``{"layers": {X: {...}}}``.
- ``scaled_fp8`` (ComfyUI up to v0.3.x; read by every version): ``X.scale_weight`` and a ``scaled_fp8``
  marker tensor whose dtype names the fp8 format (a float32 marker means e4m3fn); a marker of 2 elements
  tells ComfyUI to compute from the dequantised weight (no fp8 matrix multiply, no input scales).
"""

from __future__ import annotations

import json

import torch
from torch import nn

from ..networks.ops import Fp8Linear

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# safetensors dtype names of the fp8 formats we read.
STORED_FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
MARKER_KEY = "scaled_fp8"
MARKER_DTYPES = {**STORED_FP8, "F32": torch.float8_e4m3fn}  # ComfyUI: a float32 marker means e4m3fn
SCALE_SUFFIX = ".scale_weight"
INPUT_SCALE_SUFFIX = ".scale_input"   # ComfyUI's fp8-matmul input scales; unused when computing in bf16
# comfy_quant layout: per-layer weight scale, input scale (unused here) and the JSON format entry
QUANT_SCALE_SUFFIX = ".weight_scale"
QUANT_INPUT_SUFFIX = ".input_scale"
QUANT_CONF_SUFFIX = ".comfy_quant"
QUANT_METADATA = "_quantization_metadata"
QUANT_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
LAYOUTS = ("comfy_quant", "scaled_fp8")
# Per-layer key suffixes that describe a Linear's fp8 weight rather than being weights of the model.
AUX_SUFFIXES = (SCALE_SUFFIX, INPUT_SCALE_SUFFIX, QUANT_SCALE_SUFFIX, QUANT_INPUT_SUFFIX, QUANT_CONF_SUFFIX)
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


def quant_format_name(fp8_dtype: torch.dtype) -> str:
    """'float8_e4m3fn' / 'float8_e5m2': the comfy_quant format name of an fp8 dtype."""
    return next(name for name, dtype in QUANT_FORMATS.items() if dtype == fp8_dtype)


def comfy_quant_entry(fp8_dtype: torch.dtype) -> torch.Tensor:
    """The ``X.comfy_quant`` tensor of one fp8 layer: uint8 [n], JSON bytes; computes from the dequantised weight."""
    conf = {"format": quant_format_name(fp8_dtype), "full_precision_matrix_mult": True}
    return torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)


def read_comfy_quant(tensor: torch.Tensor) -> dict:
    """The JSON dict of an ``X.comfy_quant`` tensor (uint8 [n]); ValueError when it holds no JSON object."""
    conf = json.loads(bytes(tensor.to(torch.uint8).flatten().tolist()).decode("utf-8"))
    if not isinstance(conf, dict):
        raise ValueError(f"expected a JSON object, got {conf!r}")
    return conf


def fp8_entries(module: str, weight: torch.Tensor, scale: torch.Tensor, layout: str) -> dict[str, torch.Tensor]:
    """The state-dict entries of one fp8 Linear ``module`` in ``layout`` ('comfy_quant' or 'scaled_fp8'):
    weight [out, in] fp8 and its float32 scalar scale (plus the JSON entry for comfy_quant)."""
    if layout == "comfy_quant":
        return {module + ".weight": weight, module + QUANT_SCALE_SUFFIX: scale,
                module + QUANT_CONF_SUFFIX: comfy_quant_entry(weight.dtype)}
    if layout == "scaled_fp8":
        return {module + ".weight": weight, module + SCALE_SUFFIX: scale}
    raise ValueError(f"fp8 layout {layout!r} is not one of {', '.join(LAYOUTS)}")


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
