"""Tiny real model files for the chaining examples (tests/comfyui/test_comfyui_chaining.py): an upscale model that
ComfyUI's Load Upscale Model reads (through spandrel), and an image checkpoint that Load Checkpoint reads.

- ``write_upscaler``: a Real-ESRGAN Compact (SRVGGNetCompact) network at 2x with 8 features and one body
  convolution, random weights, as safetensors. spandrel tells the architecture and the scale from the keys and
  shapes alone (``body.N.weight``; the last convolution has 3 * scale * scale outputs).
- ``write_image_checkpoint``: a single-file SD1.5 checkpoint as small as ComfyUI still detects as SD1.5: its UNet has
  SD1.5's width and text width (ComfyUI matches model_channels 320 and context_dim 768) but one level with one
  block, the text encoder is CLIP-L at full size (ComfyUI builds SD1.5's CLIP from a fixed config, so every weight
  must be there: about 123M of the 152M parameters), the VAE a TAESD. Random weights, fp16, about 300 MB; written
  by ComfyUI's own classes in a subprocess of COMFYUI_PATH, as the Wan VAE is.
- ``write_rife``: a RIFE frame interpolation model that core's Load Frame Interpolation Model (ComfyUI v0.33.0) reads:
  ComfyUI's own IFNet at the smallest size its detection takes (a one-channel feature head, five blocks of two
  channels; detect_rife_config reads the head's and each block's width from the weights), random weights, as
  safetensors, written in a subprocess of COMFYUI_PATH.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

UPSCALE = 2
UPSCALER_FEATURES = 8

IMAGE_CHECKPOINT = '''
import math, sys
OUT = sys.argv[1]
sys.argv = ["write_checkpoint", "--cpu"]
sys.path.insert(0, ".")
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.ops
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from comfy.sd1_clip import SDClipModel
from comfy.taesd.taesd import TAESD
from safetensors.torch import save_file

unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                 channel_mult=[1], num_heads=8, use_spatial_transformer=True, transformer_depth=[1],
                 transformer_depth_middle=1, transformer_depth_output=[1, 1], context_dim=768,
                 use_linear_in_transformer=False, dtype=torch.float32, device="cpu", operations=comfy.ops.manual_cast)
parts = (("model.diffusion_model.", unet), ("cond_stage_model.", SDClipModel(device="cpu", dtype=torch.float32)),
         ("first_stage_model.", TAESD(latent_channels=4)))
gen = torch.Generator().manual_seed(0)
state = {}
for prefix, module in parts:
    for key, value in module.state_dict().items():
        name = key.rsplit(".", 1)[0]
        if not value.is_floating_point():
            state[prefix + key] = value
        elif key.endswith("weight") and ("norm" in name or name.endswith(("in_layers.0", "out_layers.0", "out.0"))):
            state[prefix + key] = torch.ones(value.shape)  # normalisation scales
        elif key.endswith("vae_scale"):
            state[prefix + key] = torch.ones(value.shape)
        elif value.dim() >= 2:  # the VAE's larger scale gives a picture with contrast (not all black)
            gain = 1.0 if prefix == "first_stage_model." else 0.5
            state[prefix + key] = torch.randn(value.shape, generator=gen) * (gain / math.sqrt(math.prod(value.shape[1:])))
        else:
            state[prefix + key] = torch.zeros(value.shape)
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, OUT)
'''

RIFE = '''
import sys
OUT = sys.argv[1]
sys.argv = ["write_rife", "--cpu"]
sys.path.insert(0, ".")
import comfy.options
comfy.options.enable_args_parsing()
import torch
from comfy_extras.frame_interpolation_models.ifnet import IFNet, detect_rife_config
from safetensors.torch import save_file

net = IFNet(head_ch=1, channels=(2, 2, 2, 2, 2))
gen = torch.Generator().manual_seed(0)
state = {}
for key, value in net.state_dict().items():  # ComfyUI's layers leave their weights unset: every one is set here
    if key.endswith(".beta"):
        state[key] = torch.ones(value.shape)
    elif value.dim() >= 2:
        fan_in = value.shape[0 if "cnn3" in key or "lastconv" in key else 1] * value.shape[2] * value.shape[3]
        state[key] = torch.randn(value.shape, generator=gen) * (0.5 / fan_in ** 0.5)
    else:
        state[key] = torch.zeros(value.shape)
assert detect_rife_config(state) == (1, [2, 2, 2, 2, 2])
save_file({k: v.contiguous() for k, v in state.items()}, OUT)
'''


def write_upscaler(path: Path, seed: int = 0) -> None:
    """A 2x Real-ESRGAN Compact upscale model (random weights) as safetensors."""
    import torch
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(seed)

    def conv(out_ch, in_ch):
        return torch.randn(out_ch, in_ch, 3, 3, generator=gen) * (0.3 / math.sqrt(in_ch * 9)), torch.zeros(out_ch)

    layers = [conv(UPSCALER_FEATURES, 3), None, conv(UPSCALER_FEATURES, UPSCALER_FEATURES), None,
              conv(3 * UPSCALE * UPSCALE, UPSCALER_FEATURES)]
    state = {}
    for index, layer in enumerate(layers):
        if layer is None:  # PReLU
            state[f"body.{index}.weight"] = torch.full((UPSCALER_FEATURES,), 0.25)
        else:
            state[f"body.{index}.weight"], state[f"body.{index}.bias"] = layer
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def write_image_checkpoint(path: Path, comfyui: str) -> None:
    """A tiny SD1.5-layout checkpoint (see the module's note), written by the ComfyUI in ``comfyui``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", IMAGE_CHECKPOINT, str(path)], cwd=comfyui, check=True, capture_output=True)


def write_rife(path: Path, comfyui: str) -> None:
    """A tiny RIFE (IFNet) frame interpolation model with random weights (see the module's note), written by the
    ComfyUI in ``comfyui`` (v0.33.0 and later: comfy_extras/frame_interpolation_models/ifnet.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", RIFE, str(path)], cwd=comfyui, check=True, capture_output=True)
