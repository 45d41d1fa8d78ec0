"""Build a MOVA component from its weights the way ComfyUI's core loads its models.

The expected keys and shapes come from the config (a meta-device model made with plain torch layers), never
from the model being filled: the host's ``operations`` may create layers without weights until
``_load_from_state_dict`` runs (ComfyUI's dynamic-VRAM ``comfy.ops`` and ``mixed_precision_ops``). The model
is built on the meta device with ``operations`` and filled by one ``load_state_dict(assign=True)`` with tensors
streamed from the file, so a component is held once.

fp8: Linear weights stored in fp8 (our converted files and ComfyUI's in either layout, ``comfy_quant`` or
``scaled_fp8``, or plain unscaled fp8 files) stay fp8 and compute in the activations' dtype;
``dtype=torch.float8_e4m3fn`` quantises the fp8 targets of a bf16/fp32 source on load (per-tensor scale
amax/448) and loads everything else in bf16; a float ``dtype`` dequantises stored fp8 weights into a plain
model. ``fp8_layout`` is the key layout the fp8 layers of ``operations`` take (see ``quantize``): 'scaled_fp8'
(our ``fp8_ops``, ComfyUI's ``scaled_fp8_ops``; found by itself when the layers have ``scale_weight``) or
'comfy_quant' (ComfyUI's ``mixed_precision_ops``).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..networks.dac import weight_from_norm
from ..networks.ops import fp8_ops, torch_ops
from ..gguf.layers import GGUFLinearMixin, gguf_operations
from .checkpoint import Checkpoint, CheckpointError
from .detect import check_kind, detect_config
from .fp8_files import KNOWN_DTYPES, aux_module, check_fp8_layout, is_aux, read_scales  # noqa: F401 (re-exported)
from .sources import is_gguf, open_weights
from .quantize import (
    FP8_DTYPES,
    INPUT_SCALE_SUFFIX,
    LAYOUTS,
    MARKER_KEY,
    SCALE_SUFFIX,
    STORED_FP8,
    dequantize,
    fp8_entries,
    is_fp8_target,
    quantize_fp8,
)

STORED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_is_aux = is_aux  # the converter's name for it


def stored_dtype(ckpt: Checkpoint) -> torch.dtype:
    """The float dtype the non-fp8 weights are stored in (float32 when mixed or not a plain float type); bf16
    for .gguf files (their float tensors are BF16 and F32 norms, their quantised weights compute in bf16)."""
    if is_gguf(ckpt):
        return torch.bfloat16
    names = {d for k, d in ckpt.dtypes().items() if not _is_aux(k) and d not in STORED_FP8}
    stored = {STORED_DTYPES.get(name) for name in names}
    return stored.pop() if len(stored) == 1 and None not in stored else torch.float32


def _build(kind: str, config, operations, dtype):
    with torch.device("meta"):
        if kind in ("video_dit", "audio_dit"):
            from ..networks.dit import WanDiT
            return WanDiT(config, operations=operations, dtype=dtype)
        if kind == "dual_tower_bridge":
            from ..networks.bridge import DualTowerBridge
            return DualTowerBridge(config, operations=operations, dtype=dtype)
        from ..networks.dac import DAC
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


def expected_state(kind: str, config, dtype: torch.dtype) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """({state-dict key: shape}, names of the Linear modules) of the component ``config`` describes, from a
    meta-device model built with plain torch layers (nothing is allocated)."""
    reference = _build(kind, config, torch_ops, dtype)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    return shapes, {name for name, m in reference.named_modules() if isinstance(m, nn.Linear)}


def check_against_config(ckpt: Checkpoint, kind: str, want: dict[str, tuple[int, ...]], linears: set[str]) -> None:
    """Raise a CheckpointError naming what the file lacks, adds or misshapes (from its header only)."""
    have = {k: s for k, s in source_shapes(ckpt, kind).items()
            if k != MARKER_KEY and not (is_aux(k) and aux_module(k) in linears)}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unexpected:
        raise CheckpointError(_key_report(ckpt.name, missing, unexpected))
    wrong = [k for k in want if tuple(have[k]) != want[k]]
    if wrong:
        raise CheckpointError(
            f"{ckpt.name}: tensor {wrong[0]} has shape {tuple(have[wrong[0]])}, the config asks for {want[wrong[0]]}: "
            "the config.json (or metadata) does not belong to these weights.")


def _fp8_layout(model: nn.Module, layers: set[str], fp8_layout: str | None, ckpt: Checkpoint, operations) -> str:
    """The key layout the fp8 ``layers`` of ``model`` take; gives our fp8 Linears their scale_weight slot."""
    if fp8_layout is not None:
        if fp8_layout not in LAYOUTS:
            raise ValueError(f"fp8_layout {fp8_layout!r} is not one of {', '.join(LAYOUTS)}")
        if fp8_layout == "comfy_quant":
            return fp8_layout
    for name in layers:
        module = model.get_submodule(name)
        if not hasattr(module, "scale_weight"):
            raise CheckpointError(
                f"{ckpt.name} needs fp8 Linear layers, but operations.Linear ({type(module).__name__}) has no "
                "scale_weight: pass operations=mova_model.networks.ops.fp8_ops (in ComfyUI comfy.ops.scaled_fp8_ops(), or "
                "comfy.ops.mixed_precision_ops() with fp8_layout='comfy_quant'), or load with dtype=torch.bfloat16 "
                "to dequantise the weights."
            )
        if module.scale_weight is None:  # our Fp8Linear: no scale slot until it holds an fp8 weight
            module.scale_weight = nn.Parameter(torch.empty((), device="meta"), requires_grad=False)
    return "scaled_fp8"


def _scale_slots(model: nn.Module, state: dict, device) -> None:
    """Scale 1 for the scale parameters the operations' layers carry but the file has no value for
    (ComfyUI's scaled_fp8_ops gives every Linear a scale_weight, and a scale_input when asked)."""
    for name, module in model.named_modules():
        for suffix in (SCALE_SUFFIX, INPUT_SCALE_SUFFIX):
            if isinstance(getattr(module, suffix[1:], None), torch.Tensor) and name + suffix not in state:
                state[name + suffix] = torch.ones((), device=device)


def _built_dtypes(model: nn.Module, state: dict) -> None:
    """Float tensors of ``state`` in the float dtype the layers built those parameters with, as load_state_dict
    without ``assign`` would copy them (ComfyUI's mixed_precision_ops keep their biases in their compute dtype);
    fp8 tensors and parameters the layers create while loading keep the dtype given."""
    built = dict(model.named_parameters())
    built.update(model.named_buffers())
    for key, tensor in state.items():
        target = built.get(key)
        if (target is not None and target.dtype != tensor.dtype and target.is_floating_point()
                and tensor.is_floating_point() and target.dtype not in FP8_DTYPES and tensor.dtype not in FP8_DTYPES):
            state[key] = tensor.to(target.dtype)


def _fill(model: nn.Module, state: dict, ckpt: Checkpoint, operations, held: frozenset = frozenset()) -> None:
    """load_state_dict(assign=True): every layer takes its tensors its own way (lazily created ones too);
    ``held``: keys the layers already hold (GGUF-quantised weights)."""
    _built_dtypes(model, state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.name}: the layers of {_ops_name(operations)} refused the weights: {exc}") from exc
    missing = [k for k in missing if k not in held]
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt.name}: the layers of {_ops_name(operations)} do not take this model's keys "
            f"({len(missing)} not filled, e.g. {missing[:3]}; {len(unexpected)} not taken, e.g. {unexpected[:3]}): "
            "for fp8 weights pass the fp8_layout those layers read, or load with dtype=torch.bfloat16.")
    left = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if left:
        raise CheckpointError(f"{ckpt.name}: {len(left)} tensors were not filled (first: {left[0]}) by "
                              f"{_ops_name(operations)}: load with dtype=torch.bfloat16 or other operations.")


