"""GGUF test data: the golden release widened so that every block weight splits into the K types' blocks of 256
(the golden widths do not), and hand-made .gguf files for the loader's error paths."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.configs import config_to_dict
from comfyui_mova.mova_model.networks.bridge import DualTowerBridge
from comfyui_mova.mova_model.networks.dit import WanDiT
from comfyui_mova.mova_model.weights.checkpoint import open_checkpoint
from comfyui_mova.mova_model.weights.detect import detect_config

K_BLOCK = 256


def _round_up(value: int, step: int = K_BLOCK) -> int:
    return -(-value // step) * step


def _head_count(dim: int, wanted: int, video: bool) -> int:
    """The head count nearest ``wanted`` (itself when it fits) that splits ``dim`` into heads the towers' RoPE takes:
    an even head width, for video one whose third is even too (the height and width axes' share)."""
    def fits(heads: int) -> bool:
        width = dim // heads
        return dim % heads == 0 and width % 2 == 0 and (not video or (width // 3) % 2 == 0)
    return min((h for h in range(1, dim + 1) if fits(h)), key=lambda h: (abs(h - wanted), h))


def widened_release(golden_dir: Path, root: Path) -> Path:
    """The golden release with the DiTs' width and FFN width (and the bridge's to match) rounded up to a multiple
    of 256 (and of the bridge's head width), random weights (seeded), the golden layer counts, the golden head counts
    where they split the new width for RoPE (else the nearest count that does), audio VAE and scheduler."""
    source = golden_dir / "checkpoint"
    root.mkdir(parents=True, exist_ok=True)
    for name in ("model_index.json",):
        shutil.copy(source / name, root / name)
    for name in ("scheduler", "audio_vae"):
        shutil.copytree(source / name, root / name, dirs_exist_ok=True)
    configs = {}
    bridge = detect_config(open_checkpoint(source, "dual_tower_bridge"), "dual_tower_bridge")
    for folder in ("video_dit", "video_dit_2", "audio_dit"):
        config = detect_config(open_checkpoint(source, folder), "video_dit" if folder != "audio_dit" else "audio_dit")
        dim = _round_up(config.dim, math.lcm(K_BLOCK, bridge.head_dim))
        heads = _head_count(dim, config.num_heads, video=folder != "audio_dit")
        configs[folder] = dataclasses.replace(config, dim=dim, num_heads=heads, ffn_dim=_round_up(config.ffn_dim))
    configs["dual_tower_bridge"] = dataclasses.replace(
        bridge, visual_hidden_dim=configs["video_dit"].dim, audio_hidden_dim=configs["audio_dit"].dim)
    for seed, (folder, config) in enumerate(configs.items()):
        torch.manual_seed(seed)
        model = DualTowerBridge(config) if folder == "dual_tower_bridge" else WanDiT(config)
        for name, param in model.named_parameters():
            if name.endswith("modulation"):  # zero in a fresh network; give AdaLN some signal
                torch.nn.init.normal_(param, std=0.1)
        (root / folder).mkdir(exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(root / folder / "diffusion_pytorch_model.safetensors"))
        (root / folder / "config.json").write_text(json.dumps(config_to_dict(config)))
    return root


def write_raw_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]], metadata: dict[str, str] | None = None,
                   arch: str = "mova") -> Path:
    """A .gguf file holding ``tensors`` (name -> (array, GGUF type name; uint8 bytes for quantised types))."""
    from gguf import GGMLQuantizationType, GGUFWriter

    writer = GGUFWriter(path, arch)
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    for name, (array, type_name) in tensors.items():
        qtype = GGMLQuantizationType[type_name]
        writer.add_tensor(name, array, raw_dtype=qtype if array.dtype == np.uint8 else None)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


GGUF_PROBE_NODE = '''
import json
import comfy.model_management as mm
import torch

class TestMovaGGUFProbe:
    """Test only: weights of MOVA parts as their GGUF layers compute them once ComfyUI loaded them: the
    dequantised bytes with the patches the weight carries and the layer's weight_function applied. keys as
    TestMovaWeightProbe's; reports the GGUF type (or the float dtype) and the float32 values."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"expert": ("MOVA_VIDEO_EXPERT",), "audio_tower": ("MOVA_AUDIO_TOWER",),
                             "keys": ("STRING", {"default": ""})}}
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def probe(self, expert, audio_tower, keys):
        mm.load_models_gpu([expert.patcher, audio_tower.patcher])
        found = {}
        for entry in keys.split(","):
            part, key = entry.split(":")
            module = (expert if part == "expert" else audio_tower).model.get_submodule(key.rsplit(".", 1)[0])
            kind = getattr(module, "quant_type", None)
            weight = module.dequantized_weight(torch.float32) if kind else module.weight.float()
            for patch in getattr(module.weight, "weight_patches", ()):
                weight = patch(weight)
            for function in getattr(module, "weight_function", ()):
                weight = function(weight)
            found[entry] = {"dtype": kind or str(module.weight.dtype), "values": weight.cpu().flatten().tolist(),
                            "bytes": str(module.weight.dtype)}
        return {"ui": {"weights": [json.dumps(found)]}}

NODE_CLASS_MAPPINGS = {"TestMovaGGUFProbe": TestMovaGGUFProbe}
'''
