"""The pack's ComfyExtension: the list of MOVA nodes (imported only inside ComfyUI)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import comfy_attention
from .audio_node import MovaAudioDecode
from .conditioning_node import MovaConditioning
from .dataset_node import MovaDataset
from .extend_node import MovaExtend, MovaJoin
from .loader_nodes import MovaAudioTowerLoader, MovaAudioVAELoader, MovaVideoExpertLoader
from .lora_node import MovaLoraLoader
from .native_node import MovaGuider, MovaScheduler, MovaSeparateAVLatent
from .parallel.parallel_node import MovaParallel
from .prompt_nodes import MovaPromptBuilder, MovaPromptEnhance
from .sampler_node import MovaSampler, MovaSamplerOptions
from .save_lora_node import MovaSaveLora
from .text_node import MovaTextEncode
from .train_node import MovaTrainLora

NODE_CLASSES = [
    MovaVideoExpertLoader, MovaAudioTowerLoader, MovaAudioVAELoader, MovaConditioning, MovaSampler, MovaAudioDecode,
    MovaLoraLoader, MovaSamplerOptions, MovaPromptEnhance, MovaPromptBuilder, MovaDataset, MovaTrainLora,
    MovaSaveLora, MovaTextEncode, MovaExtend, MovaJoin, MovaGuider, MovaScheduler, MovaSeparateAVLatent, MovaParallel,
]


comfy_attention.register()


class MovaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)
