"""A given sound for MOVA: checked, mixed to mono, resampled to the codec's rate, fitted to the clip's length,
and DAC-encoded into known audio latents."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ...mova_model.configs import DACConfig
from ...mova_model.sampling.sizes import VAE_TIME, audio_latent_length, audio_num_samples
from ..handles import LoadedPart
from ..input_values import plain_number
from ..media_values import waveform_samples

log = logging.getLogger(__name__)
MAX_CHANNELS = 64  # more is not a sound's channels (e.g. [batch, samples, channels] handed over)
MAX_RATE = 768000  # Hz: the highest rate audio interfaces record at
MAX_RESAMPLED = 1 << 30  # samples at the codec's rate (4 GiB of float32, 6 hours at 48 kHz)


def audio_waveform(audio, name: str) -> tuple[torch.Tensor, int]:
    """(waveform [C,T] float32 -1..1 on the CPU, sample rate) of a ComfyUI AUDIO: integer PCM scaled by its type, a
    numpy or tensor sample rate made an int (media_values.py); a clear error for anything else."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        what = type(audio).__name__ if not isinstance(audio, dict) else \
            f"a dict without {' and '.join(k for k in ('waveform', 'sample_rate') if k not in audio)}"
        raise ValueError(f"{name}: expected an AUDIO (from Load Audio or MOVA Audio Decode), got {what}")
    wave, rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(wave, torch.Tensor) or wave.dim() != 3:
        shape = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
        raise ValueError(f"{name}: expected a waveform [batch, channels, samples], got {shape}: connect an AUDIO "
                         "from Load Audio")
    if wave.shape[0] != 1:
        raise ValueError(f"{name} holds {wave.shape[0]} sounds: MOVA takes one; connect a single AUDIO")
    if wave.shape[1] < 1:
        raise ValueError(f"{name} has 0 channels: connect an AUDIO with 1 (mono) or more channels")
    if wave.shape[2] < 1:
        raise ValueError(f"{name} is empty (0 samples): connect a sound that lasts")
    if wave.shape[1] > MAX_CHANNELS:
        raise ValueError(f"{name} has {wave.shape[1]} channels and {wave.shape[2]} samples: an AUDIO waveform is "
                         "[batch, channels, samples]; this one looks transposed (the node that makes it should put "
                         "the channels before the samples)")
    rate = plain_number(rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0 \
            or rate != int(rate):
        raise ValueError(f"{name}: sample rate {rate!r} is not a positive whole number of Hz; connect an AUDIO "
                         "from Load Audio")
    if rate > MAX_RATE:
        raise ValueError(f"{name}: sample rate {rate} Hz is above {MAX_RATE} Hz, not a sound's; connect an AUDIO from "
                         "Load Audio (the node that made this one set a wrong rate)")
    return waveform_samples(wave[0], name).cpu(), int(rate)


def to_codec_rate(wave: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """[C,T] at ``rate`` -> mono [1,1,T'] at ``target``: the channels averaged, then resampled (torchaudio)."""
    mono = wave.mean(dim=0, keepdim=True)
    if rate != target:
        import torchaudio.functional as AF
        mono = AF.resample(mono, rate, target)
    return mono[None]


@dataclass(frozen=True)
class FittedAudio:
    """A sound fitted to a clip: ``waveform`` [1,1,samples] mono at the codec's rate, and what was done."""

    waveform: torch.Tensor
    report: str
    padded: bool


def longest_clip(samples: int, rate: int, fps: float) -> int:
    """The most frames (4k+1) whose audio lasts no longer than ``samples`` at ``rate``, or 0."""
    frames = math.floor(samples * fps / rate + 1e-9)
    while frames >= 1 and audio_num_samples(frames, fps, rate) > samples:
        frames -= 1
    return (frames - 1) // VAE_TIME * VAE_TIME + 1 if frames >= 1 else 0


def fit_audio(audio, name: str, frames: int, fps: float, rate: int) -> FittedAudio:
    """The AUDIO as MOVA keeps it for a clip of ``frames`` at ``fps``: mono at ``rate``, cut to the clip's
    int(rate * frames / fps) samples when longer (the cut point reported), padded with silence when shorter
    (with a warning)."""
    wave, source_rate = audio_waveform(audio, name)
    channels, source_samples = wave.shape
    resampled = source_samples * rate / source_rate
    if resampled > MAX_RESAMPLED:
        raise ValueError(f"{name}: {source_samples} samples at {source_rate} Hz make {resampled:.3g} samples at the "
                         f"audio VAE's {rate} Hz, too many to resample: check its sample rate, or cut the sound near "
                         "the clip's length first")
    mono = to_codec_rate(wave, source_rate, rate)
    wanted, have = audio_num_samples(frames, fps, rate), mono.shape[-1]
    source = (f"{name}: {source_samples / source_rate:.2f} s at {source_rate} Hz, {channels} channel"
              f"{'s' if channels > 1 else ''} -> mono {rate} Hz")
    if have > wanted:
        report = (f"{source}; cut at {wanted / rate:.3f} s (sample {wanted} of {have}) to fit {frames} frames at "
                  f"{fps:g} fps: the rest is not used")
        return FittedAudio(mono[..., :wanted].contiguous(), report, False)
    if have < wanted:
        longest = longest_clip(have, rate, fps)
        hint = (f"set length to {longest} frames to end with the sound" if longest
                else "the sound is shorter than one frame")
        report = (f"{source}; it lasts {have / rate:.2f} s but the clip {wanted / rate:.2f} s: padded with "
                  f"{(wanted - have) / rate:.2f} s of silence, which MOVA keeps as given ({hint})")
        log.warning("MOVA Conditioning: %s", report)
        return FittedAudio(torch.nn.functional.pad(mono, (0, wanted - have)), report, True)
    return FittedAudio(mono.contiguous(), f"{source}; as long as the clip, used whole", False)


def codec_encode(vae: LoadedPart, waveform: torch.Tensor, device=None) -> torch.Tensor:
    """Waveform [1,1,T] -> DAC latents [1,C,ceil(T/hop)] (posterior mean), float32 on the CPU."""
    dac = vae.model
    if device is None:
        device = next(dac.parameters()).device
    with torch.no_grad():
        latents = dac.encode(waveform.to(device=device, dtype=vae.compute_dtype))
    return latents.float().cpu()


def known_audio_latents(latents: torch.Tensor, frames: int, fps: float, dac: DACConfig, name: str) -> torch.Tensor:
    """Check encoded latents [1,C,L] against the clip's audio latent length; returns them."""
    expected = (1, dac.latent_dim, audio_latent_length(frames, fps, dac))
    if tuple(latents.shape) != expected:
        raise ValueError(
            f"the audio VAE turned {name} into latents {tuple(latents.shape)}, the clip needs {expected}: load the "
            "MOVA audio VAE (audio_vae) with the MOVA Audio VAE Loader"
        )
    return latents
