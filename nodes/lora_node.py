"""MOVA LoRA Loader node: a LoRA as ComfyUI weight patches on clones of the parts' ModelPatchers.

Clones share the networks; ComfyUI patches the weights when a clone is loaded and restores them from its
backup when another clone (or the original) is loaded, so the inputs stay untouched and unplugging the
node removes the LoRA. Scaled-fp8 layers dequantise, add the update and requantise in ComfyUI's patcher.
"""

from __future__ import annotations

import dataclasses
import logging

import folder_paths
from comfy.weight_adapter import LoRAAdapter
from comfy_api.latest import io, ui

from ..mova_model.lora import LoraFile, read_lora
from . import spec
from .comfy_io import schema, show_text
from .handles import LoadedPart
from .lora_patches import SLOTS, comfy_lora_weights, plan_lora
from .model_checks import check_lora
from .sampling import check_roles

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
        shapes = {slot: {k: tuple(v.shape) for k, v in part.model.state_dict().items()} for slot, part in parts.items()}
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
