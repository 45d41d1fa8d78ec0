"""Fixtures the unit tests of the conditioning modes and of Extend / Join share: the golden tiny release's parts."""

import pytest

from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_audio_vae, load_video_expert


@pytest.fixture(scope="module")
def vae(golden_dir):
    return load_audio_vae(golden_dir / "checkpoint" / "audio_vae")


@pytest.fixture(scope="module")
def parts(golden_dir):
    ckpt = golden_dir / "checkpoint"
    return (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
            load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))
