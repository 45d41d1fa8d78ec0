"""LoRA files from MOVA's official trainers (and the same keys in .safetensors).

Layouts read:
- accelerate trainer: ``lora_weights.pt`` with ``<component>.<module>.lora_A.weight`` [r,in] and
  ``.lora_B.weight`` [out,r] (or ``.lora_A.default.weight``), rank/alpha in ``lora_config.pt`` beside it (when
  that config names the digest of its weights, as ours do, a pair whose digests differ is refused);
- low-resource trainer: one ``.pt`` holding ``{"lora_state_dict": {"<component>.<module>.lora_A": …},
  "rank": r, "alpha": a}``;
- ``.safetensors`` with either key style; alpha from the metadata (``alpha``/``lora_alpha``) or a
  per-module ``<module>.alpha`` tensor.
Pickles are read with ``torch.load(weights_only=True)``. Alpha defaults to the rank.
The update of a weight W is W + strength · (alpha / rank) · B · A, rank the one the settings name (as MOVA's LoRA
pipeline divides by lora_config.pt's rank: the accelerate trainer's FSDP save writes rank 16 whatever it
trained), else the factors' rank.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files.saving import file_digest
from ..gguf.layers import LoraDelta, add_weight_patch, quantized_layers, weight_shapes
from ..weights.checkpoint import CheckpointError, read_header
from ..weights.quantize import dequantize, quantize_fp8

LORA_COMPONENTS = ("video_dit_2", "video_dit", "audio_dit", "dual_tower_bridge")  # longest prefix first
OFFICIAL_WEIGHTS, OFFICIAL_CONFIG = "lora_weights.pt", "lora_config.pt"
WEIGHTS_DIGEST = "weights_sha256"  # in lora_config.pt: the SHA-256 of the lora_weights.pt it belongs to
_KEY = re.compile(r"^(?P<module>.+?)\.lora_(?P<part>[AB])(?:\.default)?(?:\.weight)?$")


@dataclass(frozen=True)
class LoraPatch:
    """One low-rank update: down (A) [r,in], up (B) [out,r], scale alpha / rank."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float

    def delta(self, dtype=torch.float32) -> torch.Tensor:
        """The full update B·A·scale [out,in] (for tests and merging)."""
        return (self.up.to(dtype) @ self.down.to(dtype)) * self.scale


@dataclass
class LoraFile:
    """Patches per component, keyed by the weight they update (``blocks.0.self_attn.q.weight``)."""

    path: str
    patches: dict[str, dict[str, LoraPatch]]
    unknown_keys: list[str]

    def summary(self) -> str:
        counts = ", ".join(f"{c}: {len(p)}" for c, p in self.patches.items() if p)
        return f"{Path(self.path).name}: {counts or 'no patches'}"


def _load_plain(path: Path, what: str):
    """torch.load(weights_only=True) of ``path``; a CheckpointError for pickles that carry code or damaged files."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code, or not a torch file at all
        raise CheckpointError(
            f"{path} could not be read as plain {what} ({type(exc).__name__}): only weights-only .pt files "
            "(tensors, numbers, texts) and .safetensors are loaded; convert it to .safetensors."
        ) from exc


def _metadata_value(value: str):
    """A metadata text as a number when it is one (JSON), else the text."""
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def _read_raw(path: Path) -> tuple[dict, dict]:
    """(tensors by key, settings) from a .pt or .safetensors LoRA file."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        read_header(path)  # a damaged header stops here, named
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        return tensors, {k: _metadata_value(v) for k, v in meta.items()}
    data = _load_plain(path, "tensors")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a LoRA state dict.")
    if "lora_state_dict" in data:
        tensors = data["lora_state_dict"]
        if not isinstance(tensors, dict):
            raise CheckpointError(f"{path}: its lora_state_dict is a {type(tensors).__name__}, not a dict of tensors.")
        return dict(tensors), {k: v for k, v in data.items() if k != "lora_state_dict"}
    settings = {}
    config = path.with_name(OFFICIAL_CONFIG)
    if config.exists():
        settings = _load_plain(config, "settings")
        if not isinstance(settings, dict):
            raise CheckpointError(f"{config} holds a {type(settings).__name__}, not the LoRA settings (rank, alpha): "
                                  "use the lora_config.pt the trainer wrote beside lora_weights.pt.")
        digest = settings.get(WEIGHTS_DIGEST)
        if digest is not None and digest != file_digest(path):
            raise CheckpointError(
                f"{config} belongs to another {path.name} than the one beside it (its {WEIGHTS_DIGEST} differs): a "
                "save of this pair was cut off between the two files. Save the LoRA again (MOVA Save LoRA with "
                "overwrite, or python -m mova_model.lora.save LORA FOLDER --overwrite).")
    return data, dict(settings)


