"""Known regions of the joint latent: parts that are given, not generated.

The convention is ComfyUI's latent ``noise_mask``: 1 = generate, 0 = keep (fractions blend). Video masks run
over latent frames ([B,1,T,1,1], or anything that broadcasts to the latents), audio masks over latent steps
([B,1,L]).

At every step the kept parts of the model input are replaced by the given clean latents noised to that step's
sigma with the run's noise, ``sigma * noise + (1 - sigma) * clean``: what ComfyUI's KSampler does for latent
inpainting (there too the noise is the sampler's starting noise, the same at every step). The sigma is the one
the tower is told (timestep / 1000), so the kept region looks exactly like a training sample at that timestep.
After the last step the kept parts are the given latents, bit for bit.

A modality given whole (every mask value 0) may instead be fed clean with timestep 0 (``clean_whole``): MOVA's
two towers take separate timesteps, so the other one still denoises on its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KnownLatents:
    """Given latents of one modality and its noise mask (1 generate, 0 keep).

    ``latents`` has the modality's full shape (video [B,16,T,h,w] in MOVA's normalised space, audio [B,C,L]);
    its values only matter where the mask is below 1. ``mask`` broadcasts to ``latents``.
    """

    latents: torch.Tensor
    mask: torch.Tensor

    @property
    def whole(self) -> bool:
        """Every value is kept (the whole modality is given)."""
        return bool((self.mask == 0).all())


def check_known(known: KnownLatents | None, shape: tuple[int, ...], name: str) -> None:
    """Raise a ValueError naming the problem when ``known`` does not fit latents of ``shape``."""
    if known is None:
        return
    if tuple(known.latents.shape) != tuple(shape):
        raise ValueError(
            f"the given {name} latents are {tuple(known.latents.shape)} but the {name} latent is {tuple(shape)}: "
            "build both for the same size, length and fps"
        )
    mask = known.mask
    if mask.dim() != len(shape) or any(m not in (1, s) for m, s in zip(mask.shape, shape)):
        raise ValueError(
            f"the {name} noise mask {tuple(mask.shape)} does not fit the {name} latent {tuple(shape)}: give one "
            f"value per latent {'frame [B,1,T,1,1]' if len(shape) == 5 else 'step [B,1,L]'} (1 generate, 0 keep)"
        )
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"the {name} noise mask must lie in 0..1 (1 generate, 0 keep)")


def blend(x: torch.Tensor, given: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x * mask + given * (1 - mask): exactly x where the mask is 1 and exactly ``given`` where it is 0 (whatever
    x holds there)."""
    return torch.where(mask == 0, given, x * mask + given * (1 - mask))


class KnownRegions:
    """Puts the given latents into the sampler's state: re-noised before each step, clean at the end."""

    def __init__(self, video: KnownLatents | None, audio: KnownLatents | None, video_noise: torch.Tensor,
                 audio_noise: torch.Tensor, clean_whole: bool = False):
        device = video_noise.device
        self._parts = []
        for known, noise in ((video, video_noise), (audio, audio_noise)):
            if known is None:
                self._parts.append(None)
                continue
            latents = known.latents.to(device=device, dtype=torch.float32)
            mask = known.mask.to(device=device, dtype=torch.float32)
            clean = clean_whole and known.whole
            self._parts.append((latents, mask, noise.to(device=device, dtype=torch.float32), clean))

    @property
    def clean(self) -> tuple[bool, bool]:
        """(video, audio): whether that modality is fed clean at timestep 0."""
        return tuple(part is not None and part[3] for part in self._parts)

    def timesteps(self, t_video: float, t_audio: float) -> tuple[float, float]:
        """The timesteps the towers are given: 0 for a modality fed clean."""
        clean_v, clean_a = self.clean
        return (0.0 if clean_v else t_video), (0.0 if clean_a else t_audio)

    def model_inputs(self, video: torch.Tensor, audio: torch.Tensor, sigma_video: float,
                     sigma_audio: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's latents with the kept parts replaced: noised to each modality's sigma, or clean."""
        out = []
        for x, part, sigma in zip((video, audio), self._parts, (sigma_video, sigma_audio)):
            if part is None:
                out.append(x)
                continue
            latents, mask, noise, clean = part
            given = latents if clean else sigma * noise + (1 - sigma) * latents
            out.append(blend(x, given, mask))
        return out[0], out[1]

    def finish(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final latents: the given latents in the kept parts, exactly."""
        out = []
        for x, part in zip((video, audio), self._parts):
            out.append(x if part is None else blend(x, part[0], part[1]))
        return out[0], out[1]
