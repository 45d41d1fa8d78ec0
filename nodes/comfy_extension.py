"""The pack's ComfyExtension: the list of MOVA nodes, in menu order (nodes/catalog.py lists their specs in the same
order; imported only inside ComfyUI)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import comfy_attention
from .conditioning.node import MovaConditioning, MovaExtend, MovaJoin, MovaTextEncode
from .loaders.node import MovaAudioTowerLoader, MovaAudioVAELoader, MovaVideoExpertLoader
from .lora.node import MovaLoraLoader, MovaSaveLora
from .native.node import MovaGuider, MovaScheduler, MovaSeparateAVLatent
from .parallel.node import MovaParallel
from .prompts.node import MovaPromptBuilder, MovaPromptEnhance
from .sampling.node import MovaAudioDecode, MovaSampler, MovaSamplerOptions
from .training.node import MovaDataset, MovaTrainLora

NODE_CLASSES = [
    MovaVideoExpertLoader, MovaAudioTowerLoader, MovaAudioVAELoader, MovaConditioning, MovaSampler, MovaAudioDecode,
    MovaLoraLoader, MovaSamplerOptions, MovaPromptEnhance, MovaPromptBuilder, MovaDataset, MovaTrainLora,
    MovaSaveLora, MovaTextEncode, MovaExtend, MovaJoin, MovaGuider, MovaScheduler, MovaSeparateAVLatent, MovaParallel,
]


comfy_attention.register()


class MovaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)