def _alpha(value, where: str) -> float:
    """A LoRA alpha as a finite float; a CheckpointError naming ``where`` otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckpointError(f"{where}: alpha is a tensor of {value.numel()} values, not one number: the LoRA "
                                  "file is damaged.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{where}: alpha is {value!r}, not a finite number: the LoRA file is damaged.")
    return float(value)


def _factor(path: Path, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """A LoRA factor checked: a matrix (or a 1x1 conv kernel) of finite float values."""
    if not tensor.is_floating_point() or tensor.dim() < 2:
        raise CheckpointError(f"{path}: {key} is a {tensor.dtype} tensor of shape {tuple(tensor.shape)}, not a LoRA "
                              "matrix: the file is damaged or not a MOVA LoRA.")
    if not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{path}: {key} holds NaN or infinite values: the LoRA is broken (a training run that "
                              "diverged). Use a checkpoint of that run from before it diverged (output/mova_training/"
                              "<run_name>/step_*.safetensors, copied into models/loras: MOVA Train LoRA stops a run "
                              "before it writes such values, so its checkpoints are finite), or train again with a "
                              "lower learning_rate.")
    return tensor


def _split_component(key: str) -> tuple[str | None, str]:
    for component in LORA_COMPONENTS:
        if key.startswith(component + "."):
            return component, key[len(component) + 1:]
    return None, key


def read_lora(path: str | os.PathLike) -> LoraFile:
    """Parse a LoRA file into per-component patches; keys it cannot place are kept in ``unknown_keys``.
    Damaged values (rank 0, scalars, NaN, a non-numeric alpha) raise a CheckpointError naming the key."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"LoRA file {path} does not exist: put it in the loras folder.")
    tensors, settings = _read_raw(path)
    return lora_from_tensors(tensors, settings, str(path))


def lora_from_tensors(tensors: dict, settings: dict, path: str) -> LoraFile:
    """Parse LoRA tensors in either official key layout (``settings``: alpha / lora_alpha, optional);
    ``path`` names the LoRA in messages."""
    default_alpha = settings.get("alpha", settings.get("lora_alpha"))
    if default_alpha is not None:
        default_alpha = _alpha(default_alpha, f"{path} (its settings)")
    config_rank = settings.get("rank")  # the official non-FSDP save writes a class name here: not a rank
    if isinstance(config_rank, bool) or not isinstance(config_rank, int) or config_rank < 1:
        config_rank = None
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    unknown = []
    for key, tensor in tensors.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            unknown.append(str(key))
            continue
        if key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = _alpha(tensor, f"{path}: {key}")
            continue
        match = _KEY.match(key)
        component, module = _split_component(match.group("module")) if match else (None, key)
        if component is None:
            unknown.append(key)
            continue
        parts.setdefault((component, module), {})[match.group("part")] = _factor(path, key, tensor)
    patches: dict[str, dict[str, LoraPatch]] = {c: {} for c in LORA_COMPONENTS}
    for (component, module), ab in parts.items():
        if set(ab) != {"A", "B"}:
            unknown.append(f"{component}.{module}.lora_{'A' if 'A' in ab else 'B'} (its partner is missing)")
            continue
        rank = ab["A"].shape[0]
        if rank == 0:
            raise CheckpointError(f"{path}: {component}.{module} has rank 0 (lora_A {tuple(ab['A'].shape)}): the file "
                                  "is damaged.")
        if ab["B"].shape[1] != rank:
            raise CheckpointError(
                f"{path}: {component}.{module} has lora_A rank {rank} but lora_B {tuple(ab['B'].shape)}: the file is damaged."
            )
        own_alpha = alphas.get(f"{component}.{module}")
        if own_alpha is not None:
            scale = own_alpha / rank
        elif default_alpha is None:
            scale = 1.0
        else:
            scale = default_alpha / (config_rank or rank)
        patches[component][module + ".weight"] = LoraPatch(
            down=ab["A"].reshape(rank, -1), up=ab["B"].reshape(ab["B"].shape[0], rank), scale=float(scale))
    return LoraFile(path=path, patches=patches, unknown_keys=sorted(unknown))


