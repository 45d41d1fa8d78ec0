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
LORA = "MOVA_LORA"
DATASET = "MOVA_DATASET"
EXTENSION = "MOVA_EXTENSION"

# Types ComfyUI shows as widgets; a Socket of one of them is an input that only takes a connection.
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_MAX = 0xFFFFFFFFFFFFFFFF
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn")
AUDIO_VAE_DTYPES = ("default", "fp32", "bf16", "fp16")
ATTENTION_CHOICES = ("auto", "sdpa", "sdpa_cudnn", "sdpa_flash", "flash3", "sage", "comfy")
COMPILE_CHOICES = ("off", "blocks", "blocks-max-autotune")
FP8_COMPUTE_CHOICES = ("auto", "dequant", "fp8_matmul")
FPS_MODES = ("refuse", "resample")
LORA_SAVE_DTYPES = ("fp32", "bf16")
GIVEN_MODALITY_CHOICES = ("renoised", "clean")
PARALLEL_MODES = ("ulysses", "cfg", "cfg+ulysses")  # mova_model.parallel.plan.MODES


@dataclass(frozen=True)
class Socket:
    """A connection-only input or an output."""

    name: str
    type: str
    tooltip: str
    optional: bool = False


@dataclass(frozen=True)
class Widget:
    """A widget input: ``kind`` is INT, FLOAT, STRING, BOOLEAN or COMBO. A COMBO lists ``options``, or the
    model files of ComfyUI's ``model_folder`` (known only at run time) that hold one of ``model_kinds`` (MOVA
    component kinds; files whose contents cannot be told are listed too); a STRING may be ``multiline``."""

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
    model_kinds: tuple[str, ...] | None = None

    @property
    def stored_values(self) -> int:
        """How many entries this widget takes in a UI workflow's ``widgets_values``."""
        return 2 if self.control_after_generate else 1

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid for this widget, or None when it is."""
        if self.kind == "BOOLEAN":
            return None if isinstance(value, bool) else f"{self.name} must be true or false, got {value!r}"
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
    output_node: bool = False  # runs even when nothing uses its outputs (savers)

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
        Widget("model_name", "COMBO", model_folder="diffusion_models", model_kinds=("video_dit",),
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
        Widget("audio_dit_name", "COMBO", model_folder="diffusion_models", model_kinds=("audio_dit",),
               tooltip="The release's audio_dit folder (or a single .safetensors file) in models/diffusion_models."),
        Widget("bridge_name", "COMBO", model_folder="diffusion_models", model_kinds=("dual_tower_bridge",),
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
        Widget("vae_name", "COMBO", model_folder="vae", model_kinds=("audio_vae",),
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
        # Added later: appended so that saved workflows keep their widget positions.
        Socket("end_image", "IMAGE", "Optional last frame (first + last frame): the clip ends on it. Fitted like "
               "the start image; the last image of a batch is used. MOVA was not trained for it (it works through "
               "the Wan 2.2 I2V condition its video experts come from).", optional=True),
        Socket("audio", "AUDIO", "Optional sound the video follows (speech -> lip sync, or sound): mixed to mono, "
               "resampled to the audio VAE's rate, cut or padded with silence to the clip's length, and kept as "
               "given. MOVA Audio Decode then returns this sound itself.", optional=True),
        Socket("video", "IMAGE", "Optional video to write a soundtrack for (video -> audio), e.g. Get Video "
               "Components' images: its first `length` frames are kept (fitted to width x height); the error says "
               "which length to use when it is shorter. Not with start_image, end_image or audio.", optional=True),
        Socket("video_fps", "FLOAT", "Optional: the video's frame rate (Get Video Components' fps). It must equal "
               "fps; the node says so when they differ.", optional=True),
    ),
    outputs=(
        Socket("conditioning", MOVA_CONDITIONING, "Prompts + image condition, for the MOVA Sampler."),
        Socket("latent", "LATENT", "Empty joint video+audio latent, for the MOVA Sampler."),
        Socket("fps", "FLOAT", "The fps, to connect to Create Video."),
        Socket("video", "IMAGE", "With a video connected: the frames the clip covers (its first `length` frames, "
               "at their own size), for Create Video with the new soundtrack. Empty otherwise."),
        # Added later: appended so that saved workflows keep their output positions.
        Socket("av_latent", "LATENT", "The same joint latent in ComfyUI's audio-video form (video and audio in one "
               "LATENT, as LTX-2's): for SamplerCustomAdvanced with the MOVA Guider (ComfyUI 0.8 and later)."),
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
        Socket("lora", LORA, "Optional: a LoRA straight from MOVA Train LoRA, used instead of lora_name (to try a "
               "freshly trained LoRA without saving it first).", optional=True),
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
        Widget("given_modality", "COMBO", default="renoised", options=GIVEN_MODALITY_CHOICES,
               tooltip="How a modality given whole (the sound in speech -> video, the video in video -> audio) is fed "
               "to its tower. renoised: noised to each step's level like the generated one (what the towers saw in "
               "training). clean: as given, with timestep 0 (MOVA's towers take separate timesteps); a whole video "
               "fed clean runs the low-noise expert only. Partly given latents are always re-noised."),
    ),
    outputs=(Socket("options", SAMPLER_OPTIONS, "Connect to the MOVA Sampler's options input."),),
)

# Longer clips: the next clip continues the last frames and seconds of sound of the clip so far.
EXTEND = NodeSpec(
    node_id="MovaExtend",
    display_name="MOVA Extend",
    description="Sets up the next clip of a longer video: its first `overlap` frames and their sound are the end "
    "of the clip so far (known frames in the I2V condition, kept video and audio latents), the rest follows its "
    "own prompt. Sample it with the MOVA Sampler, decode it, then MOVA Join appends it. Chain Extend + Join for "
    "more clips. MOVA was not trained for this; it uses its architecture as is.",
    inputs=(
        Socket("positive", "CONDITIONING", "The next clip's prompt (CLIP Text Encode with the umt5_xxl CLIP, type wan)."),
        Socket("negative", "CONDITIONING", "The negative prompt (same CLIP)."),
        Socket("vae", "VAE", "The Wan 2.1 VAE (wan_2.1_vae.safetensors) that encodes the overlap frames."),
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec: encodes the overlap's sound."),
        Socket("images", "IMAGE", "The clip so far: VAE Decode's frames for the first clip, MOVA Join's images "
               "after that. Its width and height (multiples of 16) are the next clip's."),
        Socket("audio", "AUDIO", "The clip so far's sound: MOVA Audio Decode's audio for the first clip, MOVA Join's "
               "after that (mono, at the audio VAE's rate, as long as the frames)."),
        Widget("length", "INT", default=193, min=5, max=1025, step=4,
               tooltip="Frames of the next clip, 4k+1, overlap included (193 = about 8 s at 24 fps); the video "
               "grows by length - overlap frames."),
        Widget("overlap", "INT", default=17, min=1, max=1021, step=4,
               tooltip="Frames (4k+1) the next clip shares with the end of the clip so far: they and their sound "
               "are given, so motion, voices and ambience carry on. 17 frames = 0.71 s at 24 fps. More gives more "
               "context and less new footage per clip."),
        Widget("fps", "FLOAT", default=24.0, min=1.0, max=120.0, step=1.0, round=0.001,
               tooltip="The video's frame rate: connect MOVA Conditioning's fps. The node checks it against the "
               "clip so far's frames and sound."),
        Widget("crossfade", "FLOAT", default=0.1, min=0.0, max=10.0, step=0.01,
               tooltip="Seconds over which MOVA Join fades from the clip so far's sound into the next clip's, "
               "ending where the new frames start (0: a hard cut). At most the overlap's duration."),
    ),
    outputs=(
        Socket("conditioning", MOVA_CONDITIONING, "The next clip's prompts and condition, for the MOVA Sampler."),
        Socket("latent", "LATENT", "The next clip's joint latent with the overlap kept, for the MOVA Sampler."),
        Socket("extension", EXTENSION, "The clip so far and the overlap, for MOVA Join."),
        # Added later: appended so that saved workflows keep their output positions.
        Socket("av_latent", "LATENT", "The next clip's latent in ComfyUI's audio-video form, the overlap kept through "
               "nested noise masks: for SamplerCustomAdvanced with a MOVA Guider on this node's conditioning "
               "(ComfyUI 0.8 and later)."),
    ),
)

JOIN = NodeSpec(
    node_id="MovaJoin",
    display_name="MOVA Join",
    description="Appends the clip made from MOVA Extend to the clip so far: the overlap frames are dropped (no "
    "repeated frames) and the sound continues, crossfaded over the end of the overlap. Exactly length - overlap "
    "frames are added, and the sound stays as long as the video.",
    inputs=(
        Socket("extension", EXTENSION, "The extension output of the MOVA Extend that set up this clip."),
        Socket("images", "IMAGE", "The new clip's frames (VAE Decode of the MOVA Sampler's video latent)."),
        Socket("audio", "AUDIO", "The new clip's sound (MOVA Audio Decode)."),
    ),
    outputs=(
        Socket("images", "IMAGE", "All frames so far, for Create Video or the next MOVA Extend."),
        Socket("audio", "AUDIO", "The whole sound so far, for Create Video or the next MOVA Extend."),
        Socket("fps", "FLOAT", "The frame rate, for Create Video."),
    ),
)

# Prompt tools (no model weights): an OpenAI-compatible language model writes the caption, or fields make one.
DEFAULT_LLM_URL = "http://localhost:11434/v1"  # Ollama's OpenAI-compatible endpoint
DEFAULT_LLM_MODEL = "qwen2.5vl:7b"
LLM_SEED_MAX = 0x7FFFFFFF  # servers take the seed as a 32-bit integer (llama.cpp: unsigned)
SPEECH_LINES = 3

PROMPT_ENHANCE = NodeSpec(
    node_id="MovaPromptEnhance",
    display_name="MOVA Prompt Enhance",
    description="A language model behind an OpenAI-compatible server (Ollama, LM Studio, llama.cpp's server, "
    "vLLM, or a hosted API) rewrites a short idea into the long caption style MOVA was trained on, true to the "
    "first frame when one is connected (needs a vision model). Same inputs and seed: ComfyUI reuses the last "
    "caption without asking the server again.",
    inputs=(
        Widget("idea", "STRING", default="", multiline=True,
               tooltip="What should happen in the clip, in a few words or a few lines, in any language. Put speech "
               "in double quotes with the exact words, in the language to be spoken: they are kept verbatim. "
               "The output of MOVA Prompt Builder works here too."),
        Widget("base_url", "STRING", default=DEFAULT_LLM_URL,
               tooltip="The server's OpenAI-compatible address (http or https), up to /v1. Ollama: "
               "http://localhost:11434/v1, LM Studio: http://localhost:1234/v1, llama.cpp's llama-server: "
               "http://localhost:8080/v1. Only this machine (localhost, 127.x, ::1) or hosts you list in the "
               "environment variable MOVA_LLM_HOSTS before starting ComfyUI are contacted: a workflow cannot send "
               "your idea, picture or key anywhere else (docs/prompting.md)."),
        Widget("model", "STRING", default=DEFAULT_LLM_MODEL,
               tooltip="The model's name on the server (Ollama: as in 'ollama list'). With an image connected it "
               "must be a vision model (e.g. qwen2.5vl:7b, gemma3:12b). A wrong name lists the server's models."),
        Widget("api_key_env", "STRING", default="",
               tooltip="Leave empty. The API key comes only from the environment variable MOVA_LLM_API_KEY (or the "
               "variable MOVA_LLM_HOSTS names for a host) and goes only to hosts listed in MOVA_LLM_HOSTS. Kept for "
               "old workflows: a name here must be the variable your settings give the host, else the run stops "
               "(the pack never reads a variable a workflow names). Never put a key here: widget values are saved "
               "in workflows and images."),
        Widget("temperature", "FLOAT", default=0.7, min=0.0, max=2.0, step=0.05,
               tooltip="Sampling temperature of the language model: lower keeps closer to the idea, higher "
               "varies more."),
        # control_after_generate: ComfyUI's frontend gives every input named seed this control (and saves its value
        # after the seed's) whether the node asks for it or not.
        Widget("seed", "INT", default=0, min=0, max=LLM_SEED_MAX, control_after_generate=True,
               tooltip="Seed sent to the server (most local servers honour it). Change it for another version of "
               "the caption; the same seed and inputs reuse the last caption without a new request."),
        Widget("max_tokens", "INT", default=2048, min=64, max=65536,
               tooltip="Most tokens the model may write. A caption needs about 500; reasoning models spend more "
               "on thinking first. A reply cut off at this limit is an error."),
        Widget("timeout", "INT", default=300, min=5, max=3600,
               tooltip="Seconds the whole exchange with the server may take (connecting, every request, the "
               "reply), however slowly it answers; Cancel stops it at once. The first request loads the model "
               "into memory, which can take minutes for a large local model."),
        Widget("retry_without_image", "BOOLEAN", default=False,
               tooltip="When the model cannot read images: off stops with an error; on asks again without the "
               "first frame (the caption then follows the idea alone) and says so on the node."),
        Socket("image", "IMAGE", "Optional: the first frame (the one MOVA Conditioning gets), sent to the model as "
               "a PNG (longer side at most 1024 pixels; the first image of a batch) so the caption fits it.",
               optional=True),
    ),
    outputs=(Socket("caption", "STRING", "The caption in MOVA's style, for the text encoder's text input."),),
)


def _speech_widgets(index: int) -> tuple[Widget, ...]:
    return (
        Widget(f"speaker_{index}", "STRING", default="",
               tooltip=f"Speech line {index}: who speaks, as the caption should name them (e.g. 'the woman in the "
               "green raincoat'). Empty with empty words: no line."),
        Widget(f"language_{index}", "STRING", default="",
               tooltip=f"Speech line {index}: the language spoken (e.g. English, French, Mandarin); named in the "
               "audio paragraph. May stay empty."),
        Widget(f"words_{index}", "STRING", default="",
               tooltip=f"Speech line {index}: the exact words, in their own language; quoted verbatim in the "
               "caption. Keep them short enough to say in the clip (about 20 words for 8 s)."),
    )


PROMPT_BUILDER = NodeSpec(
    node_id="MovaPromptBuilder",
    display_name="MOVA Prompt Builder",
    description="Puts a caption together in MOVA's style from fields (no network): the scene, what happens with "
    "the camera and the speech lines quoted verbatim, then the closing paragraph that starts 'The audio shows'. "
    "Use it as the prompt, or as the idea of MOVA Prompt Enhance.",
    inputs=(
        Widget("scene", "STRING", default="", multiline=True,
               tooltip="First paragraph: who and what is in the shot, how they look, where, the light and style. "
               "Written as prose; used as is."),
        Widget("action", "STRING", default="", multiline=True,
               tooltip="What happens over the clip, in order: movements, gestures, expressions. Written as prose; "
               "the speech lines follow it."),
        Widget("camera", "STRING", default="",
               tooltip="The shot and its movement as a phrase, e.g. 'a slow push-in from a medium shot to a "
               "close-up'; written as 'The shot is …'. May stay empty."),
        *(w for i in range(1, SPEECH_LINES + 1) for w in _speech_widgets(i)),
        Widget("music", "STRING", default="",
               tooltip="The music as a phrase, e.g. 'a soft jazz piano that fades out at the end'; written as "
               "'The music is …'. Empty: no music sentence."),
        Widget("effects", "STRING", default="",
               tooltip="Sound effects tied to the action, as a phrase, e.g. 'rain drumming on the awning and a "
               "tram bell'; written as 'The sound effects are …'."),
        Widget("ambience", "STRING", default="",
               tooltip="The background sound, as a phrase, e.g. 'the low hum of evening traffic'; written as "
               "'The ambience is …'."),
    ),
    outputs=(Socket("caption", "STRING", "The caption, for the text encoder's text input or Prompt Enhance's "
                    "idea."),),
)

DATASET_NODE = NodeSpec(
    node_id="MovaDataset",
    display_name="MOVA Dataset",
    description="Turns a folder of clips (video files with sound, each with a same-name .txt caption) into MOVA "
    "training latents: every clip fitted to width x height x length at fps, encoded once (Wan 2.1 VAE, MOVA's "
    "audio VAE, the text encoder) and cached in output/mova_datasets; unchanged inputs reuse the cache.",
    inputs=(
        Socket("vae", "VAE", "The Wan 2.1 VAE (wan_2.1_vae.safetensors): encodes the clips and their first frames."),
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec: encodes the clips' sound (mixed to mono at its rate)."),
        Socket("clip", "CLIP", "The text encoder (umt5_xxl with Load CLIP, type wan): encodes each caption as CLIP "
               "Text Encode does."),
        Widget("folder", "STRING", default="mova_clips",
               tooltip="The clip folder: a folder inside ComfyUI/input (or a full path inside a folder listed in the "
               "environment variable MOVA_DATASET_FOLDERS). Each clip (mp4, mov, mkv, webm, "
               "avi) needs a sound track and a caption in a .txt file of the same name."),
        Widget("width", "INT", default=640, min=16, max=4096, step=16,
               tooltip="Training width in pixels, a multiple of 16: clips are centre-cropped and resized to it "
               "(640 for 360p)."),
        Widget("height", "INT", default=352, min=16, max=4096, step=16,
               tooltip="Training height in pixels, a multiple of 16 (352 for 360p)."),
        Widget("length", "INT", default=193, min=1, max=1025, step=4,
               tooltip="Frames per clip, 4k+1 (193 = about 8 s at 24 fps): the first frames of each clip; shorter "
               "clips are refused."),
        Widget("fps", "FLOAT", default=24.0, min=1.0, max=120.0, step=1.0, round=0.001,
               tooltip="Frame rate of the training clips; it also sets how much sound each clip gives."),
        Widget("fps_mode", "COMBO", default="refuse", options=FPS_MODES,
               tooltip="Clips at another frame rate: refuse stops with a list of them; resample picks the frame "
               "nearest each time step (reported on the node)."),
    ),
    outputs=(Socket("dataset", DATASET, "The encoded clips, for MOVA Train LoRA."),),
)


def _switch(name: str, what: str) -> Widget:
    return Widget(name, "BOOLEAN", default=True,
                  tooltip=f"Train a LoRA on {what}'s attention projections (q, k, v, o). Off: it stays frozen.")


TRAIN_LORA = NodeSpec(
    node_id="MovaTrainLora",
    display_name="MOVA Train LoRA",
    description="Trains a MOVA LoRA the way the official trainers do (even steps the high-noise expert, odd steps "
    "the low-noise one; flow-matching loss on video and sound). Saves a checkpoint every few steps in "
    "output/mova_training/<run_name> and continues from it when queued again.",
    inputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise video expert (video_dit), bf16 or fp8: its weights "
               "stay frozen."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise video expert (video_dit_2), bf16 or fp8."),
        Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge from the MOVA Audio Tower Loader."),
        Socket("dataset", DATASET, "The encoded clips from MOVA Dataset."),
        Widget("run_name", "STRING", default="my_mova_lora",
               tooltip="Name of this training run: its checkpoints go to output/mova_training/<run_name>. Queue the "
               "same run again (more steps) to continue it."),
        Widget("steps", "INT", default=200, min=1, max=1000000,
               tooltip="Optimizer steps in all (a continued run counts the steps it already has). Each step trains "
               "one expert, alternating."),
        Widget("rank", "INT", default=8, min=1, max=256, tooltip="LoRA rank (8 in the official trainers)."),
        Widget("alpha", "FLOAT", default=8.0, min=0.01, max=1024.0, step=0.01,
               tooltip="LoRA alpha: the update is scaled by alpha / rank (8 in the official trainers)."),
        Widget("learning_rate", "FLOAT", default=0.0001, min=0.000001, max=1.0, step=0.000001, round=0.000001,
               tooltip="AdamW learning rate (0.0001 official), constant; weight decay 0.01 and gradient clipping "
               "at 1.0 as in the official trainers."),
        Widget("batch_size", "INT", default=1, min=1, max=64, tooltip="Clips per micro-batch (1 official)."),
        Widget("grad_accumulation", "INT", default=1, min=1, max=1024,
               tooltip="Micro-batches whose gradients add up before each optimizer step (the official configs use 4)."),
        Widget("seed", "INT", default=0, min=0, max=SEED_MAX, control_after_generate=True,
               tooltip="Seed of the LoRA's initial weights and of every clip order, timestep and noise draw."),
        _switch("train_high_noise", "the high-noise expert"),
        _switch("train_low_noise", "the low-noise expert"),
        _switch("train_audio", "the audio DiT"),
        _switch("train_bridge", "the dual-tower bridge"),
        Widget("gradient_checkpointing", "BOOLEAN", default=True,
               tooltip="Recompute each block in the backward pass instead of keeping its activations: much less "
               "memory, about a third more time."),
        Widget("checkpoint_every", "INT", default=50, min=1, max=100000,
               tooltip="Save a checkpoint every this many steps (and at the end): a Cancel or crash loses at most "
               "this many steps."),
        Widget("resume", "BOOLEAN", default=True,
               tooltip="Continue from the run's latest checkpoint when there is one. Off refuses a run name that "
               "already has checkpoints (nothing is overwritten)."),
        Widget("offload_activations", "BOOLEAN", default=True,
               tooltip="Keep the activations saved for the backward pass in system RAM instead of VRAM (as the "
               "official low-resource trainer does): much less VRAM for long clips, some time for the copies."),
    ),
    outputs=(
        Socket("lora", LORA, "The trained LoRA: for MOVA Save LoRA, or straight into a MOVA LoRA Loader's lora input."),
        Socket("loss_curve", "IMAGE", "The loss per step, one line per video expert."),
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
        Widget("dtype", "COMBO", default="fp32", options=LORA_SAVE_DTYPES,
               tooltip="Precision of the saved weights: fp32 as trained, bf16 half the size."),
        Widget("official_folder", "BOOLEAN", default=False,
               tooltip="Also write <filename>_official/lora_weights.pt + lora_config.pt: the folder MOVA's own "
               "inference script (--lora_path) and accelerate trainer (resume_from) read."),
    ),
    outputs=(),
    output_node=True,
)

# The native sampling path: ComfyUI's SamplerCustomAdvanced with stock noise and samplers driving MOVA.
# ComfyUI's stock scheduler names (the same in v0.3.64 and v0.8.0); "official" is MOVA's own schedule.
SCHEDULER_CHOICES = ("official", "simple", "normal", "beta", "sgm_uniform", "karras", "exponential", "ddim_uniform",
                     "linear_quadratic", "kl_optimal")

GUIDER = NodeSpec(
    node_id="MovaGuider",
    display_name="MOVA Guider",
    description="MOVA as a GUIDER for SamplerCustomAdvanced (ComfyUI 0.8 and later): any stock sampler, noise and "
    "sigmas drive MOVA's two video experts (switched at the boundary), the audio tower and bridge, with text CFG "
    "and MOVA Sampler Options' dual CFG, audio CFG / shift, CFG cut-off and step caching. Sample the av_latent of "
    "MOVA Conditioning (or MOVA Extend). Euler + MOVA Scheduler (official) + Random Noise equals the MOVA Sampler.",
    inputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise video expert (video_dit)."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise video expert (video_dit_2)."),
        Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge from the MOVA Audio Tower Loader."),
        Socket("conditioning", MOVA_CONDITIONING, "From MOVA Conditioning or MOVA Extend (the same node whose av_latent is sampled)."),
        Widget("cfg", "FLOAT", default=5.0, min=1.0, max=30.0, step=0.1,
               tooltip="Text guidance scale (5.0 official). 1.0 skips the negative prompt and runs twice as fast."),
        Widget("shift", "FLOAT", default=5.0, min=0.01, max=100.0, step=0.1,
               tooltip="Flow-matching sigma shift (5.0 official): MOVA Scheduler's sigmas and the audio shift "
               "follow it."),
        Widget("boundary_ratio", "FLOAT", default=0.9, min=0.0, max=1.0, step=0.01,
               tooltip="Switch from the high-noise to the low-noise expert when the timestep drops below this "
               "fraction of 1000 (0.9 official)."),
        Socket("options", SAMPLER_OPTIONS, "Optional: dual CFG, separate audio CFG and shift, CFG cut-off and "
               "step caching from MOVA Sampler Options. Unconnected: the official settings.", optional=True),
    ),
    outputs=(Socket("guider", "GUIDER", "For SamplerCustomAdvanced's guider input, and MOVA Scheduler."),),
)

SCHEDULER = NodeSpec(
    node_id="MovaScheduler",
    display_name="MOVA Scheduler",
    description="The sigmas for SamplerCustomAdvanced with the MOVA Guider: MOVA's official schedule (the MOVA "
    "Sampler's steps) or one of ComfyUI's stock schedulers, with the guider's shift.",
    inputs=(
        Socket("guider", "GUIDER", "The MOVA Guider: its shift and its release's scheduler settings are used."),
        Widget("steps", "INT", default=50, min=1, max=1000,
               tooltip="Denoising steps: 50 is the official setting, 25 is faster and usually fine."),
        Widget("scheduler", "COMBO", default="official", options=SCHEDULER_CHOICES,
               tooltip="official: MOVA's shifted sigmas exactly as the MOVA Sampler steps (with euler it is the "
               "MOVA Sampler's run). The others are ComfyUI's schedulers on MOVA's shifted flow matching."),
    ),
    outputs=(Socket("sigmas", "SIGMAS", "For SamplerCustomAdvanced's sigmas input."),),
)

SEPARATE_AV = NodeSpec(
    node_id="MovaSeparateAVLatent",
    display_name="MOVA Separate AV Latent",
    description="Splits MOVA's joint video+audio latent (what SamplerCustomAdvanced makes of MOVA Conditioning's "
    "av_latent) into the video latent for VAE Decode and the audio latent for MOVA Audio Decode.",
    inputs=(
        Socket("av_latent", "LATENT", "The joint latent: SamplerCustomAdvanced's output (or MOVA Conditioning's "
               "av_latent)."),
    ),
    outputs=(
        Socket("video_latent", "LATENT", "Video latent: decode it with VAE Decode and the Wan 2.1 VAE."),
        Socket("audio_latent", AUDIO_LATENT, "Audio latent: decode it with MOVA Audio Decode."),
    ),
)

# Several GPUs of one machine (nodes/parallel): worker processes run the MOVA Sampler's or MOVA Guider's sampling.
PARALLEL = NodeSpec(
    node_id="MovaParallel",
    display_name="MOVA Parallel",
    description="Runs the MOVA Sampler (or the MOVA Guider) on several GPUs of this machine: one worker process per "
    "GPU keeps the experts loaded between queued runs. ulysses splits the video tokens over the GPUs, cfg runs the "
    "prompt's and the negative prompt's passes side by side, cfg+ulysses does both; shard_weights splits the video "
    "experts' weights over the GPUs (FSDP2). Connect its options output to the sampler's options input.",
    inputs=(
        Widget("devices", "STRING", default="all",
               tooltip="The GPUs, one worker each: all (every GPU ComfyUI sees), or numbers such as 0,1 or 0,1,2,3. "
               "cpu:2 runs 2 workers on the CPU (gloo), to try a workflow on a machine without GPUs."),
        Widget("mode", "COMBO", default="ulysses", options=PARALLEL_MODES,
               tooltip="ulysses: each GPU holds a share of the video tokens; the number of GPUs must divide the "
               "video expert's 40 heads (2, 4, 5 or 8). cfg: the prompt's and the negative prompt's passes on 2 "
               "GPUs (3 with dual CFG's third pass). cfg+ulysses: 2 CFG groups, each splitting the tokens (4, 8, "
               "10 or 16 GPUs)."),
        Widget("shard_weights", "BOOLEAN", default=False,
               tooltip="Split each video expert's weights over the GPUs (FSDP2): a GPU holds 1/N of them plus one "
               "block at a time, so two 24 GB cards can hold an expert. Costs one weight transfer per block and "
               "pass. Not with compile or block swap."),
        Widget("swap_blocks", "INT", default=0, min=0, max=100,
               tooltip="Block swap in every worker: this many of each video expert's blocks stay in the host's "
               "memory and are streamed to the GPU per step. 0 keeps all on the GPU. Not with shard_weights."),
        Widget("keep_loaded", "BOOLEAN", default=True,
               tooltip="Keep the workers and their loaded experts between queued runs (the next run starts at once). "
               "Off: the workers stop after each run and free their GPUs. ComfyUI's Unload Models stops them too."),
        Socket("options", SAMPLER_OPTIONS, "Optional: MOVA Sampler Options' settings, passed on with the parallel "
               "setup. Unconnected: the official settings.", optional=True),
    ),
    outputs=(Socket("options", SAMPLER_OPTIONS, "The sampler options with the parallel setup: connect to the MOVA "
                    "Sampler's (or MOVA Guider's) options input."),),
)

ALL_NODES = (VIDEO_EXPERT_LOADER, AUDIO_TOWER_LOADER, AUDIO_VAE_LOADER, CONDITIONING, SAMPLER, AUDIO_DECODE,
             LORA_LOADER, SAMPLER_OPTIONS_NODE, PROMPT_ENHANCE, PROMPT_BUILDER, DATASET_NODE, TRAIN_LORA, SAVE_LORA,
             TEXT_ENCODE, EXTEND, JOIN, GUIDER, SCHEDULER, SEPARATE_AV, PARALLEL)
NODES_BY_ID = {spec.node_id: spec for spec in ALL_NODES}