def _ops_name(operations) -> str:
    return getattr(operations, "__name__", None) or type(operations).__name__


def load_component(
    path: str | os.PathLike | Checkpoint,
    kind: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    operations=torch_ops,
    config=None,
    component: str | None = None,
    fp8_layout: str | None = None,
) -> nn.Module:
    """Load one component ('video_dit', 'audio_dit', 'dual_tower_bridge', 'audio_vae') from a file,
    a component folder or a release folder (``component`` names the sub-folder there).

    Weights are cast to ``dtype`` (default: as stored, float32 for anything that is not a float
    type torch computes in; fp8 weights stay fp8) on ``device`` one tensor at a time. An fp8
    ``dtype`` stores the Linear weights of blocks / conditioners in fp8 and the rest in bf16.
    ``fp8_layout``: the keys the fp8 layers of ``operations`` take (module docstring).
    """
    ckpt = path if isinstance(path, Checkpoint) else open_weights(path, component or kind)
    check_kind(ckpt, kind)
    if is_gguf(ckpt):
        return _load_gguf(ckpt, kind, dtype, device, operations, config)
    check_fp8_layout(ckpt)
    config = config or detect_config(ckpt, kind)
    keep_fp8 = dtype is None or dtype in FP8_DTYPES
    has_fp8 = any(d in STORED_FP8 for d in ckpt.dtypes().values())
    base = torch.bfloat16 if dtype in FP8_DTYPES else dtype or stored_dtype(ckpt)
    if keep_fp8 and (has_fp8 or dtype in FP8_DTYPES) and operations is torch_ops:
        operations = fp8_ops
    want, linears = expected_state(kind, config, base)
    check_against_config(ckpt, kind, want, linears)
    dtypes = ckpt.dtypes()
    fp8_layers = {name for name in linears if keep_fp8 and (
        dtypes.get(name + ".weight") in STORED_FP8
        or (dtype in FP8_DTYPES and is_fp8_target(name + ".weight", want[name + ".weight"])))}

    model = _build(kind, config, operations, base)
    layout = _fp8_layout(model, fp8_layers, fp8_layout, ckpt, operations) if fp8_layers else None
    scales = read_scales(ckpt)
    state = {}
    for key, tensor in model_tensors(ckpt.tensors([k for k in ckpt.keys() if not is_aux(k)]), kind):
        module = key[: -len(".weight")] if key.endswith(".weight") else None
        scale = scales.get(module)
        if module in fp8_layers:
            if tensor.dtype not in FP8_DTYPES:  # quantise on load (a scale on a float weight is folded in)
                tensor, scale = quantize_fp8(dequantize(tensor, scale, torch.float32), dtype)
            scale = torch.ones(()) if scale is None else scale
            state.update(fp8_entries(module, tensor.to(device), scale.to(device), layout))
            continue
        if tensor.dtype in FP8_DTYPES or scale is not None:
            tensor = dequantize(tensor, scale, torch.float32)
        state[key] = tensor.to(device=device, dtype=base if tensor.is_floating_point() else tensor.dtype)
    _scale_slots(model, state, device)
    _fill(model, state, ckpt, operations)
    return model.eval().requires_grad_(False)


