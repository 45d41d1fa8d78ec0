"""The LoRA wing's ComfyUI nodes: MOVA LoRA Loader (a LoRA as ComfyUI weight patches on clones of the parts'
ModelPatchers) and MOVA Save LoRA (a trained LoRA into models/loras, official key layout, never over a file unasked).

The loader's clones share the networks; ComfyUI patches the weights when a clone is loaded and restores them from its
backup when another clone (or the original) is loaded, so the inputs stay untouched and unplugging the node removes
the LoRA. Scaled-fp8 layers dequantise, add the update and requantise in ComfyUI's patcher; GGUF-quantised layers
keep their bytes and apply the update to the dequantised weight in each forward (loaders/comfy_gguf.py).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import folder_paths
from comfy.weight_adapter import LoRAAdapter
from comfy_api.latest import io, ui

from ...mova_model.gguf.layers import weight_shapes
from ...mova_model.lora.load import LoraFile, read_lora
from ...mova_model.lora.save import PART_ORDER, SAVE_DTYPES, save_lora_safetensors, save_official_folder
from ..comfy_io import schema, show_text
from ..handles import LoadedPart
from ..input_values import checked_inputs
from ..loaders.model_checks import check_lora
from ..sampling.run import check_roles
from ..training.run import lora_save_paths
from . import spec
from .patches import SLOTS, comfy_lora_weights, plan_lora

log = logging.getLogger(__name__)
# validate_inputs' default for the lora socket: ComfyUI passes None for a connected socket at queue time (its value
# does not exist yet) and nothing for an unconnected one.
UNCONNECTED = "unconnected"


def patched(part: LoadedPart, entries) -> LoadedPart:
    """``part`` with a cloned ModelPatcher carrying the LoRA patches (``part`` itself when there are none)."""
    if not entries:
        return part
    patcher = part.patcher.clone()
    for patches, strength in entries:
        adapters = {key: LoRAAdapter(set(), comfy_lora_weights(patch)) for key, patch in patches.items()}
        added = patcher.add_patches(adapters, strength)
        if len(added) != len(adapters):  # the keys come from this patcher's own state dict
            missing = sorted(set(adapters) - set(added))
            raise RuntimeError(f"ComfyUI refused the LoRA patches for {missing[:5]} ({part.source})")
    return dataclasses.replace(part, patcher=patcher, loras=part.loras + tuple(entries))


class MovaLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.LORA_LOADER, hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, lora_name: str, lora=UNCONNECTED) -> bool | str:
        """At queue time: the LoRA file is in models/loras, unless MOVA Train LoRA's lora output is connected."""
        if lora is not UNCONNECTED:
            return True
        return check_lora(lora_name, folder_paths.get_folder_paths("loras")) or True

    @classmethod
    @checked_inputs(spec.LORA_LOADER)
    def execute(cls, high_noise_expert: LoadedPart, low_noise_expert: LoadedPart, audio_tower: LoadedPart,
                lora_name: str, strength_high_noise: float, strength_low_noise: float, strength_audio: float,
                strength_bridge: float, lora: LoraFile | None = None) -> io.NodeOutput:
        check_roles(high_noise_expert, low_noise_expert)
        if lora is None:
            lora = read_lora(folder_paths.get_full_path_or_raise("loras", lora_name))
        elif not isinstance(lora, LoraFile):
            raise ValueError("lora: expected the lora output of MOVA Train LoRA (or leave it unconnected)")
        else:
            lora_name = lora.path
        parts = dict(zip(SLOTS, (high_noise_expert, low_noise_expert, audio_tower)))
        shapes = {slot: weight_shapes(part.model) for slot, part in parts.items()}  # GGUF weights: [out, in]
        strengths = {"video_dit": strength_high_noise, "video_dit_2": strength_low_noise,
                     "audio_dit": strength_audio, "dual_tower_bridge": strength_bridge}
        plan = plan_lora(lora, shapes, strengths, name=lora_name)
        for what, keys in (("do not fit", plan.misses), ("are not MOVA LoRA weights", plan.unknown)):
            if keys:
                log.warning("MOVA LoRA %s: %d keys %s and were skipped: %s", lora_name, len(keys), what,
                            ", ".join(keys))
        text = plan.report()
        log.info("MOVA LoRA %s", text)
        show_text(cls.hidden.unique_id, text)
        outputs = [patched(parts[slot], plan.patches.get(slot, [])) for slot in SLOTS]
        return io.NodeOutput(*outputs, ui=ui.PreviewText(text))


def _paths(filename: str, overwrite: bool, official_folder: bool):
    return lora_save_paths(Path(folder_paths.get_folder_paths("loras")[0]), filename, overwrite, official_folder)


class MovaSaveLora(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.SAVE_LORA)

    @classmethod
    @checked_inputs(spec.SAVE_LORA)
    def execute(cls, lora: LoraFile, filename: str, overwrite: bool, dtype: str,
                official_folder: bool) -> io.NodeOutput:
        if not isinstance(lora, LoraFile):
            raise ValueError("lora: expected the lora output of MOVA Train LoRA")
        path, folder = _paths(filename, overwrite, official_folder)
        save_lora_safetensors(lora, path, SAVE_DTYPES[dtype], overwrite=overwrite)
        counts = ", ".join(f"{part} {len(lora.patches[part])}" for part in PART_ORDER if lora.patches.get(part))
        lines = [f"saved {path} (LoRA weights: {counts})"]
        if folder is not None:
            save_official_folder(lora, folder, overwrite=overwrite)
            lines.append(f"official folder: {folder} (lora_weights.pt + lora_config.pt)")
        text = "\n".join(lines)
        log.info("MOVA Save LoRA: %s", text.replace("\n", "; "))
        return io.NodeOutput(ui=ui.PreviewText(text))
