"""The loaders' specs: MOVA Video Expert, Audio Tower and Audio VAE Loaders (plain data; nodes in node.py)."""

from __future__ import annotations

from ..spec_types import AUDIO_TOWER, AUDIO_VAE, VIDEO_EXPERT, NodeSpec, Socket, Widget

# What each loader offers of loaders/model_files.py's WEIGHT_DTYPES (the experts: no fp32; the codec: no fp8).
EXPERT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn")
AUDIO_VAE_DTYPES = ("default", "fp32", "bf16", "fp16")

def _dtype_widget(options: tuple[str, ...], what: str) -> Widget:
    return Widget(
        "weight_dtype", "COMBO", default="default", options=options,
        tooltip=f"How {what} weights are kept in memory. default: as stored in the file. "
        + ("fp8_e4m3fn halves memory (stored in fp8, computed in bf16) at a small quality cost."
           if "fp8_e4m3fn" in options else "fp32 is the safest for audio quality."),
    )


VIDEO_EXPERT_LOADER = NodeSpec(
    node_id="MovaVideoExpertLoader",
    display_name="MOVA Video Expert Loader",
    description="Loads one MOVA video expert (high-noise video_dit or low-noise video_dit_2) "
    "from models/diffusion_models.",
    inputs=(
        Widget("model_name", "COMBO", model_folder="diffusion_models", model_kinds=("video_dit",),
               tooltip="A MOVA video expert in models/diffusion_models: the release's video_dit folder "
               "(high-noise expert) or video_dit_2 folder (low-noise expert), or a single .safetensors file."),
        _dtype_widget(EXPERT_DTYPES, "the expert's"),
    ),
    outputs=(Socket("expert", VIDEO_EXPERT, "The video expert, for the MOVA Sampler."),),
)


AUDIO_TOWER_LOADER = NodeSpec(
    node_id="MovaAudioTowerLoader",
    display_name="MOVA Audio Tower Loader",
    description="Loads the MOVA audio DiT and the dual-tower bridge (shared by both video experts).",
    inputs=(
        Widget("audio_dit_name", "COMBO", model_folder="diffusion_models", model_kinds=("audio_dit",),
               tooltip="The release's audio_dit folder (or a single .safetensors file) in models/diffusion_models."),
        Widget("bridge_name", "COMBO", model_folder="diffusion_models", model_kinds=("dual_tower_bridge",),
               tooltip="The release's dual_tower_bridge folder (or a single .safetensors file) in "
               "models/diffusion_models."),
        _dtype_widget(EXPERT_DTYPES, "the audio DiT's and the bridge's"),
    ),
    outputs=(Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge, for the MOVA Sampler."),),
)


AUDIO_VAE_LOADER = NodeSpec(
    node_id="MovaAudioVAELoader",
    display_name="MOVA Audio VAE Loader",
    description="Loads MOVA's audio codec (DAC, 48 kHz) from models/vae.",
    inputs=(
        Widget("vae_name", "COMBO", model_folder="vae", model_kinds=("audio_vae",),
               tooltip="The release's audio_vae folder (or its single .safetensors file) in models/vae."),
        _dtype_widget(AUDIO_VAE_DTYPES, "the codec's"),
    ),
    outputs=(Socket("audio_vae", AUDIO_VAE, "The audio codec: sets the audio length and decodes the sound."),),
)
