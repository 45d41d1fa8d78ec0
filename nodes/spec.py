"""What every MOVA node takes and gives, as plain data (no ComfyUI import).

The ComfyUI schemas in ``*_node.py`` are built from these specs, and the tests read them to check the
shipped workflows. Saved workflows store widget values by position: append new inputs at the end,
never reorder or rename (that breaks users' saved graphs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CATEGORY = "MOVA"

# Custom socket types (ComfyUI matches sockets by these strings).
VIDEO_EXPERT = "MOVA_VIDEO_EXPERT"
AUDIO_TOWER = "MOVA_AUDIO_TOWER"
AUDIO_VAE = "MOVA_AUDIO_VAE"
MOVA_CONDITIONING = "MOVA_CONDITIONING"
AUDIO_LATENT = "MOVA_AUDIO_LATENT"
SAMPLER_OPTIONS = "MOVA_SAMPLER_OPTIONS"

SEED_MAX = 0xFFFFFFFFFFFFFFFF
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn")
AUDIO_VAE_DTYPES = ("default", "fp32", "bf16", "fp16")
ATTENTION_CHOICES = ("auto", "sdpa", "sdpa_cudnn", "sdpa_flash", "flash3", "sage", "comfy")
COMPILE_CHOICES = ("off", "blocks", "blocks-max-autotune")
FP8_COMPUTE_CHOICES = ("auto", "dequant", "fp8_matmul")


@dataclass(frozen=True)
class Socket:
    """A connection-only input or an output."""

    name: str
    type: str
    tooltip: str
    optional: bool = False


@dataclass(frozen=True)
class Widget:
    """A widget input: ``kind`` is INT, FLOAT, STRING or COMBO. A COMBO lists ``options``, or the
    model files of ComfyUI's ``model_folder`` (known only at run time)."""

    name: str
    kind: str
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | None = None
    options: tuple[str, ...] | None = None
    model_folder: str | None = None
    control_after_generate: bool = False
    multiline: bool = False

    @property
    def stored_values(self) -> int:
        """How many entries this widget takes in a UI workflow's ``widgets_values``."""
        return 2 if self.control_after_generate else 1

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid for this widget, or None when it is."""
        if self.kind in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{self.name} must be a number, got {value!r}"
            if self.kind == "INT" and value != int(value):
                return f"{self.name} must be a whole number, got {value!r}"
            if self.min is not None and value < self.min:
                return f"{self.name} {value} is below the minimum {self.min}"
            if self.max is not None and value > self.max:
                return f"{self.name} {value} is above the maximum {self.max}"
            return None
        if not isinstance(value, str):
            return f"{self.name} must be text, got {value!r}"
        if self.options is not None and value not in self.options:
            return f"{self.name} {value!r} is not one of {', '.join(self.options)}"
        return None


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    description: str
    inputs: tuple[Socket | Widget, ...]
    outputs: tuple[Socket, ...]

    @property
    def widgets(self) -> tuple[Widget, ...]:
        return tuple(i for i in self.inputs if isinstance(i, Widget))

    @property
    def sockets(self) -> tuple[Socket, ...]:
        return tuple(i for i in self.inputs if isinstance(i, Socket))


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
        Widget("model_name", "COMBO", model_folder="diffusion_models",
               tooltip="A MOVA video expert in models/diffusion_models: the release's video_dit folder "
               "(high-noise expert) or video_dit_2 folder (low-noise expert), or a single .safetensors file."),
        _dtype_widget(WEIGHT_DTYPES, "the expert's"),
    ),
    outputs=(Socket("expert", VIDEO_EXPERT, "The video expert, for the MOVA Sampler."),),
)

AUDIO_TOWER_LOADER = NodeSpec(
    node_id="MovaAudioTowerLoader",
    display_name="MOVA Audio Tower Loader",
    description="Loads the MOVA audio DiT and the dual-tower bridge (shared by both video experts).",
    inputs=(
        Widget("audio_dit_name", "COMBO", model_folder="diffusion_models",
               tooltip="The release's audio_dit folder (or a single .safetensors file) in models/diffusion_models."),
        Widget("bridge_name", "COMBO", model_folder="diffusion_models",
               tooltip="The release's dual_tower_bridge folder (or a single .safetensors file) in "
               "models/diffusion_models."),
        _dtype_widget(WEIGHT_DTYPES, "the audio DiT's and the bridge's"),
    ),
    outputs=(Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge, for the MOVA Sampler."),),
)

AUDIO_VAE_LOADER = NodeSpec(
    node_id="MovaAudioVAELoader",
    display_name="MOVA Audio VAE Loader",
    description="Loads MOVA's audio codec (DAC, 48 kHz) from models/vae.",
    inputs=(
        Widget("vae_name", "COMBO", model_folder="vae",
               tooltip="The release's audio_vae folder (or its single .safetensors file) in models/vae."),
        _dtype_widget(AUDIO_VAE_DTYPES, "the codec's"),
    ),
    outputs=(Socket("audio_vae", AUDIO_VAE, "The audio codec: sets the audio length and decodes the sound."),),
)

TEXT_ENCODE = NodeSpec(
    node_id="MovaTextEncode",
    display_name="MOVA Text Encode",
    description="Encodes a prompt with UMT5-XXL the way the official MOVA pipeline does: the text is cleaned "
    "(Unicode fixes, HTML entities, runs of whitespace), brackets are plain text (no (emphasis:1.2) weights) and "
    "the prompt is cut at 512 tokens, with a warning on the node when it is longer.",
    inputs=(
        Widget("text", "STRING", default="", multiline=True,
               tooltip="The prompt: prose paragraphs, speech in double quotes as spoken, a last paragraph "
               "\"The audio shows ...\". Brackets are kept as written. At most 512 tokens are read."),
        Socket("clip", "CLIP", "The UMT5-XXL text encoder: Load CLIP with umt5_xxl_fp8_e4m3fn_scaled.safetensors "
               "(or umt5_xxl_fp16), type wan."),
    ),
    outputs=(Socket("conditioning", "CONDITIONING", "The prompt's text states, for MOVA Conditioning."),),
)

CONDITIONING = NodeSpec(
    node_id="MovaConditioning",
    display_name="MOVA Conditioning",
    description="Builds MOVA's image-to-video condition (first frame through the Wan 2.1 VAE) and an "
    "empty joint video+audio latent. Without a start image the first frame is white (text-only recipe).",
    inputs=(
        Socket("positive", "CONDITIONING", "The prompt, from MOVA Text Encode (or CLIP Text Encode) with a umt5_xxl "
               "CLIP loaded as type wan."),
        Socket("negative", "CONDITIONING", "The negative prompt, from MOVA Text Encode (same CLIP)."),
        Socket("vae", "VAE", "The Wan 2.1 VAE (wan_2.1_vae.safetensors) that encodes the first frame."),
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec: its sample rate sets the audio latent length."),
        Widget("width", "INT", default=640, min=16, max=4096, step=16,
               tooltip="Video width in pixels, a multiple of 16 (640 for 360p, 1280 for 720p)."),
        Widget("height", "INT", default=352, min=16, max=4096, step=16,
               tooltip="Video height in pixels, a multiple of 16 (352 for 360p, 720 for 720p)."),
        Widget("length", "INT", default=193, min=1, max=1025, step=4,
               tooltip="Number of frames, 4k+1 (193 frames = about 8 s at 24 fps)."),
        Widget("fps", "FLOAT", default=24.0, min=1.0, max=120.0, step=1.0, round=0.001,
               tooltip="Frames per second. Sets how long the audio is; use the same value in Create Video "
               "(connect the fps output)."),
        Socket("start_image", "IMAGE", "The first frame (resized and centre-cropped to width x height). "
               "Leave empty for text-only generation: a white first frame is used.", optional=True),
    ),
    outputs=(
        Socket("conditioning", MOVA_CONDITIONING, "Prompts + image condition, for the MOVA Sampler."),
        Socket("latent", "LATENT", "Empty joint video+audio latent, for the MOVA Sampler."),
        Socket("fps", "FLOAT", "The fps, to connect to Create Video."),
    ),
)

SAMPLER = NodeSpec(
    node_id="MovaSampler",
    display_name="MOVA Sampler",
    description="Denoises video and audio together: the high-noise expert first, then the low-noise expert, "
    "with the audio tower and bridge throughout.",
    inputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise video expert (video_dit)."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise video expert (video_dit_2)."),
        Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge from the MOVA Audio Tower Loader."),
        Socket("conditioning", MOVA_CONDITIONING, "From MOVA Conditioning."),
        Socket("latent", "LATENT", "The joint latent from MOVA Conditioning."),
        Widget("seed", "INT", default=42, min=0, max=SEED_MAX, control_after_generate=True,
               tooltip="Seed of the starting noise (video and audio from one generator)."),
        Widget("steps", "INT", default=50, min=1, max=1000,
               tooltip="Denoising steps: 50 is the official setting, 25 is faster and usually fine."),
        Widget("cfg", "FLOAT", default=5.0, min=1.0, max=30.0, step=0.1,
               tooltip="Text guidance scale (5.0 official). 1.0 skips the negative prompt and runs twice as fast."),
        Widget("shift", "FLOAT", default=5.0, min=0.01, max=100.0, step=0.1,
               tooltip="Flow-matching sigma shift (5.0 official); higher spends more steps at high noise."),
        Widget("boundary_ratio", "FLOAT", default=0.9, min=0.0, max=1.0, step=0.01,
               tooltip="Switch from the high-noise to the low-noise expert when the timestep drops below "
               "this fraction of 1000 (0.9 official)."),
        Socket("options", SAMPLER_OPTIONS, "Optional: dual CFG, separate audio CFG and shift, CFG cut-off and "
               "step caching from MOVA Sampler Options. Unconnected: the official settings.", optional=True),
    ),
    outputs=(
        Socket("video_latent", "LATENT", "Video latent: decode it with VAE Decode and the Wan 2.1 VAE."),
        Socket("audio_latent", AUDIO_LATENT, "Audio latent: decode it with MOVA Audio Decode."),
    ),
)

AUDIO_DECODE = NodeSpec(
    node_id="MovaAudioDecode",
    display_name="MOVA Audio Decode",
    description="Decodes the audio latent to a waveform as long as the video (for Create Video, Save Audio, "
    "Preview Audio).",
    inputs=(
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec (the one given to MOVA Conditioning)."),
        Socket("audio_latent", AUDIO_LATENT, "The audio latent from the MOVA Sampler."),
        Widget("chunk_size", "INT", default=0, min=0, max=100000,
               tooltip="0 decodes in one go. Otherwise latent steps per piece (50 per second of audio): "
               "less memory, identical result."),
    ),
    outputs=(Socket("audio", "AUDIO", "Mono waveform at the codec's sample rate, trimmed to the video's length."),),
)


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
    ),
    outputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise expert with the LoRA, for the MOVA Sampler."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise expert with the LoRA, for the MOVA Sampler."),
        Socket("audio_tower", AUDIO_TOWER, "The audio tower with the LoRA, for the MOVA Sampler."),
    ),
)

SAMPLER_OPTIONS_NODE = NodeSpec(
    node_id="MovaSamplerOptions",
    display_name="MOVA Sampler Options",
    description="Guidance and speed settings beyond the official pipeline, for the MOVA Sampler's options "
    "input. The defaults reproduce the official behaviour (the speed settings change rounding only).",
    inputs=(
        Widget("bridge_cfg", "FLOAT", default=1.0, min=0.0, max=30.0, step=0.1,
               tooltip="Dual CFG: guidance on the audio-video bridge (s_B). 1.0 is off (official). 3.5 improved "
               "lip sync in the MOVA paper at 360p; it adds a third model pass per step (about 1.5x slower)."),
        Widget("audio_cfg", "FLOAT", default=0.0, min=0.0, max=30.0, step=0.1,
               tooltip="Text CFG for the audio only. 0 uses the sampler's cfg for both (official)."),
        Widget("audio_shift", "FLOAT", default=0.0, min=0.0, max=100.0, step=0.1,
               tooltip="Sigma shift for the audio only (dual sigma shift). 0 uses the sampler's shift (official)."),
        Widget("cfg_cutoff", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.01,
               tooltip="Share of the steps that use CFG; later steps run one plain pass (faster). 1.0 is CFG on "
               "every step (official); 0.8 runs the last 20% of the steps without CFG."),
        Widget("cache_threshold", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.01,
               tooltip="Step caching (like TeaCache / EasyCache): reuse the last step's result while the model "
               "input changed less than this in total (relative L1). 0 is off (official); higher skips more "
               "steps at some quality cost. The sampler shows how many steps it skipped."),
        Widget("attention", "COMBO", default="auto", options=ATTENTION_CHOICES,
               tooltip="Attention kernel. auto: ComfyUI's own attention inside ComfyUI (it follows "
               "--use-sage-attention / --use-flash-attention), else FlashAttention-3 when installed, else PyTorch "
               "SDPA. sdpa_cudnn / sdpa_flash hold SDPA to one kernel; flash3 and sage need their packages."),
        Widget("compile", "COMBO", default="off", options=COMPILE_CHOICES,
               tooltip="torch.compile each transformer block (one compile per kind of block and size; the first "
               "step is slower). On an H200 it cut a 360p step from 11.6 s to 9.6 s. Works with block swap, "
               "LoRA and fp8. Needs a working triton (GPU) or C++ compiler (CPU)."),
        Widget("fp8_compute", "COMBO", default="auto", options=FP8_COMPUTE_CHOICES,
               tooltip="How fp8 weights multiply. auto: in fp8 (scaled fp8 GEMM) when blocks are compiled on a GPU "
               "with fp8 tensor cores (Ada, Hopper and later), else dequantised to bf16. fp8_matmul forces fp8 "
               "GEMMs on such GPUs. Inside ComfyUI, weights loaded through ComfyUI's fp8 layers follow its own "
               "--fast fp8_matrix_mult setting."),
    ),
    outputs=(Socket("options", SAMPLER_OPTIONS, "Connect to the MOVA Sampler's options input."),),
)

ALL_NODES = (VIDEO_EXPERT_LOADER, AUDIO_TOWER_LOADER, AUDIO_VAE_LOADER, CONDITIONING, SAMPLER, AUDIO_DECODE,
             LORA_LOADER, SAMPLER_OPTIONS_NODE, TEXT_ENCODE)
NODES_BY_ID = {spec.node_id: spec for spec in ALL_NODES}
