"""MOVA Guider's checks before a native run (nodes/native/checks.py), on the golden tiny release: the towers for a
fitting latent; a clear error naming the fix for swapped experts, a latent of another size or another codec, and a
size that cannot fit the device."""

import json

import pytest

from comfyui_mova.mova_model.configs import DACConfig, config_from_dict
from comfyui_mova.nodes.conditioning.condition import empty_joint_latent
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, MovaConditioning
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.native.checks import check_native_memory, check_native_setup


@pytest.fixture(scope="module")
def setup(golden_dir, golden_cases, golden_tensors):
    ckpt = golden_dir / "checkpoint"
    high, low = load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2")
    tower = load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge")
    dac = config_from_dict(DACConfig, json.loads((ckpt / "audio_vae" / "config.json").read_text()))
    c = golden_cases
    cond = MovaConditioning(golden_tensors["context_pos"], golden_tensors["context_neg"], golden_tensors["condition"],
                            c["width"], c["height"], c["num_frames"], c["fps"])
    latent = empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], dac)
    return high, low, tower, cond, latent["samples"].shape, latent[LATENT_AUDIO_KEY].samples.shape


def test_fitting_parts_give_the_towers(setup):
    high, low, tower, cond, video, audio = setup
    towers = check_native_setup(high, low, tower, cond, video, audio)
    assert towers.video_experts == [high.model, low.model] and towers.audio_dit is tower.model.audio_dit


def test_wrong_wiring_is_named(setup):
    high, low, tower, cond, video, audio = setup
    with pytest.raises(ValueError, match="swap"):
        check_native_setup(low, high, tower, cond, video, audio)
    smaller = (*video[:3], video[3] - 1, video[4])
    with pytest.raises(ValueError, match="connect the av_latent and the conditioning of the same MOVA Conditioning"):
        check_native_setup(high, low, tower, cond, smaller, audio)
    with pytest.raises(ValueError, match=r"audio DiT takes \[B,\d+,L\].*same MOVA release"):
        check_native_setup(high, low, tower, cond, video, (audio[0], audio[1] + 1, audio[2]))
    with pytest.raises(ValueError, match="latent steps but .* frames"):
        check_native_setup(high, low, tower, cond, video, (*audio[:2], audio[2] * 3))


def test_size_beyond_the_device_is_refused(setup):
    high, _, tower, cond, video, audio = setup
    check_native_memory(high, tower, cond, video[0], audio[1], 1 << 40)
    with pytest.raises(ValueError, match="Lower width, height or length on MOVA Conditioning"):
        check_native_memory(high, tower, cond, video[0], audio[1], 1024)
