"""The LoRA wing's specs: MOVA LoRA Loader and MOVA Save LoRA (plain data; nodes in node.py)."""

from __future__ import annotations

from ..spec_types import AUDIO_TOWER, LORA, VIDEO_EXPERT, NodeSpec, Socket, Widget

# What MOVA Save LoRA offers of mova_model/lora/save.py's SAVE_DTYPES.
SAVE_DTYPE_CHOICES = ("fp32", "bf16")

def _strength(name: str, what: str) -> Widget:
    return Widget(name, "FLOAT", default=1.0, min=-10.0, max=10.0, step=0.01,
                  tooltip=f"How strongly the LoRA changes {what}: 1.0 as trained, 0 leaves it untouched, "
                  "negative values push the other way.")


LORA_LOADER = NodeSpec(
    node_id="MovaLoraLoader",
    display_name="MOVA LoRA Loader",
    description="Applies a LoRA from MOVA's official trainers (lora_weights.pt, the single-file .pt or "
    ".safetensors) to the video experts and the audio tower, with one strength per part. The inputs are left "
    "untouched (unplug the node to remove the LoRA); chain loaders to stack LoRAs.",
    inputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise video expert (video_dit); the LoRA's video_dit "
               "weights go here."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise video expert (video_dit_2); the LoRA's video_dit_2 "
               "weights go here."),
        Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge; the LoRA's audio_dit and dual_tower_bridge "
               "weights go here."),
        Widget("lora_name", "COMBO", model_folder="loras",
               tooltip="A MOVA LoRA in models/loras: lora_weights.pt (with lora_config.pt beside it), a trainer "
               "checkpoint .pt holding lora_state_dict, or a .safetensors with the same keys."),
        _strength("strength_high_noise", "the high-noise expert"),
        _strength("strength_low_noise", "the low-noise expert"),
        _strength("strength_audio", "the audio DiT"),
        _strength("strength_bridge", "the dual-tower bridge"),
        Socket("lora", LORA, "Optional: a LoRA straight from MOVA Train LoRA, used instead of lora_name (to try a "
               "freshly trained LoRA without saving it first).", optional=True),
    ),
    outputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise expert with the LoRA, for the MOVA Sampler."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise expert with the LoRA, for the MOVA Sampler."),
        Socket("audio_tower", AUDIO_TOWER, "The audio tower with the LoRA, for the MOVA Sampler."),
    ),
)


SAVE_LORA = NodeSpec(
    node_id="MovaSaveLora",
    display_name="MOVA Save LoRA",
    description="Saves a MOVA LoRA to models/loras as .safetensors in the official trainers' key layout "
    "(video_dit.blocks.0.self_attn.q.lora_A.weight ..., rank and alpha in the metadata).",
    inputs=(
        Socket("lora", LORA, "The LoRA from MOVA Train LoRA."),
        Widget("filename", "STRING", default="my_mova_lora",
               tooltip="File name inside models/loras (sub/folders allowed); .safetensors is added."),
        Widget("overwrite", "BOOLEAN", default=False,
               tooltip="Replace an existing file of that name. Off: an existing file stops the run and is kept."),
        Widget("dtype", "COMBO", default="fp32", options=SAVE_DTYPE_CHOICES,
               tooltip="Precision of the saved weights: fp32 as trained, bf16 half the size."),
        Widget("official_folder", "BOOLEAN", default=False,
               tooltip="Also write <filename>_official/lora_weights.pt + lora_config.pt: the folder MOVA's own "
               "inference script (--lora_path) and accelerate trainer (resume_from) read."),
    ),
    outputs=(),
    output_node=True,
)
