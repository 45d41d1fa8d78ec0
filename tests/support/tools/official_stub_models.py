"""Stand-ins for the official pipeline's encoders, for the reference tools (imported after ``install_stubs``).

The golden set has no text encoder and no video VAE (they are not part of what is compared), so a release
folder made from it names ``StubVideoVAE`` for ``video_vae``: a diffusers model that hands over given latents
from ``encode`` (in the order they were queued) and records what ``decode`` gets. Its latents_mean / std are
0 / 1, so the pipelines' normalisation leaves latents unchanged: what decode records is the final latent of the
diffusion steps. Text states and audio latents are handed over by the tools themselves.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class StubVideoVAE(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, z_dim: int = 16, scale_factor_spatial: int = 8, scale_factor_temporal: int = 4,
                 latents_mean=None, latents_std=None):
        super().__init__()
        self.register_to_config(latents_mean=latents_mean or [0.0] * z_dim, latents_std=latents_std or [1.0] * z_dim)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # a weight, so diffusers has something to load
        self.queue: list[torch.Tensor] = []
        self.decoded: list[torch.Tensor] = []

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.scale_factor_spatial

    def encode(self, x: torch.Tensor):
        """The next queued latent [B,16,T,h,w], checked against the pixel input's size [B,3,F,H,W]."""
        latent = self.queue.pop(0)
        s, t = self.config.scale_factor_spatial, self.config.scale_factor_temporal
        want = ((x.shape[2] - 1) // t + 1, x.shape[3] // s, x.shape[4] // s)
        assert tuple(latent.shape[2:]) == want, (tuple(latent.shape), tuple(x.shape))
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latent.clone(), sample=lambda *_: latent.clone()))

    def decode(self, z: torch.Tensor):
        """Records the latent; returns black frames [B,3,F,H,W] for the pipeline's post-processing."""
        self.decoded.append(z.detach().clone())
        s, t = self.config.scale_factor_spatial, self.config.scale_factor_temporal
        frames = (z.shape[2] - 1) * t + 1
        return SimpleNamespace(sample=torch.zeros(z.shape[0], 3, frames, z.shape[3] * s, z.shape[4] * s))


class StubTextPart(ModelMixin, ConfigMixin):
    """``text_encoder`` and ``tokenizer`` of a release made from the golden set: the tools hand the pipelines the
    golden text states directly, so calling this is an error."""

    @register_to_config
    def __init__(self, role: str = "text_encoder"):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"the stand-in {self.config.role} was called: hand the pipeline text states instead")

    __call__ = forward
