"""What travels on MOVA's custom sockets (plain data; ComfyUI objects are held, never imported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..mova_model.networks.bridge import DualTowerBridge
from ..mova_model.networks.dit import WanDiT

HIGH_NOISE, LOW_NOISE = "high_noise", "low_noise"
# LATENT dict key holding the audio half of MOVA's joint latent.
LATENT_AUDIO_KEY = "mova_audio"
# ComfyUI's LATENT key for the noise mask (1 generate, 0 keep); MOVA's video masks are [B,1,T,1,1].
NOISE_MASK_KEY = "noise_mask"
# LATENT dict key of the joint latent in core's audio-video form (nodes/av_latent.py): what the audio part is.
AV_INFO_KEY = "mova_av"


class AudioTower(nn.Module):
    """The audio DiT and the dual-tower bridge as one module (one unit for ComfyUI's memory manager)."""

    def __init__(self, audio_dit: WanDiT, bridge: DualTowerBridge):
        super().__init__()
        self.audio_dit = audio_dit
        self.bridge = bridge


@dataclass(frozen=True)
class LoadedPart:
    """A loaded network: ``model`` (WanDiT, AudioTower or DAC), the dtype it computes in, where it came
    from, and (inside ComfyUI) the ModelPatcher that moves it between devices."""

    model: nn.Module
    compute_dtype: torch.dtype
    source: str
    role: str | None = None  # video experts: HIGH_NOISE / LOW_NOISE when the file says so
    patcher: Any = None
    # For worker processes that load the same networks themselves (nodes/parallel): the files (the audio tower:
    # audio DiT, bridge), whether the block weights are fp8, and the LoRAs as [(patches, strength)] per part.
    files: tuple[str, ...] = ()
    fp8: bool = False
    loras: tuple = ()


@dataclass(frozen=True)
class MovaConditioning:
    """Text states [1|B,Lt,D] and the I2V condition [1,20,T,h,w] for one video size."""

    context_pos: torch.Tensor
    context_neg: torch.Tensor | None
    condition: torch.Tensor
    width: int
    height: int
    frames: int
    fps: float


@dataclass(frozen=True)
class AudioLatent:
    """Audio latents [B,C,L] of a video of ``frames`` at ``fps``, for the codec described here.

    ``noise_mask`` [B,1,L] (ComfyUI's convention: 1 generate, 0 keep) marks given latent steps, whose values
    ``samples`` holds; ``given_waveform`` [B,1,T] (at ``sample_rate``, T samples of the video's length) is the
    sound they came from: MOVA Audio Decode puts it back over the kept steps instead of a codec round trip.
    """

    samples: torch.Tensor
    frames: int
    fps: float
    sample_rate: int
    hop_length: int
    noise_mask: torch.Tensor | None = None
    given_waveform: torch.Tensor | None = None


@dataclass(frozen=True)
class AVInfo:
    """What the audio half of a joint latent in core's audio-video form is: the audio of a video of ``frames`` at
    ``fps``, for a codec of ``sample_rate`` / ``hop_length``; ``given_waveform`` [B,1,T] as in ``AudioLatent``."""

    frames: int
    fps: float
    sample_rate: int
    hop_length: int
    given_waveform: torch.Tensor | None = None


@dataclass(frozen=True)
class SamplerSettings:
    """What MOVA Sampler Options sends: None / 1.0 / 0.0 values are the official behaviour."""

    bridge_cfg: float = 1.0
    audio_cfg: float | None = None      # None: the sampler's cfg
    audio_shift: float | None = None    # None: the sampler's shift
    cfg_cutoff: float = 1.0
    cache_threshold: float = 0.0
    attention: str = "auto"
    compile: str = "off"
    fp8_compute: str = "auto"
    clean_given: bool = False           # a modality given whole is fed clean at timestep 0
    parallel: Any = None                # MOVA Parallel's ParallelSetup (nodes/parallel), None: one device


@dataclass(frozen=True)
class Extension:
    """What MOVA Extend hands to MOVA Join: the clip so far and how the next clip overlaps it.

    The next clip's first ``overlap`` frames repeat the last ``overlap`` frames of ``frames`` [N,H,W,3]; its
    audio starts ``overlap_samples`` before the end of ``waveform`` [1,1,T] (``sample_rate``, mono).
    """

    frames: torch.Tensor
    waveform: torch.Tensor
    sample_rate: int
    fps: float
    overlap: int
    length: int
    overlap_samples: int
    crossfade: int
