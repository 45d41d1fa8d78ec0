"""Wan 2.1 video latents: raw VAE space (what ComfyUI's LATENT holds) <-> MOVA's normalised space.

MOVA's video towers work on (x - mean) / std with the Wan 2.1 VAE's per-channel latent statistics.
"""

from __future__ import annotations

import torch

# Per-channel mean and std of the Wan 2.1 VAE's 16 latent channels.
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 5 or x.shape[1] != len(WAN21_LATENT_MEAN):
        raise ValueError(
            f"expected Wan 2.1 video latents [B,16,T,H,W], got {tuple(x.shape)}: "
            "use the Wan 2.1 VAE (wan_2.1_vae.safetensors), not another VAE"
        )
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(WAN21_LATENT_MEAN, device=x.device, dtype=torch.float32).view(shape)
    std = torch.tensor(WAN21_LATENT_STD, device=x.device, dtype=torch.float32).view(shape)
    return mean, std


def normalise_video_latents(raw: torch.Tensor) -> torch.Tensor:
    """Raw Wan 2.1 VAE latents [B,16,T,H,W] -> MOVA's normalised latents, float32."""
    mean, std = _stats(raw)
    return (raw.float() - mean) / std


def denormalise_video_latents(latents: torch.Tensor) -> torch.Tensor:
    """MOVA's normalised latents [B,16,T,H,W] -> raw Wan 2.1 VAE latents, float32."""
    mean, std = _stats(latents)
    return latents.float() * std + mean
