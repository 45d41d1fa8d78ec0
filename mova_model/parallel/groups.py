"""A worker's place in a parallel run: the process groups of its plan, from one DeviceMesh."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .cfg import CfgParallel
from .plan import ParallelPlan
from .sequence import SequenceParallel


@dataclass
class ParallelGroups:
    """``sequence`` / ``cfg``: the mechanisms of this process (None where the plan's degree is 1); ``shard_mesh``:
    the 1-D mesh of all processes the expert weights are sharded over (None without sharding)."""

    plan: ParallelPlan
    rank: int
    device: torch.device
    sequence: SequenceParallel | None
    cfg: CfgParallel | None
    shard_mesh: object | None

    def agree(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (e.g. Cancel seen by one)."""
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def make_groups(plan: ParallelPlan, device: torch.device) -> ParallelGroups:
    """The groups of ``plan`` for this process (the default process group must span plan.world processes);
    rank = cfg_index * ulysses + ulysses_index."""
    from torch.distributed.device_mesh import init_device_mesh

    if dist.get_world_size() != plan.world:
        raise RuntimeError(f"{dist.get_world_size()} processes for a plan of {plan.world}")
    mesh = init_device_mesh(device.type, (plan.cfg, plan.ulysses), mesh_dim_names=("cfg", "ulysses"))
    sequence = SequenceParallel(mesh.get_group("ulysses")) if plan.ulysses > 1 else None
    cfg = CfgParallel(mesh.get_group("cfg")) if plan.cfg > 1 else None
    shard_mesh = init_device_mesh(device.type, (plan.world,)) if plan.shard_weights else None
    return ParallelGroups(plan, dist.get_rank(), device, sequence, cfg, shard_mesh)
