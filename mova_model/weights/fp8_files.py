"""The fp8 side of a checkpoint in either of ComfyUI's layouts (see ``quantize``): which keys describe fp8
weights rather than being weights, the per-tensor scale of each fp8 Linear, and checks that name the file
and the fix before anything heavy is read.
"""

from __future__ import annotations

import json

import torch

from .checkpoint import Checkpoint, CheckpointError, strip_prefix
from .quantize import (
    AUX_SUFFIXES,
    MARKER_DTYPES,
    MARKER_KEY,
    QUANT_CONF_SUFFIX,
    QUANT_FORMATS,
    QUANT_METADATA,
    QUANT_SCALE_SUFFIX,
    SCALE_SUFFIX,
    STORED_FP8,
    read_comfy_quant,
)

KNOWN_DTYPES = {"F32", "F16", "BF16", *STORED_FP8, "I64", "I32", "I16", "I8", "U8", "BOOL", "F64"}
CONVERT_HINT = "convert the MOVA release with python -m mova_model.convert"


def is_aux(key: str) -> bool:
    """Scales, comfy_quant entries and the scaled_fp8 marker: not weights of the model itself."""
    return key == MARKER_KEY or key.endswith(AUX_SUFFIXES)


def aux_module(key: str) -> str | None:
    """The module a per-layer fp8 key belongs to ('blocks.0.ffn.0' for 'blocks.0.ffn.0.weight_scale')."""
    suffix = next((s for s in AUX_SUFFIXES if key.endswith(s)), None)
    return key[: -len(suffix)] if suffix else None


def quant_layers(ckpt: Checkpoint) -> dict[str, dict]:
    """Module -> comfy_quant config (e.g. {"format": "float8_e4m3fn"}), from per-layer ``X.comfy_quant``
    tensors or the ``_quantization_metadata`` table of the file's metadata; {} for other files."""
    confs: dict[str, dict] = {}
    table = ckpt.metadata.get(QUANT_METADATA)
    if table:
        try:
            layers = json.loads(table)["layers"]
            confs.update({strip_prefix(name): dict(conf) for name, conf in layers.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{ckpt.name} has unreadable {QUANT_METADATA} metadata ({exc}): the file is damaged; "
                f"download it again or {CONVERT_HINT}.") from exc
    keys = [k for k in ckpt.keys() if k.endswith(QUANT_CONF_SUFFIX)]
    for key, tensor in ckpt.tensors(keys):
        try:
            confs[key[: -len(QUANT_CONF_SUFFIX)]] = read_comfy_quant(tensor)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(
                f"{ckpt.name}: {key} holds no comfy_quant JSON ({exc}): the file is damaged; download it again "
                f"or {CONVERT_HINT}.") from exc
    return confs


def check_fp8_layout(ckpt: Checkpoint) -> dict[str, dict]:
    """Raise a CheckpointError for a marker, a dtype or a quantisation format this loader cannot read;
    returns the comfy_quant configs (module -> config) for the caller."""
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
    confs = quant_layers(ckpt)
    for module, conf in confs.items():
        fmt = conf.get("format")
        if fmt not in QUANT_FORMATS:
            raise CheckpointError(
                f"{ckpt.name}: layer {module} is quantised as {fmt!r}; MOVA's loader reads the fp8 formats "
                f"({', '.join(QUANT_FORMATS)}) only: use an fp8 or bf16 file, e.g. {CONVERT_HINT}.")
        stored = STORED_FP8.get(dtypes.get(module + ".weight"))
        if stored != QUANT_FORMATS[fmt]:
            raise CheckpointError(
                f"{ckpt.name}: layer {module} says {fmt} but its weight is stored as "
                f"{dtypes.get(module + '.weight', 'nothing')}: the file is damaged; {CONVERT_HINT}.")
    return confs


def read_scales(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Module name -> float32 scalar weight scale found in the file (``scale_weight`` or ``weight_scale``)."""
    scales = {}
    keys = [k for k in ckpt.keys() if k.endswith((SCALE_SUFFIX, QUANT_SCALE_SUFFIX))]
    for key, tensor in ckpt.tensors(keys):
        if tensor.numel() != 1:
            raise CheckpointError(
                f"{ckpt.name}: {key} holds {tensor.numel()} values; only per-tensor scales (one value) are "
                f"supported: {CONVERT_HINT}."
            )
        scales[aux_module(key)] = tensor.float().reshape(())
    return scales
