"""Build a MOVA component from its weights: detect, construct on the meta device, fill tensor by tensor.

fp8: Linear weights stored in fp8 (our converted files, ComfyUI's scaled-fp8 files with
``X.scale_weight`` and a ``scaled_fp8`` marker, or plain unscaled fp8 files) stay fp8 and compute
in the activations' dtype; ``dtype=torch.float8_e4m3fn`` quantises the fp8 targets of a bf16/fp32
source on load (per-tensor scale amax/448) and loads everything else in bf16; a float ``dtype``
dequantises stored fp8 weights into a plain model.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .dac import weight_from_norm
from .detect import check_kind, detect_config
from .ops import fp8_ops, torch_ops
from .quantize import (FP8_DTYPES, INPUT_SCALE_SUFFIX, MARKER_DTYPES, MARKER_KEY, SCALE_SUFFIX, STORED_FP8,
                       dequantize, is_fp8_target, quantize_fp8)

STORED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
KNOWN_DTYPES = set(STORED_DTYPES) | set(STORED_FP8) | {"I64", "I32", "I16", "I8", "U8", "BOOL", "F64"}


def _is_aux(key: str) -> bool:
    """Scale tensors and the marker: not weights of the model itself."""
    return key == MARKER_KEY or key.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX))


def stored_dtype(ckpt: Checkpoint) -> torch.dtype:
    """The float dtype the non-fp8 weights are stored in (float32 when mixed or not a plain float type)."""
    names = {d for k, d in ckpt.dtypes().items() if not _is_aux(k) and d not in STORED_FP8}
    stored = {STORED_DTYPES.get(name) for name in names}
    return stored.pop() if len(stored) == 1 and None not in stored else torch.float32


def _build(kind: str, config, operations, dtype):
    with torch.device("meta"):
        if kind in ("video_dit", "audio_dit"):
            from .dit import WanDiT
            return WanDiT(config, operations=operations, dtype=dtype)
        if kind == "dual_tower_bridge":
            from .bridge import DualTowerBridge
            return DualTowerBridge(config, operations=operations, dtype=dtype)
        from .dac import DAC
        return DAC(config, operations=operations, dtype=dtype)


def _key_report(name: str, missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:5])})")
    return (
        f"{name} does not match the model its config describes: " + "; ".join(parts)
        + ". The file is incomplete or from another model version: download the component again"
        " (or check that its config.json belongs to these weights)."
    )


def source_shapes(ckpt: Checkpoint, kind: str) -> dict[str, tuple[int, ...]]:
    """Model key -> shape of what the file holds: DAC weight-norm pairs count as one fused weight."""
    shapes = ckpt.shapes()
    if kind == "audio_vae" and any(k.endswith(".weight_g") for k in shapes):
        fused = {k[: -len("_v")]: s for k, s in shapes.items() if k.endswith(".weight_v")}
        return {**{k: s for k, s in shapes.items() if not k.endswith((".weight_g", ".weight_v"))}, **fused}
    return shapes


def model_tensors(pairs, kind: str):
    """(stored key, tensor) pairs -> (model key, tensor): DAC weight-norm pairs fused as w = g * v / ||v||."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in pairs:
        if kind == "audio_vae" and key.endswith((".weight_g", ".weight_v")):
            base, part = key[:-2], key[-1]
            pending.setdefault(base, {})[part] = tensor
            if len(pending[base]) == 2:
                parts = pending.pop(base)
                yield base, weight_from_norm(parts["g"], parts["v"])
            continue
        yield key, tensor


def check_fp8_layout(ckpt: Checkpoint) -> None:
    """Raise a CheckpointError for a marker or a dtype this loader cannot read."""
    dtypes = ckpt.dtypes()
    if MARKER_KEY in dtypes and dtypes[MARKER_KEY] not in MARKER_DTYPES:
        raise CheckpointError(
            f"{ckpt.name} has a '{MARKER_KEY}' marker of dtype {dtypes[MARKER_KEY]}, which names no fp8 format "
            f"this loader knows ({', '.join(sorted(MARKER_DTYPES))}): the file is damaged or of a newer format; "
            "convert the MOVA release again with python -m mova_model.convert."
        )
    unknown = sorted({d for d in dtypes.values() if d not in KNOWN_DTYPES})
    if unknown:
        raise CheckpointError(
            f"{ckpt.name} stores tensors as {', '.join(unknown)}, which this loader cannot read: "
            "use a bf16, fp16, fp32 or fp8 (e4m3fn / e5m2) file, e.g. one made by python -m mova_model.convert."
        )


