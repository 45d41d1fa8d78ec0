"""Build a MOVA component from its weights: detect, construct on the meta device, fill tensor by tensor."""

from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .detect import check_kind, detect_config
from .ops import torch_ops

STORED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def stored_dtype(ckpt: Checkpoint) -> torch.dtype:
    """The float dtype the weights are stored in (float32 when mixed or not a plain float type)."""
    stored = {STORED_DTYPES.get(name) for name in ckpt.stored_dtypes()}
    return stored.pop() if len(stored) == 1 and None not in stored else torch.float32


def fuse_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Weight-norm pair to a plain weight: w = g * v / ||v||, the norm over every dim but 0."""
    dims = tuple(range(1, v.dim()))
    return (g.float() * v.float() / torch.linalg.vector_norm(v.float(), dim=dims, keepdim=True)).to(v.dtype)


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


def _source_keys(ckpt: Checkpoint, kind: str):
    """Key translation for layouts we accept: DAC weight-norm pairs become fused weights."""
    keys = ckpt.keys()
    if kind == "audio_vae" and any(k.endswith(".weight_g") for k in keys):
        fused = [k[: -len("_g")] for k in keys if k.endswith(".weight_g")]
        return [k for k in keys if not k.endswith((".weight_g", ".weight_v"))] + fused
    return keys


def _tensors(ckpt: Checkpoint, kind: str):
    """Yield (model key, tensor): DAC weight-norm pairs are fused as w = g * v / ||v||."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in ckpt.tensors():
        if kind == "audio_vae" and key.endswith((".weight_g", ".weight_v")):
            base, part = key[:-2], key[-1]
            pending.setdefault(base, {})[part] = tensor
            if len(pending[base]) == 2:
                parts = pending.pop(base)
                yield base, fuse_weight_norm(parts["g"], parts["v"])
            continue
        yield key, tensor


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
    type torch computes in) on ``device`` one tensor at a time.
    """
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path, component or _default_folder(kind))
    check_kind(ckpt, kind)
    config = config or detect_config(ckpt, kind)
    dtype = dtype or stored_dtype(ckpt)
    model = _build(kind, config, operations, dtype)

    expected = set(model.state_dict().keys())
    present = set(_source_keys(ckpt, kind))
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        raise CheckpointError(_key_report(ckpt.name, missing, unexpected))

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {}
    for key, tensor in _tensors(ckpt, kind):
        if tuple(tensor.shape) != shapes[key]:
            raise CheckpointError(
                f"{ckpt.name}: tensor {key} has shape {tuple(tensor.shape)}, the config asks for {shapes[key]}: "
                "the config.json (or metadata) does not belong to these weights."
            )
        state[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _default_folder(kind: str) -> str:
    return {"video_dit": "video_dit"}.get(kind, kind)
