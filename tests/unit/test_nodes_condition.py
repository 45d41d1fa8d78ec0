"""MOVA Conditioning's logic: text states, the first frame, the I2V condition, the joint latent's sizes."""

import json

import pytest
import torch

from comfyui_mova.mova_model.configs import DAC_48K, DACConfig, config_from_dict
from comfyui_mova.mova_model.sampling.latents import (
    WAN21_LATENT_MEAN, WAN21_LATENT_STD, denormalise_video_latents, normalise_video_latents,
)
from comfyui_mova.nodes.conditioning.condition import (
    build_condition, condition_frames, empty_joint_latent, fit_frame, make_conditioning, text_states,
)
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, AudioLatent
from mova_testing import pooling_encoder, text_cond


@pytest.fixture(scope="module")
def golden_dac(golden_dir) -> DACConfig:
    return config_from_dict(DACConfig, json.loads((golden_dir / "checkpoint" / "audio_vae" / "config.json").read_text()))


def test_text_states():
    states = text_states(text_cond(), "positive")
    assert states.shape == (1, 24, 4096) and states.dtype == torch.float32
    with pytest.raises(ValueError, match="2 conditionings.*one prompt"):
        text_states(text_cond() + text_cond(), "positive")
    with pytest.raises(ValueError, match="negative: expected a CONDITIONING"):
        text_states(None, "negative")


def test_fit_frame_centre_crops_then_resizes():
    # 40x80 image: left quarter 0, middle half 1, right quarter 0 -> a square crop keeps the middle only.
    image = torch.zeros(1, 40, 80, 3)
    image[:, :, 20:60] = 1.0
    out = fit_frame(image, 16, 16)
    assert out.shape == (16, 16, 3)
    assert torch.allclose(out, torch.ones_like(out))
    # a tall image keeps its vertical centre
    tall = torch.zeros(80, 40, 3)
    tall[20:60] = 64 / 255  # an 8-bit value, as Load Image gives
    assert torch.allclose(fit_frame(tall, 32, 32), torch.full((32, 32, 3), 64 / 255))


def test_fit_frame_uses_first_image_and_rgb():
    batch = torch.stack([torch.full((16, 16, 4), 51 / 255), torch.full((16, 16, 4), 0.9)])
    out = fit_frame(batch, 16, 16)
    assert out.shape == (16, 16, 3) and torch.allclose(out, torch.full_like(out, 51 / 255))


def test_fit_frame_refuses_non_images():
    with pytest.raises(ValueError, match="start_image must be an IMAGE.*Load Image"):
        fit_frame(torch.zeros(1, 0, 16, 3), 16, 16)
    with pytest.raises(ValueError, match="start_image must be an IMAGE"):
        fit_frame(torch.zeros(16, 16), 16, 16)


def test_condition_frames_white_default_and_grey_rest():
    frames = condition_frames(None, 32, 16, 9)
    assert frames.shape == (9, 16, 32, 3)
    assert torch.all(frames[0] == 1.0)
    assert torch.all(frames[1:] == 0.5)
    given = condition_frames(torch.full((1, 16, 32, 3), 77 / 255), 32, 16, 9)
    assert torch.allclose(given[0], torch.full((16, 32, 3), 77 / 255)) and torch.all(given[1:] == 0.5)


def test_build_condition_layout():
    frames = condition_frames(None, 32, 16, 9)
    raw = pooling_encoder(frames)
    cond = build_condition(raw, 32, 16, 9)
    assert cond.shape == (1, 20, 3, 2, 4)
    assert torch.all(cond[:, :4, 0] == 1) and torch.all(cond[:, :4, 1:] == 0)
    mean = torch.tensor(WAN21_LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENT_STD).view(1, 16, 1, 1, 1)
    assert torch.allclose(cond[:, 4:], (raw - mean) / std)


def test_build_condition_refuses_other_vaes():
    wan22_like = torch.zeros(1, 48, 3, 1, 2)
    with pytest.raises(ValueError, match="MOVA needs \\(1, 16, 3, 2, 4\\).*Wan 2.1 VAE"):
        build_condition(wan22_like, 32, 16, 9)


def test_latent_normalisation_round_trip():
    raw = torch.randn(2, 16, 3, 4, 5)
    assert torch.allclose(denormalise_video_latents(normalise_video_latents(raw)), raw, atol=1e-6)
    with pytest.raises(ValueError, match="Wan 2.1 video latents"):
        normalise_video_latents(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize("frames, fps, samples, steps", [
    (193, 24.0, 386000, 403),    # 8 s at 24 fps: the official 360p/720p setting
    (121, 24.0, 242000, 253),
    (193, 25.0, 370560, 386),
    (97, 16.0, 291000, 304),
    (81, 30.0, 129600, 135),   # an exact multiple of the hop,
    (1, 24.0, 2000, 3),
])
def test_audio_latent_length_follows_fps_and_codec(frames, fps, samples, steps):
    assert int(DAC_48K.sample_rate * frames / fps) == samples
    latent = empty_joint_latent(640, 352, frames, fps, DAC_48K)
    audio = latent[LATENT_AUDIO_KEY]
    assert isinstance(audio, AudioLatent)
    assert audio.samples.shape == (1, DAC_48K.latent_dim, steps)
    assert (steps - 1) * DAC_48K.hop_length < samples <= steps * DAC_48K.hop_length
    assert latent["samples"].shape == (1, 16, (frames - 1) // 4 + 1, 44, 80)
    assert (audio.frames, audio.fps, audio.sample_rate, audio.hop_length) == (frames, fps, 48000, 960)


def test_golden_sizes(golden_cases, golden_dac):
    c = golden_cases
    latent = empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], golden_dac)
    assert latent[LATENT_AUDIO_KEY].samples.shape[-1] == c["audio_latent_length"]


def test_make_conditioning(golden_dac):
    image = torch.rand(1, 48, 48, 3)
    cond, latent = make_conditioning(text_cond(seed=1), text_cond(seed=2), pooling_encoder, image, 32, 32, 9, 24.0,
                                     golden_dac)
    assert cond.condition.shape == (1, 20, 3, 4, 4)
    assert latent["samples"].shape == (1, 16, 3, 4, 4)
    assert (cond.width, cond.height, cond.frames, cond.fps) == (32, 32, 9, 24.0)
    assert not torch.equal(cond.context_pos, cond.context_neg)


@pytest.mark.parametrize("kwargs, message", [
    (dict(frames=10), "frames 10 is not 4k\\+1: use 9"),
    (dict(width=44), "width 44 is not a multiple of 16: use 48"),
    (dict(height=8), "height 8 is not a multiple of 16: use 16"),
    (dict(fps=0.0), "fps must be a positive number"),
])
def test_make_conditioning_bad_values(golden_dac, kwargs, message):
    args = dict(width=32, height=32, frames=9, fps=24.0) | kwargs
    with pytest.raises(ValueError, match=message):
        make_conditioning(text_cond(), text_cond(), pooling_encoder, None, args["width"], args["height"], args["frames"],
                          args["fps"], golden_dac)


def test_make_conditioning_mixed_text_encoders(golden_dac):
    with pytest.raises(ValueError, match="different text encoders"):
        make_conditioning(text_cond(), text_cond(dim=768), pooling_encoder, None, 32, 32, 9, 24.0, golden_dac)