def match_patches(patches: dict[str, LoraPatch], shapes: dict[str, tuple[int, ...]]):
    """(patches that fit the model, descriptions of those that do not) for a model's weight shapes."""
    fits, misses = {}, []
    for key, patch in patches.items():
        shape = shapes.get(key)
        if shape is None:
            misses.append(f"{key} (no such weight)")
        elif len(shape) != 2 or shape != (patch.up.shape[0], patch.down.shape[1]):
            misses.append(f"{key} (LoRA {patch.up.shape[0]}x{patch.down.shape[1]}, weight {tuple(shape)})")
        else:
            fits[key] = patch
    return fits, misses


def _merged(weight: torch.Tensor, scale, patch: LoraPatch, strength: float) -> torch.Tensor:
    """W + strength * scale * B.A in float32 [out, in]."""
    return dequantize(weight, scale, torch.float32) + strength * patch.delta().to(weight.device)


@torch.no_grad()
def merge_lora_(model: torch.nn.Module, patches: dict[str, LoraPatch], strength: float) -> list[str]:
    """Add strength · scale · B·A to the model's weights in place (plain torch use); returns misses.
    Every merged weight is checked first: when one would hold NaN or infinite values (an update too large for
    the weights' dtype) nothing is changed and a ValueError names it. GGUF-quantised weights keep their bytes:
    the update is applied to the dequantised weight in each forward (``gguf.layers.add_weight_patch``)."""
    params = dict(model.named_parameters())
    fits, misses = match_patches(patches, weight_shapes(model))
    quantized = {f"{name}.weight": layer for name, layer in quantized_layers(model).items()}
    targets = {key: (params[key], getattr(model.get_submodule(key[: -len(".weight")]), "scale_weight", None))
               for key in fits if key not in quantized}
    for key, patch in fits.items():
        if key in quantized:
            if not bool(torch.isfinite(patch.delta()).all()):
                raise ValueError(f"the LoRA update of {key} holds NaN or infinite values: the LoRA file is damaged.")
            continue
        weight, scale = targets[key]
        merged = _merged(weight, scale, patch, strength)
        if scale is None:
            merged = merged.to(weight.dtype)
        if not bool(torch.isfinite(merged).all()):
            raise ValueError(
                f"merging the LoRA into {key} at strength {strength:g} gives NaN or infinite weights (the update "
                f"does not fit {weight.dtype}): lower the strength, or load the model in bf16 or fp32."
            )
    for key, patch in fits.items():
        if key in quantized:
            add_weight_patch(quantized[key], LoraDelta(patch.up, patch.down, strength * patch.scale))
            continue
        weight, scale = targets[key]
        merged = _merged(weight, scale, patch, strength)
        if scale is None:
            weight.copy_(merged.to(weight.dtype))
        else:  # fp8 weight: requantise with a fresh per-tensor scale
            q, new_scale = quantize_fp8(merged, weight.dtype)
            weight.copy_(q)
            scale.copy_(new_scale.to(scale.device))
    return misses
