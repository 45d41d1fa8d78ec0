"""Block swapping: run a DiT whose blocks do not all fit on the compute device.

The first ``resident`` blocks (and everything outside the blocks) live on the device. The other
blocks stay in (pinned) host memory and are copied, one at a time, into one of two device
"slots" — copies of a block's structure that are reused, so nothing is allocated per step.
On CUDA the copy of the next swapped block runs on a side stream while the current block
computes; on the CPU the same path runs synchronously (used by the equivalence tests).
"""

from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn

from ..gguf.layers import PATCHES


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for _, t in sorted({**dict(module.named_parameters()), **dict(module.named_buffers())}.items())]


class BlockSwap:
    """Streams ``model.blocks[resident:]`` from host memory into two device slots."""

    def __init__(self, model: nn.Module, device: torch.device | str, resident: int, pin_memory: bool = True):
        self.device = torch.device(device)
        blocks = model.blocks
        self.resident = max(0, min(int(resident), len(blocks)))
        self.num_blocks = len(blocks)
        cuda = self.device.type == "cuda"
        for name, child in model.named_children():
            if name != "blocks":
                child.to(self.device)
        for i, block in enumerate(blocks):
            if i < self.resident:
                block.to(self.device)
            else:
                block.to("cpu")
                if cuda and pin_memory:
                    for t in _tensors(block):
                        t.data = t.data.pin_memory()
        self.resident_blocks = [blocks[i] for i in range(self.resident)]
        self.host_blocks = [blocks[i] for i in range(self.resident, self.num_blocks)]
        self.slots = [self._make_slot() for _ in self.host_blocks[:2]]
        self._host_tensors = [_tensors(b) for b in self.host_blocks]
        self._slot_tensors = [_tensors(s) for s in self.slots]
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self._loaded = [None, None]   # event: the copy into slot s finished
        self._free = [None, None]     # event: the last compute that read slot s finished

    def _make_slot(self) -> nn.Module:
        """A device copy of a swapped block's structure. A compiled block's copy would still call the
        original's compiled forward (bound to the host weights): the copy is compiled afresh."""
        slot = copy.deepcopy(self.host_blocks[0]).to(self.device)
        if getattr(slot, "_compiled_call_impl", None) is not None:
            slot._compiled_call_impl = None
            slot.compile(dynamic=False)
        return slot

    @property
    def swapped(self) -> int:
        return len(self.host_blocks)

    def _load(self, index: int) -> None:
        """Start copying swapped block ``index`` into its slot (asynchronously on CUDA)."""
        slot = index % 2
        source, target = self._host_tensors[index], self._slot_tensors[slot]
        for dst, src in zip(target, source):  # patches a GGUF weight carries (its LoRA) go with it
            patches = getattr(src, PATCHES, None)
            if patches is not None or hasattr(dst, PATCHES):
                setattr(dst, PATCHES, list(patches or ()))
        if self.copy_stream is None:
            for dst, src in zip(target, source):
                dst.data.copy_(src.data)
            return
        with torch.cuda.stream(self.copy_stream):
            if self._free[slot] is not None:
                self.copy_stream.wait_event(self._free[slot])
            for dst, src in zip(target, source):
                dst.data.copy_(src.data, non_blocking=True)
            self._loaded[slot] = self.copy_stream.record_event()

    def blocks(self) -> Iterator[nn.Module]:
        """Yield the blocks in order, each on the device when it is yielded."""
        if self.swapped:
            self._load(0)
        yield from self.resident_blocks
        for j in range(self.swapped):
            slot = j % 2
            if self.copy_stream is not None:
                torch.cuda.current_stream(self.device).wait_event(self._loaded[slot])
            if j + 1 < self.swapped:
                self._load(j + 1)
            yield self.slots[slot]
            if self.copy_stream is not None:
                self._free[slot] = torch.cuda.current_stream(self.device).record_event()


def enable_block_swap(model: nn.Module, device, resident: int, pin_memory: bool = True) -> BlockSwap:
    """Put ``model`` on ``device`` keeping only ``resident`` blocks there; the joint forward streams the rest."""
    disable_block_swap(model)
    swap = BlockSwap(model, device, resident, pin_memory)
    model.__dict__["block_swap"] = swap
    return swap


def disable_block_swap(model: nn.Module) -> None:
    """Forget a model's block swap (its blocks stay where they are)."""
    if "block_swap" in model.__dict__:
        del model.__dict__["block_swap"]


def iter_blocks(model: nn.Module):
    """The model's blocks in order, streamed when block swap is on."""
    swap = model.__dict__.get("block_swap")
    return swap.blocks() if swap is not None else iter(model.blocks)
