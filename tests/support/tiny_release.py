"""Writes a tiny random MOVA release (the Hugging Face folder layout) for end-to-end tests.

Unlike the golden set, its audio codec runs at 16 kHz (hop 320, 50 latents/s like the real 48 kHz one),
a rate an MP4's AAC track can hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.networks.bridge import DualTowerBridge
from comfyui_mova.mova_model.configs import BridgeConfig, DACConfig, DiTConfig, config_to_dict
from comfyui_mova.mova_model.networks.dac import DAC
from comfyui_mova.mova_model.networks.dit import WanDiT

DAC_16K = DACConfig(encoder_dim=4, encoder_rates=(2, 4, 5, 8), latent_dim=8, decoder_dim=32,
                    decoder_rates=(8, 5, 4, 2), sample_rate=16000)
VIDEO = DiTConfig(dim=64, num_heads=2, num_layers=2, ffn_dim=128, in_dim=36, out_dim=16, patch_size=(1, 2, 2))
AUDIO = DiTConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, in_dim=DAC_16K.latent_dim,
                  out_dim=DAC_16K.latent_dim, patch_size=(1,))
BRIDGE = BridgeConfig(visual_layers=2, audio_layers=2, visual_hidden_dim=64, audio_hidden_dim=32, head_dim=16,
                      audio_fps=DAC_16K.sample_rate / DAC_16K.hop_length)
FOLDERS = {
    "video_dit": (WanDiT, VIDEO), "video_dit_2": (WanDiT, VIDEO), "audio_dit": (WanDiT, AUDIO),
    "dual_tower_bridge": (DualTowerBridge, BRIDGE), "audio_vae": (DAC, DAC_16K),
}


def write_component(folder: Path, name: str, seed: int) -> None:
    """One component folder: config.json and random weights in diffusion_pytorch_model.safetensors."""
    cls, config = FOLDERS[name]
    torch.manual_seed(seed)
    model = cls(config)
    for param_name, param in model.named_parameters():
        if param_name.endswith("modulation"):  # zero-initialised in the network; give the AdaLN some signal
            torch.nn.init.normal_(param, std=0.1)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))


def write_release(root: Path, components=tuple(FOLDERS)) -> Path:
    """``root`` as a MOVA release: model_index.json, the scheduler config and the component folders."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "MOVA", "boundary_ratio": 0.9}))
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchPairScheduler", "num_train_timesteps": 1000, "shift": 5.0, "sigma_max": 1.0,
         "sigma_min": 0.0, "extra_one_step": True}))
    for seed, name in enumerate(components):
        write_component(root / name, name, seed)
    return root
