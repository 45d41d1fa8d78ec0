"""MOVA Audio Decode's logic on the golden DAC: AUDIO format, trimming to the video, chunking, errors."""

import dataclasses

import pytest
import torch

from comfyui_mova.nodes.sampling.audio_decode import decode_to_audio
from comfyui_mova.nodes.handles import AudioLatent
from comfyui_mova.nodes.loaders.model_files import load_audio_vae

from mova_testing import GOLDEN_TOL, rel_l2


@pytest.fixture(scope="module")
def vae(golden_dir):
    return load_audio_vae(golden_dir / "checkpoint" / "audio_vae")


def _latent(vae, samples, frames, fps):
    c = vae.model.config
    return AudioLatent(samples, frames, fps, c.sample_rate, c.hop_length)


def test_golden_decode_trimmed(vae, golden_tensors, golden_cases):
    c = golden_cases
    latent = _latent(vae, golden_tensors["dac_latent"], c["num_frames"], c["fps"])
    audio = decode_to_audio(vae, latent)
    assert set(audio) == {"waveform", "sample_rate"}
    assert audio["sample_rate"] == vae.model.config.sample_rate
    wave = audio["waveform"]
    assert wave.shape == (1, 1, c["audio_num_samples"]) and wave.dtype == torch.float32
    assert wave.device.type == "cpu" and wave.abs().max() <= 1.0
    ref = golden_tensors["dac_decoded"][..., : c["audio_num_samples"]]
    assert rel_l2(wave, ref) < GOLDEN_TOL


@pytest.mark.parametrize("frames_share, fps_factor", [(0.0, 1.0), (0.5, 1.0), (1.0, 25 / 24), (1.0, 1.25)])
def test_length_follows_frames_and_fps(vae, golden_tensors, golden_cases, frames_share, fps_factor):
    """Any video the golden latent covers (fewer frames, or the same frames at a higher fps)."""
    frames = 1 + 4 * round(frames_share * (golden_cases["num_frames"] - 1) / 4)
    fps = golden_cases["fps"] * fps_factor
    sr = vae.model.config.sample_rate
    audio = decode_to_audio(vae, _latent(vae, golden_tensors["dac_latent"], frames, fps))
    assert audio["waveform"].shape[-1] == int(sr * frames / fps)


def test_chunked_decode_is_identical(vae, golden_tensors, golden_cases):
    latent = _latent(vae, golden_tensors["dac_latent"], golden_cases["num_frames"], golden_cases["fps"])
    whole = decode_to_audio(vae, latent)["waveform"]
    chunked = decode_to_audio(vae, latent, chunk_size=4)["waveform"]
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_latent_too_short_for_the_video(vae, golden_tensors, golden_cases):
    short = golden_tensors["dac_latent"][..., : golden_cases["audio_latent_length"] - 1]
    latent = _latent(vae, short, golden_cases["num_frames"], golden_cases["fps"])
    with pytest.raises(ValueError, match="made for a shorter video"):
        decode_to_audio(vae, latent)


def test_other_codec_refused(vae, golden_tensors, golden_cases):
    frames, fps = golden_cases["num_frames"], golden_cases["fps"]
    other_rate = 2 * vae.model.config.sample_rate
    latent = dataclasses.replace(_latent(vae, golden_tensors["dac_latent"], frames, fps), sample_rate=other_rate)
    with pytest.raises(ValueError, match=f"{other_rate} Hz codec.*connect the audio VAE"):
        decode_to_audio(vae, latent)
    channels = golden_tensors["dac_latent"].shape[1]
    wide = _latent(vae, torch.cat([golden_tensors["dac_latent"]] * 2, dim=1), frames, fps)
    with pytest.raises(ValueError, match=f"{2 * channels} channels but this audio VAE decodes {channels}"):
        decode_to_audio(vae, wide)


def test_bad_inputs(vae, golden_tensors):
    with pytest.raises(ValueError, match="audio_latent output of the MOVA Sampler"):
        decode_to_audio(vae, {"samples": golden_tensors["dac_latent"]})
    with pytest.raises(ValueError, match="chunk_size must be 0"):
        decode_to_audio(vae, _latent(vae, golden_tensors["dac_latent"], 9, 24.0), chunk_size=-1)