def _read_scales(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Module name -> float32 scalar scale_weight found in the file."""
    scales = {}
    for key, tensor in ckpt.tensors([k for k in ckpt.keys() if k.endswith(SCALE_SUFFIX)]):
        if tensor.numel() != 1:
            raise CheckpointError(
                f"{ckpt.name}: {key} holds {tensor.numel()} values; only per-tensor scales (one value) are "
                "supported: convert the MOVA release with python -m mova_model.convert."
            )
        scales[key[: -len(SCALE_SUFFIX)]] = tensor.float().reshape(())
    return scales


def _plan_fp8(model: nn.Module, ckpt: Checkpoint, shapes, dtype, operations) -> set[str]:
    """Names of the Linear modules that hold fp8 weights; gives each a scale_weight parameter."""
    fp8_stored = {k for k, d in ckpt.dtypes().items() if d in STORED_FP8}
    layers = set()
    for name, module in model.named_modules():
        key = name + ".weight"
        if isinstance(module, nn.Linear) and key in shapes and (
                key in fp8_stored or (dtype in FP8_DTYPES and is_fp8_target(key, shapes[key]))):
            if not hasattr(module, "scale_weight"):
                raise CheckpointError(
                    f"{ckpt.name} needs fp8 Linear layers, but operations.Linear ({type(module).__name__}) has no "
                    "scale_weight: pass operations=mova_model.ops.fp8_ops (in ComfyUI comfy.ops.scaled_fp8_ops()), "
                    "or load with dtype=torch.bfloat16 to dequantise the weights."
                )
            if module.scale_weight is None:
                module.scale_weight = nn.Parameter(torch.empty((), device="meta"), requires_grad=False)
            layers.add(name)
    return layers


def load_component(
    path: str | os.PathLike | Checkpoint,
    kind: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    operations=torch_ops,
    config=None,
    component: str | None = None,
) -> nn.Module:
    """Load one component ('video_dit', 'audio_dit', 'dual_tower_bridge', 'audio_vae') from a file,
    a component folder or a release folder (``component`` names the sub-folder there).

    Weights are cast to ``dtype`` (default: as stored, float32 for anything that is not a float
    type torch computes in; fp8 weights stay fp8) on ``device`` one tensor at a time. An fp8
    ``dtype`` stores the Linear weights of blocks / conditioners in fp8 and the rest in bf16.
    """
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path, component or kind)
    check_kind(ckpt, kind)
    check_fp8_layout(ckpt)
    config = config or detect_config(ckpt, kind)
    keep_fp8 = dtype is None or dtype in FP8_DTYPES
    has_fp8 = any(d in STORED_FP8 for d in ckpt.dtypes().values())
    base = torch.bfloat16 if dtype in FP8_DTYPES else dtype or stored_dtype(ckpt)
    if keep_fp8 and (has_fp8 or dtype in FP8_DTYPES) and operations is torch_ops:
        operations = fp8_ops
    model = _build(kind, config, operations, base)
    shapes = source_shapes(ckpt, kind)
    fp8_layers = _plan_fp8(model, ckpt, shapes, dtype, operations) if keep_fp8 else set()

    expected = set(model.state_dict().keys())
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    scale_keys = {k for k in shapes if k.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX))
                  and k.rsplit(".", 1)[0] in linears}
    present = {k for k in shapes if k != MARKER_KEY and k not in scale_keys}
    filled = {k for k in expected if k.endswith((SCALE_SUFFIX, INPUT_SCALE_SUFFIX))}
    missing, unexpected = sorted(expected - present - filled), sorted(present - expected)
    if missing or unexpected:
        raise CheckpointError(_key_report(ckpt.name, missing, unexpected))

    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    scales = _read_scales(ckpt)
    state = {k: torch.ones((), device=device) for k in filled}  # no scale in the file: scale 1
    for key, tensor in model_tensors(ckpt.tensors([k for k in ckpt.keys() if not _is_aux(k)]), kind):
        if tuple(tensor.shape) != model_shapes[key]:
            raise CheckpointError(
                f"{ckpt.name}: tensor {key} has shape {tuple(tensor.shape)}, the config asks for {model_shapes[key]}: "
                "the config.json (or metadata) does not belong to these weights."
            )
        module = key[: -len(".weight")] if key.endswith(".weight") else None
        scale = scales.get(module)
        if module in fp8_layers:
            if tensor.dtype not in FP8_DTYPES:  # quantise on load (a scale on a float weight is folded in)
                tensor, scale = quantize_fp8(dequantize(tensor, scale, torch.float32), dtype)
            state[module + SCALE_SUFFIX] = (torch.ones(()) if scale is None else scale).to(device)
            state[key] = tensor.to(device)
            continue
        if tensor.dtype in FP8_DTYPES or scale is not None:
            tensor = dequantize(tensor, scale, torch.float32)
        state[key] = tensor.to(device=device, dtype=base if tensor.is_floating_point() else tensor.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)