def _load_gguf(ckpt, kind: str, dtype, device, operations, config) -> nn.Module:
    """A component from a .gguf file: quantised Linear weights stay quantised (``dtype`` None: dequantised on the
    fly in each forward), the other tensors in bf16; a float ``dtype`` dequantises everything into a plain model."""
    if dtype in FP8_DTYPES:
        raise CheckpointError(
            f"{ckpt.name} is a GGUF file: it loads as stored (weight_dtype default; dequantised on the fly) or "
            "dequantised to bf16, fp16 or fp32, not as fp8: pick one of those, or convert the release to fp8 with "
            "python -m mova_model.convert --dtype fp8_e4m3fn.")
    config = config or detect_config(ckpt, kind)
    base = dtype or torch.bfloat16
    want, linears = expected_state(kind, config, base)
    check_against_config(ckpt, kind, want, linears)
    quantized = set(ckpt.quantized_keys) if dtype is None else set()
    wrong = sorted(k for k in quantized if k[: -len(".weight")] not in linears or not k.endswith(".weight"))
    if wrong:
        raise CheckpointError(f"{ckpt.name} stores {wrong[0]} quantised, which is no Linear weight of "
                              f"{kind}: only Linear weights can be; the file was not written by "
                              "python -m mova_model.convert. Convert the release again.")
    if quantized:
        operations = gguf_operations(operations)
    model = _build(kind, config, operations, base)
    state = {}
    for key in ckpt.keys():
        if key in quantized:
            layer = model.get_submodule(key[: -len(".weight")])
            if not isinstance(layer, GGUFLinearMixin):
                raise CheckpointError(f"{ckpt.name}: {key} is quantised but {_ops_name(operations)} gave a "
                                      f"{type(layer).__name__} there: load with dtype=torch.bfloat16.")
            layer.set_quantized(ckpt.get(key).to(device), ckpt.dtypes()[key], ckpt.shapes()[key])
            continue
        state[key] = ckpt.dequantized(key, base, device)
    _fill(model, state, ckpt, operations, frozenset(quantized))
    return model.eval().requires_grad_(False)
