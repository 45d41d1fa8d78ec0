"""The networks a worker holds: loaded from the same files as the host's loaders, LoRAs merged, then placed for
the plan (Ulysses hooks, FSDP2 shards, block swap) on the worker's device.

A model description (``spec``) is plain data: ``path`` (file, component folder or release folder),
``component`` (the sub-folder in a release folder, or None), ``fp8`` (keep/quantise the block weights in fp8),
``loras``: [{"patches": {weight key: {"down", "up", "scale"}}, "strength"}].
"""

from __future__ import annotations

import gc
import logging

import torch
from torch import nn

from ..lora import LoraPatch, merge_lora_
from ..loading import load_component
from ..quantize import FP8_DTYPES as FP8
from ..offload import enable_block_swap
from ..sampler import MovaTowers
from . import sequence
from .fsdp import shard_blocks
from .groups import ParallelGroups

log = logging.getLogger(__name__)


def load_part(spec: dict, kind: str, compute: torch.dtype) -> nn.Module:
    """One network on the CPU from its description, in ``compute`` (fp8 block weights when ``spec['fp8']``),
    with its LoRAs merged into the weights."""
    dtype = torch.float8_e4m3fn if spec.get("fp8") else compute
    model = load_component(spec["path"], kind, dtype=dtype, device="cpu", component=spec.get("component"))
    if spec.get("fp8"):  # the weights that are not fp8 (bf16 from the loader) in the compute dtype: plain layers
        for name, param in model.named_parameters():  # do not cast them on the fly as ComfyUI's do
            if param.dtype not in FP8 and not name.endswith("scale_weight"):
                param.data = param.data.to(compute)
    for lora in spec.get("loras") or ():
        patches = {key: LoraPatch(down=p["down"], up=p["up"], scale=float(p["scale"]))
                   for key, p in lora["patches"].items()}
        misses = merge_lora_(model, patches, float(lora["strength"]))
        if misses:
            raise ValueError(f"LoRA weights that do not fit {spec['path']}: {', '.join(misses[:5])}")
    return model


def _to_device(model: nn.Module, device: torch.device, skip_blocks: bool) -> None:
    for name, child in model.named_children():
        if not (skip_blocks and name == "blocks"):
            child.to(device)
    for name, param in model.named_parameters(recurse=False):
        param.data = param.data.to(device)


class WorkerTowers:
    """The towers of one model description, placed for ``groups``; ``before_expert`` moves experts when both do
    not fit the device."""

    def __init__(self, models: dict, groups: ParallelGroups):
        self.key = models["key"]
        self.compute = getattr(torch, models["compute_dtype"])
        device, plan = groups.device, groups.plan
        experts = [load_part(spec, "video_dit", self.compute) for spec in models["experts"]]
        audio_dit = load_part(models["audio_dit"], "audio_dit", self.compute)
        bridge = load_part(models["bridge"], "dual_tower_bridge", self.compute)
        swap = int(models.get("swap_blocks") or 0)
        for expert in experts:
            if groups.sequence is not None:
                sequence.attach(expert, bridge)
            if plan.shard_weights:
                shard_blocks(expert, groups.shard_mesh)
                _to_device(expert, device, skip_blocks=True)
            elif swap:
                enable_block_swap(expert, device, resident=max(0, len(expert.blocks) - swap))
        audio_dit.to(device)
        bridge.to(device)
        self.placed = plan.shard_weights or bool(swap)
        self.keep_both = self.placed or self._both_fit(experts, audio_dit, bridge, device)
        for expert in experts if self.keep_both and not self.placed else ():
            expert.to(device)
        self.towers = MovaTowers(experts, audio_dit, bridge)
        self.device = device
        self.current: int | None = None

    @staticmethod
    def _both_fit(experts, audio_dit, bridge, device) -> bool:
        if device.type != "cuda":
            return True
        size = sum(p.numel() * p.element_size() for m in (*experts, audio_dit, bridge) for p in m.parameters())
        free, _ = torch.cuda.mem_get_info(device)
        return size < 0.8 * free

    def before_expert(self, index: int) -> None:
        """Expert ``index`` on the device (the other moved to the CPU first when both do not fit)."""
        if self.keep_both or self.current == index:
            return
        experts = self.towers.video_experts
        if self.current is not None:
            experts[self.current].to("cpu")
            torch.cuda.empty_cache()
        experts[index].to(self.device)
        self.current = index

    def release(self) -> None:
        self.towers = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
