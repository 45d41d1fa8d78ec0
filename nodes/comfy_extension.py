"""The pack's ComfyExtension: the list of MOVA nodes (imported only inside ComfyUI)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import comfy_attention
from .sampling.audio_node import MovaAudioDecode
from .conditioning.node import MovaConditioning
from .training.dataset_node import MovaDataset
from .conditioning.extend_node import MovaExtend, MovaJoin
from .loaders.node import MovaAudioTowerLoader, MovaAudioVAELoader, MovaVideoExpertLoader
from .lora.node import MovaLoraLoader
from .native.node import MovaGuider, MovaScheduler, MovaSeparateAVLatent
from .prompts.node import MovaPromptBuilder, MovaPromptEnhance
from .sampling.node import MovaSampler, MovaSamplerOptions
from .lora.save_node import MovaSaveLora
from .conditioning.text_node import MovaTextEncode
from .training.node import MovaTrainLora

NODE_CLASSES = [
    MovaVideoExpertLoader, MovaAudioTowerLoader, MovaAudioVAELoader, MovaConditioning, MovaSampler, MovaAudioDecode,
    MovaLoraLoader, MovaSamplerOptions, MovaPromptEnhance, MovaPromptBuilder, MovaDataset, MovaTrainLora,
    MovaSaveLora, MovaTextEncode, MovaExtend, MovaJoin, MovaGuider, MovaScheduler, MovaSeparateAVLatent,
]


comfy_attention.register()


class MovaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)
