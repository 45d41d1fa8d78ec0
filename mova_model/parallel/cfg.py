"""CFG parallel: the guidance passes of a step (prompt, negative prompt, dual CFG's bridge-off pass) run on
different processes of a group, and every process gets every pass's output.

Passes go to the group's ranks round by round (pass j on rank j mod size). In a round with fewer passes than
ranks, the idle ranks run the round's first pass again and drop the result: every rank then runs the same
number of forwards through the same blocks, which sharded weights (FSDP) need, and costs no time (the round
lasts one forward anyway). The outputs travel by one ``all_gather_into_tensor`` per round.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..sampling.joint import JointOutput


class CfgParallel:
    """The passes of ``guided_velocity`` spread over ``group`` (a torch.distributed process group)."""

    def __init__(self, group):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def run(self, run, calls: list[tuple]) -> list[JointOutput]:
        """``[run(*call) for call in calls]``, each call computed on one rank; the same list on every rank."""
        outputs: list[JointOutput | None] = [None] * len(calls)
        for start in range(0, len(calls), self.size):
            mine = start + self.rank if start + self.rank < len(calls) else start
            gathered = self._gather(run(*calls[mine]))
            for j, out in enumerate(gathered):
                if start + j < len(calls):
                    outputs[start + j] = out
        return outputs

    def _gather(self, out: JointOutput) -> list[JointOutput]:
        """Every rank's output of this round, in rank order: video [B,16,T,h,w] and audio [B,C,L] float32."""
        flat = torch.cat([out.video.reshape(-1), out.audio.reshape(-1)])
        gathered = torch.empty(self.size * flat.numel(), dtype=flat.dtype, device=flat.device)
        dist.all_gather_into_tensor(gathered, flat, group=self.group)
        n_video = out.video.numel()
        return [JointOutput(video=part[:n_video].view_as(out.video), audio=part[n_video:].view_as(out.audio))
                for part in gathered.chunk(self.size)]
