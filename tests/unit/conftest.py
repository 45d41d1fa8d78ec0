"""Fixtures the unit tests of the conditioning modes, Extend / Join and the media domains share: the golden tiny
release's parts, the golden size, a clip so far."""

import math

import pytest
import torch

from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_audio_vae, load_video_expert


@pytest.fixture(scope="module")
def vae(golden_dir):
    return load_audio_vae(golden_dir / "checkpoint" / "audio_vae")


@pytest.fixture(scope="module")
def parts(golden_dir):
    ckpt = golden_dir / "checkpoint"
    return (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
            load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))


@pytest.fixture(scope="module")
def size(golden_cases):
    c = golden_cases
    return c["width"], c["height"], c["num_frames"], c["fps"]


@pytest.fixture(scope="module")
def clip(golden_cases, vae):
    """The clip so far: golden-size frames and its sound (mono, the codec's rate, int(rate * frames / fps))."""
    c = golden_cases
    rate = vae.model.config.sample_rate
    gen = torch.Generator().manual_seed(8)
    frames = torch.rand(c["num_frames"], c["height"], c["width"], 3, generator=gen)
    samples = int(rate * c["num_frames"] / c["fps"])
    t = torch.arange(samples) / rate
    sound = {"waveform": (0.5 * torch.sin(2 * math.pi * 7 * t)).view(1, 1, -1), "sample_rate": rate}
    return frames, sound, c["fps"]
