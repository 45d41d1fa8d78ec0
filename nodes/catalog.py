"""Every MOVA node's spec, in the order of ComfyUI's node menu (plain data; ``comfy_extension.py`` registers the
node classes in the same order)."""

from __future__ import annotations

from .conditioning.spec import CONDITIONING, EXTEND, JOIN, TEXT_ENCODE
from .loaders.spec import AUDIO_TOWER_LOADER, AUDIO_VAE_LOADER, VIDEO_EXPERT_LOADER
from .lora.spec import LORA_LOADER, SAVE_LORA
from .native.spec import GUIDER, SCHEDULER, SEPARATE_AV
from .parallel.spec import PARALLEL
from .prompts.spec import PROMPT_BUILDER, PROMPT_ENHANCE
from .sampling.spec import AUDIO_DECODE, SAMPLER, SAMPLER_OPTIONS_NODE
from .training.spec import DATASET_NODE, TRAIN_LORA

ALL_NODES = (VIDEO_EXPERT_LOADER, AUDIO_TOWER_LOADER, AUDIO_VAE_LOADER, CONDITIONING, SAMPLER, AUDIO_DECODE,
             LORA_LOADER, SAMPLER_OPTIONS_NODE, PROMPT_ENHANCE, PROMPT_BUILDER, DATASET_NODE, TRAIN_LORA, SAVE_LORA,
             TEXT_ENCODE, EXTEND, JOIN, GUIDER, SCHEDULER, SEPARATE_AV, PARALLEL)
NODES_BY_ID = {spec.node_id: spec for spec in ALL_NODES}
