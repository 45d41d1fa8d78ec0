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

from ..lora.load import LoraPatch, merge_lora_
from ..weights.loading import load_component
from ..weights.quantize import FP8_DTYPES as FP8
from ..memory.offload import enable_block_swap
from ..sampling.sampler import MovaTowers
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


def _bytes(model: nn.Module) -> int:
    """Bytes of the model's weights held by this process (a sharded weight counts its local shard)."""
    total = 0
    for param in model.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        total += local.numel() * local.element_size()
    return total


class WorkerTowers:
    """The towers of one model description, placed for ``groups``. Both video experts stay on the device when
    they fit; otherwise ``before_expert`` switches them: plain experts wait in host memory and move, sharded
    ones are loaded (and sharded) again when their turn comes. ``models["experts_resident"]`` "one" forces the
    one-at-a-time policy (tests)."""

    def __init__(self, models: dict, groups: ParallelGroups):
        self.key = models["key"]
        self.compute = getattr(torch, models["compute_dtype"])
        self.groups, self.device = groups, groups.device
        self.specs = models["experts"]
        self.swap = int(models.get("swap_blocks") or 0)
        audio_dit = load_part(models["audio_dit"], "audio_dit", self.compute).to(self.device)
        self.bridge = load_part(models["bridge"], "dual_tower_bridge", self.compute).to(self.device)
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        one = models.get("experts_resident") == "one"
        first = self._load_expert(0)
        if groups.plan.shard_weights:
            self.policy = "reload" if one or (free is not None and 2 * _bytes(first) > 0.8 * free) else "both"
        elif self.swap:
            self.policy = "both"  # block swap keeps most blocks in host memory already
        else:
            self.policy = "move" if one or (free is not None and 2 * _bytes(first) > 0.8 * free) else "both"
        second = None if self.policy == "reload" else self._load_expert(1)
        if self.policy == "both" and not self._placed:
            first, second = first.to(self.device), second.to(self.device)
        self.towers = MovaTowers([first, second or first], audio_dit, self.bridge)
        if second is None:
            self.towers.video_experts[1] = None
        self.current: int | None = None

    @property
    def _placed(self) -> bool:
        """Whether a loaded expert is already on the device (sharded or block-swapped)."""
        return self.groups.plan.shard_weights or bool(self.swap)

    def _load_expert(self, index: int) -> nn.Module:
        expert = load_part(self.specs[index], "video_dit", self.compute)
        if self.groups.sequence is not None:
            sequence.attach(expert, self.bridge)
        if self.groups.plan.shard_weights:
            shard_blocks(expert, self.groups.shard_mesh)
            _to_device(expert, self.device, skip_blocks=True)
        elif self.swap:
            enable_block_swap(expert, self.device, resident=max(0, len(expert.blocks) - self.swap))
        return expert

    def before_expert(self, index: int) -> None:
        """Expert ``index`` ready on the device (sampling calls this on every process at the same step)."""
        if self.policy == "both" or self.current == index:
            return
        experts = self.towers.video_experts
        if self.policy == "move":
            if self.current is not None:
                experts[self.current].to("cpu")
            experts[index].to(self.device)
        elif experts[index] is None:  # reload: drop the other expert's shards, then load and shard this one
            experts[1 - index] = None
            self._free()
            experts[index] = self._load_expert(index)
        self.current = index

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self) -> None:
        self.towers = None
        self._free()
