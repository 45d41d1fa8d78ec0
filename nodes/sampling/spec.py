"""The sampling wing's specs: MOVA Sampler, MOVA Sampler Options and MOVA Audio Decode (plain data; nodes in
node.py). The choices come from the registries that check them."""

from __future__ import annotations

from ...mova_model.memory.speed import COMPILE_MODES, FP8_COMPUTE
from ...mova_model.networks.attention import BUILT_IN_BACKENDS
from ..spec_types import (
                          AUDIO_LATENT,
                          AUDIO_TOWER,
                          AUDIO_VAE,
                          MOVA_CONDITIONING,
                          SAMPLER_OPTIONS,
                          SEED_MAX,
                          VIDEO_EXPERT,
                          NodeSpec,
                          Socket,
                          Widget,
)
from .run import GIVEN_MODALITIES

# ComfyUI's own attention, registered under this name by nodes/comfy_attention.py when ComfyUI starts
COMFY_ATTENTION = "comfy"
ATTENTION_CHOICES = ("auto", *BUILT_IN_BACKENDS, COMFY_ATTENTION)
COMPILE_CHOICES = tuple(COMPILE_MODES)
FP8_COMPUTE_CHOICES = FP8_COMPUTE
GIVEN_MODALITY_CHOICES = GIVEN_MODALITIES

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
               "LoRA and fp8. kernels: compile only the fused element-wise kernels (RMS norm + RoPE, modulation; "
               "seconds to compile, blocks stay eager). Needs a working triton (GPU) or C++ compiler (CPU)."),
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
