"""The native path's specs: MOVA Guider, MOVA Scheduler and MOVA Separate AV Latent (plain data; nodes in node.py)."""

from __future__ import annotations

from ..spec_types import (
                          AUDIO_LATENT,
                          AUDIO_TOWER,
                          MOVA_CONDITIONING,
                          SAMPLER_OPTIONS,
                          VIDEO_EXPERT,
                          NodeSpec,
                          Socket,
                          Widget,
)

# The native sampling path: ComfyUI's SamplerCustomAdvanced with stock noise and samplers driving MOVA.
# MOVA Scheduler: "official" is MOVA's own schedule (native/comfy_guider.py), the others ComfyUI's stock schedulers
# (comfy.samplers.SCHEDULER_NAMES checks them at run time; the integration tests hold this list to the server's).
OFFICIAL_SCHEDULE = "official"
STOCK_SCHEDULERS = ("simple", "normal", "beta", "sgm_uniform", "karras", "exponential", "ddim_uniform",
                    "linear_quadratic", "kl_optimal")
SCHEDULER_CHOICES = (OFFICIAL_SCHEDULE, *STOCK_SCHEDULERS)


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
