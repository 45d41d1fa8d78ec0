"""MOVA Save LoRA node: a trained LoRA into models/loras (official key layout), never over a file unasked."""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ...mova_model.lora.load import LoraFile
from ...mova_model.lora.save import PART_ORDER, SAVE_DTYPES, save_lora_safetensors, save_official_folder
from .. import spec
from ..comfy_io import schema
from ..input_values import checked_inputs
from ..training.run import lora_save_paths

log = logging.getLogger(__name__)


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
