"""Weight sharding (FSDP2, ``torch.distributed.fsdp.fully_shard``) of the video experts' blocks.

Each block's weights are split over every process of the run; a block gathers them just before its forward
(on GPUs the next block's gather starts while this one computes) and frees them again after it, so a process
holds 1/N of the blocks plus about one whole block. Only the blocks are sharded: the embeddings, the head,
each block's AdaLN ``modulation`` (read outside the forward by step caching) and fp8 scales stay whole.
"""

from __future__ import annotations

from torch import nn


def _reshard(module, inputs, output):
    module.reshard()  # the blocks are separate FSDP roots, which would otherwise keep their weights gathered


def shard_blocks(model: nn.Module, mesh) -> int:
    """Shard ``model.blocks`` over the 1-D DeviceMesh ``mesh`` (their weights move to its device); returns how
    many blocks were sharded."""
    from torch.distributed.fsdp import fully_shard

    blocks = list(model.blocks)
    for block in blocks:
        whole = {p for name, p in block.named_parameters() if p.dim() == 0 or name.endswith("modulation")}
        fully_shard(block, mesh=mesh, reshard_after_forward=True, ignored_params=whole)
        block.register_forward_hook(_reshard)
    if mesh.device_type == "cuda":  # FSDP2's prefetch runs on CUDA streams (on the CPU it fails)
        for block, following in zip(blocks, blocks[1:]):
            block.set_modules_to_forward_prefetch([following])
    return len(blocks)
