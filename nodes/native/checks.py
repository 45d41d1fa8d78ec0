"""MOVA Guider's checks before a native sampling run (plain Python): the parts belong together and fit the
latents SamplerCustomAdvanced hands over, and the run fits the device."""

from __future__ import annotations

import torch

from ...mova_model.memory.estimate import check_fits, sampling_bytes
from ...mova_model.sampling.sampler import MovaTowers
from ..handles import LoadedPart, MovaConditioning
from ..sampling.run import matching_towers


def check_native_setup(high: LoadedPart, low: LoadedPart, tower: LoadedPart, cond: MovaConditioning,
                       video_shape, audio_shape) -> MovaTowers:
    """The towers, or a ValueError saying what to change: experts swapped, another text encoder, a latent of
    another size than the conditioning, an audio latent of another codec or length."""
    towers = matching_towers(high, low, tower, cond)
    audio_dit, bridge = towers.audio_dit, towers.bridge
    if len(video_shape) != 5 or tuple(video_shape[2:]) != tuple(cond.condition.shape[2:]):
        raise ValueError(
            f"the latent's video part is {tuple(video_shape)} but the conditioning is for latents "
            f"{tuple(cond.condition.shape[2:])}: connect the av_latent and the conditioning of the same MOVA "
            "Conditioning node."
        )
    if len(audio_shape) != 3 or audio_shape[1] != audio_dit.config.in_dim:
        raise ValueError(
            f"the latent's audio part is {tuple(audio_shape)} but the audio DiT takes [B,{audio_dit.config.in_dim},L]: "
            "load the audio VAE (of MOVA Conditioning) and the audio tower from the same MOVA release."
        )
    expected = cond.frames / cond.fps * bridge.config.audio_fps
    if abs(audio_shape[-1] - expected) > 1.5:
        raise ValueError(
            f"the latent's audio part has {audio_shape[-1]} latent steps but {cond.frames} frames at {cond.fps:g} fps "
            f"need about {expected:.0f} at the audio tower's {bridge.config.audio_fps:g} latents/s: load the audio "
            "VAE of the same MOVA release, and connect the av_latent and the conditioning of the same MOVA "
            "Conditioning node."
        )
    return towers


def check_native_memory(high: LoadedPart, tower: LoadedPart, cond: MovaConditioning, batch: int,
                        audio_channels: int, device_memory: int) -> None:
    """Refuse a size whose activations and latents cannot fit the device (as the MOVA Sampler does), naming the
    largest that fits."""
    size = torch.empty((), dtype=high.compute_dtype).element_size()
    configs = high.model.config, tower.model.audio_dit.config
    rate = tower.model.bridge.config.audio_fps  # latents per second: the audio length, at hop 1

    def need(width: int, height: int, frames: int) -> int:
        return batch * sampling_bytes(width, height, frames, cond.fps, rate, 1, audio_channels, *configs, size)

    check_fits(need, cond.width, cond.height, cond.frames, device_memory, "device memory for the sampler's "
               "activations and latents", "Lower width, height or length on MOVA Conditioning (the model weights "
               "are offloaded as needed, the activations are not).")
