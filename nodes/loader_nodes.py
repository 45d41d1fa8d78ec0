"""Loader nodes: MOVA's networks wrapped for ComfyUI's memory manager (offload, low-VRAM, --cpu)."""

from __future__ import annotations

import dataclasses

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import folder_paths
import torch
from comfy_api.latest import io

from . import spec
from .comfy_io import schema
from .handles import LoadedPart
from .model_files import load_audio_tower, load_audio_vae, load_video_expert, needs_fp8_layers, resolve_choice
from .model_files import weight_dtype as storage_dtype

# Newer ComfyUI has a dynamic-VRAM patcher; fall back to the classic one.
PATCHER_CLASS = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def _path(folder: str, name: str):
    return resolve_choice(name, folder_paths.get_folder_paths(folder), folder)


def _operations(paths, dtype):
    """comfy.ops layers that cast weights to the activations' dtype/device on the fly (which partial loading
    needs); ComfyUI's scaled-fp8 Linear (weight * scale_weight) when fp8 weights are involved."""
    return comfy.ops.scaled_fp8_ops() if needs_fp8_layers(paths, dtype) else comfy.ops.manual_cast


def _load(loader, dtype_choice: str, *paths) -> LoadedPart:
    """Build on the offload device with comfy.ops layers, then wrap in a ModelPatcher."""
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    dtype = storage_dtype(dtype_choice)
    part = loader(*paths, dtype=dtype, operations=_operations(paths, dtype), device=offload_device)
    stored = next(p.dtype for p in part.model.parameters() if p.is_floating_point())
    # ComfyUI's rule for the compute dtype on this device (None: the stored dtype computes fine there).
    compute = mm.unet_manual_cast(stored, load_device, [torch.bfloat16, torch.float16, torch.float32])
    if compute is None:
        compute = part.compute_dtype
    patcher = PATCHER_CLASS(part.model, load_device=load_device, offload_device=offload_device)
    return dataclasses.replace(part, compute_dtype=compute, patcher=patcher)


class MovaVideoExpertLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.VIDEO_EXPERT_LOADER)

    @classmethod
    def execute(cls, model_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(_load(load_video_expert, weight_dtype, _path("diffusion_models", model_name)))


class MovaAudioTowerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.AUDIO_TOWER_LOADER)

    @classmethod
    def execute(cls, audio_dit_name: str, bridge_name: str, weight_dtype: str) -> io.NodeOutput:
        paths = _path("diffusion_models", audio_dit_name), _path("diffusion_models", bridge_name)
        return io.NodeOutput(_load(load_audio_tower, weight_dtype, *paths))


class MovaAudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.AUDIO_VAE_LOADER)

    @classmethod
    def execute(cls, vae_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(_load(load_audio_vae, weight_dtype, _path("vae", vae_name)))
