"""Loader nodes: MOVA's networks wrapped for ComfyUI's memory manager (offload, low-VRAM, --cpu)."""

from __future__ import annotations

import dataclasses
import logging

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import folder_paths
import torch
from comfy_api.latest import io

from ..comfy_io import schema
from ..handles import LoadedPart
from ...mova_model.gguf.layers import quantized_layers
from ..input_values import checked_inputs
from . import spec
from .comfy_gguf import gguf_patcher_class
from .model_checks import check_choice, check_tower_fit
from .model_files import (
    float_dtype,
    load_audio_tower,
    load_audio_vae,
    load_video_expert,
    needs_fp8_layers,
    resolve_choice,
)
from .model_files import weight_dtype as storage_dtype

log = logging.getLogger(__name__)


def _path(folder: str, name: str):
    return resolve_choice(name, folder_paths.get_folder_paths(folder), folder)


def _check(folder: str, kind: str | dict[str, str], **named) -> bool | str:
    """validate_inputs' answer for widget values naming model files: True, or every problem in one message
    (ComfyUI shows it on the node at queue time, before anything runs, after each input's name; with several
    inputs each problem names its input)."""
    roots = folder_paths.get_folder_paths(folder)
    problems = [(name, problem) for name, value in named.items()
                if (problem := check_choice(value, roots, folder, kind if isinstance(kind, str) else kind[name]))]
    if len(named) == 1:
        return problems[0][1] if problems else True
    return "\n".join(f"{name}: {problem}" for name, problem in problems) or True


def patcher_class():
    """ComfyUI's model patcher class as it is when a model loads: newer ComfyUI names its current one
    CoreModelPatcher (main.py sets it to the dynamic-VRAM patcher before custom nodes load); else ModelPatcher."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def operations_for(paths, dtype, compute: torch.dtype):
    """(operations, their name for the log, fp8 key layout) for loading ``paths`` as ``dtype`` to compute in
    ``compute``: comfy.ops layers that cast weights to the activations' dtype/device on the fly (which partial
    loading needs); for fp8 weights the running ComfyUI's own quantised layers: mixed_precision_ops
    (QuantizedTensor weights, comfy_quant keys; its other Linear weights are kept in ``compute``, which they then
    run in without a cast) where it has them, else scaled_fp8_ops (weight * scale_weight)."""
    if not needs_fp8_layers(paths, dtype):
        return comfy.ops.manual_cast, "comfy.ops.manual_cast", None
    mixed = getattr(comfy.ops, "mixed_precision_ops", None)
    if mixed is not None:
        return mixed(compute_dtype=compute), "comfy.ops.mixed_precision_ops (fp8 QuantizedTensor)", "comfy_quant"
    scaled = getattr(comfy.ops, "scaled_fp8_ops", None)
    if scaled is not None:
        return scaled(), "comfy.ops.scaled_fp8_ops (fp8 weight * scale_weight)", "scaled_fp8"
    raise RuntimeError("this ComfyUI has neither comfy.ops.mixed_precision_ops nor comfy.ops.scaled_fp8_ops for fp8 "
                       "weights: set weight_dtype to bf16 on the MOVA loaders (the fp8 weights are dequantised).")


def _load(node: str, loader, dtype_choice: str, *paths) -> LoadedPart:
    """Build on the offload device with comfy.ops layers, then wrap in ComfyUI's current ModelPatcher class."""
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    dtype = storage_dtype(dtype_choice)
    floats = float_dtype(paths, dtype)  # what the weights that are not fp8 are stored in
    # ComfyUI's rule for the compute dtype on this device (None: the stored dtype computes fine there).
    compute = mm.unet_manual_cast(floats, load_device, [torch.bfloat16, torch.float16, torch.float32]) or floats
    operations, ops_name, fp8_layout = operations_for(paths, dtype, compute)
    part = loader(*paths, dtype=dtype, operations=operations, device=offload_device, fp8_layout=fp8_layout)
    cls = patcher_class()
    if quantized_layers(part.model):  # LoRA on the quantised weights applied on the fly, not merged (comfy_gguf)
        cls = gguf_patcher_class(cls)
        ops_name += " (GGUF-quantised Linear weights dequantised on the fly)"
    patcher = cls(part.model, load_device=load_device, offload_device=offload_device)
    log.info("%s: %s loaded with %s layers, patcher %s.%s, computes in %s", node, part.source, ops_name,
             cls.__module__, cls.__name__, compute)
    return dataclasses.replace(part, compute_dtype=compute, patcher=patcher, fp8=fp8_layout is not None)


class MovaVideoExpertLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.VIDEO_EXPERT_LOADER)

    @classmethod
    def validate_inputs(cls, model_name: str) -> bool | str:
        """At queue time (headers only, cached): the file or folder is there and holds a MOVA video expert."""
        return _check("diffusion_models", "video_dit", model_name=model_name)

    @classmethod
    @checked_inputs(spec.VIDEO_EXPERT_LOADER)
    def execute(cls, model_name: str, weight_dtype: str) -> io.NodeOutput:
        path = _path("diffusion_models", model_name)
        return io.NodeOutput(_load("MOVA Video Expert Loader", load_video_expert, weight_dtype, path))


class MovaAudioTowerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.AUDIO_TOWER_LOADER)

    @classmethod
    def validate_inputs(cls, audio_dit_name: str, bridge_name: str) -> bool | str:
        """At queue time: both are there, hold the audio DiT and the bridge, and the bridge fits the audio DiT."""
        kinds = {"audio_dit_name": "audio_dit", "bridge_name": "dual_tower_bridge"}
        found = _check("diffusion_models", kinds, audio_dit_name=audio_dit_name, bridge_name=bridge_name)
        if found is True:
            found = check_tower_fit(audio_dit_name, bridge_name, folder_paths.get_folder_paths("diffusion_models"))
        return found or True

    @classmethod
    @checked_inputs(spec.AUDIO_TOWER_LOADER)
    def execute(cls, audio_dit_name: str, bridge_name: str, weight_dtype: str) -> io.NodeOutput:
        paths = _path("diffusion_models", audio_dit_name), _path("diffusion_models", bridge_name)
        return io.NodeOutput(_load("MOVA Audio Tower Loader", load_audio_tower, weight_dtype, *paths))


class MovaAudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.AUDIO_VAE_LOADER)

    @classmethod
    def validate_inputs(cls, vae_name: str) -> bool | str:
        """At queue time: the file or folder is there and holds MOVA's audio VAE."""
        return _check("vae", "audio_vae", vae_name=vae_name)

    @classmethod
    @checked_inputs(spec.AUDIO_VAE_LOADER)
    def execute(cls, vae_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(_load("MOVA Audio VAE Loader", load_audio_vae, weight_dtype, _path("vae", vae_name)))
