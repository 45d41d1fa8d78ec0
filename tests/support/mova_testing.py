"""Helpers shared by the tests (importable as a module: pytest puts tests/support/ on sys.path)."""

import torch


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error ||out - ref|| / ||ref||, in float64."""
    out, ref = out.double(), ref.double()
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()


GOLDEN_TOL = 1e-4

# Measured on the golden tiny model (bf16 compute, fp8 e4m3fn per-tensor scales): rel. L2 of fp8 vs bf16
# 0.024-0.041 over the four joint-forward cases; the bound leaves about 2x margin.
FP8_VS_BF16_BOUND = 0.08
STEP_CASES = {"step_high": ("high", 850, 850, None), "step_low": ("low", 850, 850, None),
              "step_split_t": ("high", 930, 610, None), "step_fps25": ("low", 400, 400, 25.0)}


def text_cond(length=24, dim=4096, seed=0):
    """A CONDITIONING of random text states [1, length, dim] (no pooled output), as a text encoder gives."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, dim, generator=g), {"pooled_output": None}]]


def pooling_encoder(frames: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in with the Wan 2.1 VAE's geometry ([F,H,W,3] -> [1,16,T,H/8,W/8]): each latent
    frame is the 8x8 average of its first pixel frame, repeated over 16 channels scaled by the channel index."""
    f, h, w, _ = frames.shape
    first = frames[::4].mean(-1)  # [T,H,W]
    pooled = torch.nn.functional.avg_pool2d(first[:, None], 8)[:, 0]  # [T,h,w]
    scale = torch.arange(1, 17, dtype=torch.float32).view(16, 1, 1, 1)
    return (pooled[None] * scale)[None]


def golden_scheduler(golden_cases):
    """The golden set's scheduler settings (those of its release's scheduler_config.json)."""
    from comfyui_mova.mova_model.configs import SchedulerConfig, config_from_dict
    return config_from_dict(SchedulerConfig, golden_cases["scheduler"])


def load_golden_towers(golden_dir, dtype=torch.float32, device="cpu"):
    """The golden tiny release as MovaTowers (high and low expert, audio DiT, bridge), freshly loaded."""
    from comfyui_mova.mova_model.weights import loading
    from comfyui_mova.mova_model.sampling import sampler
    ckpt = golden_dir / "checkpoint"
    load = lambda kind, folder: loading.load_component(ckpt, kind, dtype=dtype, device=device, component=folder)  # noqa: E731
    return sampler.MovaTowers([load("video_dit", "video_dit"), load("video_dit", "video_dit_2")],
                              load("audio_dit", "audio_dit"), load("dual_tower_bridge", "dual_tower_bridge"))


def prepare_modes(vae, size, **kwargs):
    """MOVA Conditioning's modes on the golden parts: ``prepare_conditioning`` with random prompts, the pooling encoder
    and the codec of ``vae``; ``size`` is (width, height, frames, fps), ``kwargs`` the mode's inputs."""
    from comfyui_mova.nodes.conditioning.audio_input import codec_encode
    from comfyui_mova.nodes.conditioning.modes import prepare_conditioning
    width, height, frames, fps = size
    encode_audio = lambda wave: codec_encode(vae, wave)  # noqa: E731
    return prepare_conditioning(text_cond(seed=1), text_cond(seed=2), pooling_encoder, kwargs.pop("image", None), width,
                                height, frames, fps, vae.model.config, encode_audio=encode_audio, **kwargs)


def extend_clip(vae, clip, length=None, overlap=5, crossfade=0.02, **kw):
    """MOVA Extend's set-up of the next clip after ``clip`` (frames, sound, fps), on the golden codec ``vae``."""
    from comfyui_mova.nodes.conditioning.audio_input import codec_encode
    from comfyui_mova.nodes.conditioning.extend import prepare_extension
    frames, sound, fps = clip
    encode_audio = lambda wave: codec_encode(vae, wave)  # noqa: E731
    args = dict(images=frames, audio=sound, length=length or frames.shape[0], overlap=overlap, fps=fps,
                crossfade=crossfade) | kw
    return prepare_extension(text_cond(seed=5), text_cond(seed=6), pooling_encoder, encode_audio, vae.model.config,
                             args["images"], args["audio"], args["length"], args["overlap"], args["fps"],
                             args["crossfade"])
