"""MOVA's joint latent in ComfyUI core's audio-video form (nodes/av_latent.py), the plain-Python parts: the masks
that travel together, per-step audio masks from full-shape ones, and what a ComfyUI without nested latents gets (no
ComfyUI here: the plain-Python case). The NestedTensor form itself runs in the v0.8.0 integration tests."""

import pytest
import torch

from comfyui_mova.nodes import av_latent
from comfyui_mova.nodes.sampling import run as sampling
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, NOISE_MASK_KEY, AudioLatent


def _latent(golden_tensors, golden_cases, video_mask=None, audio_mask=None):
    video, audio = golden_tensors["noise_video"], golden_tensors["noise_audio"]
    codec = golden_cases["audio_vae"]
    samples_per_step = golden_cases["audio_num_samples"] // golden_cases["audio_latent_length"]
    latent = {"samples": video, LATENT_AUDIO_KEY: AudioLatent(audio, golden_cases["num_frames"], golden_cases["fps"],
                                                              codec.get("sample_rate", 16000), samples_per_step,
                                                              noise_mask=audio_mask)}
    if video_mask is not None:
        latent[NOISE_MASK_KEY] = video_mask
    return latent


def test_parts_and_masks_travel_together(golden_tensors, golden_cases):
    video, audio = golden_tensors["noise_video"], golden_tensors["noise_audio"]
    (v, a), masks, info = av_latent.av_parts_of_mova(_latent(golden_tensors, golden_cases))
    assert v is video and a is audio and masks is None
    assert (info.frames, info.fps) == (golden_cases["num_frames"], golden_cases["fps"])
    keep_audio = torch.zeros(audio.shape[0], 1, audio.shape[-1])  # a given sound: keep every step
    _, masks, _ = av_latent.av_parts_of_mova(_latent(golden_tensors, golden_cases, audio_mask=keep_audio))
    video_mask, audio_mask = masks
    assert audio_mask is keep_audio  # the video gets a mask of ones (generate all) to travel with it
    assert video_mask.shape == (video.shape[0], 1, video.shape[2], 1, 1) and bool((video_mask == 1).all())


def test_audio_mask_of_full_shape_becomes_one_value_per_step(golden_tensors):
    audio = golden_tensors["noise_audio"]
    full = torch.ones_like(audio)
    full[:, 0, :2] = 0  # one channel kept is not a kept step; every channel kept is
    full[:, :, 3] = 0
    step = av_latent.step_mask(full, audio)
    assert step.shape == (audio.shape[0], 1, audio.shape[-1])
    assert step[0, 0, :2].tolist() == [1.0, 1.0] and step[0, 0, 3] == 0
    assert av_latent.step_mask(None, audio) is None
    with pytest.raises(ValueError, match=r"does not fit the audio latent .*one value per latent step \[B,1,L\]"):
        av_latent.step_mask(torch.ones(audio.shape[0], 1, audio.shape[-1] + 1), audio)


def test_without_nested_latents_the_av_output_is_movas_latent(golden_tensors, golden_cases):
    """Plain Python (like ComfyUI before 0.8): no nested latents, the av_latent output is the same joint latent
    (the MOVA Sampler takes it), and anything that needs the nested form says what to do."""
    assert not av_latent.has_nested_latents()
    latent = _latent(golden_tensors, golden_cases)
    assert av_latent.av_output(latent) is latent
    with pytest.raises(RuntimeError) as refused:
        av_latent.require_nested_latents()
    message = str(refused.value)
    assert "ComfyUI v0.8.0 and later" in message and "MOVA Sampler" in message and "mova_i2va.json" in message
    with pytest.raises(ValueError, match="av_latent: expected the joint video\\+audio LATENT"):
        av_latent.split_av_latent(latent, "av_latent")


def test_joint_latent_reads_movas_form_with_its_masks(golden_tensors, golden_cases):
    video = golden_tensors["noise_video"]
    mask = torch.ones(video.shape[0], 1, video.shape[2], 1, 1)
    mask[:, :, 0] = 0
    v, audio, video_mask = sampling.joint_latent(_latent(golden_tensors, golden_cases, video_mask=mask))
    assert v is video and video_mask is mask and audio.samples is golden_tensors["noise_audio"]
    with pytest.raises(ValueError, match="latent has no audio part"):
        sampling.joint_latent({"samples": video})
