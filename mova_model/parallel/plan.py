"""The parallel modes, their degrees, and what does not compose (refused before anything heavy runs).

A run on N processes is a grid of ``cfg`` x ``ulysses``: the guidance passes of a step are spread over ``cfg``
groups (CFG parallel), and within a group the video tokens over ``ulysses`` processes (Ulysses sequence
parallel). ``shard_weights`` additionally splits the video experts' blocks over all N processes (FSDP2).
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("ulysses", "cfg", "cfg+ulysses")


@dataclass(frozen=True)
class ParallelPlan:
    """``cfg`` x ``ulysses`` processes; ``shard_weights``: FSDP2 over all of them."""

    cfg: int = 1
    ulysses: int = 1
    shard_weights: bool = False

    @property
    def world(self) -> int:
        return self.cfg * self.ulysses

    def describe(self) -> str:
        parts = []
        if self.cfg > 1:
            parts.append(f"CFG parallel x{self.cfg}")
        if self.ulysses > 1:
            parts.append(f"Ulysses x{self.ulysses} over the video tokens")
        if self.shard_weights:
            parts.append(f"video expert weights sharded over {self.world} (FSDP2)")
        return ", ".join(parts) or "one process"


def plan_for(mode: str, world: int, shard_weights: bool = False) -> ParallelPlan:
    """The plan for ``mode`` on ``world`` processes: ulysses (all on the tokens), cfg (all on the passes: 2, or 3
    for dual CFG's third pass) or cfg+ulysses (2 CFG groups of world/2)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if world < 2:
        raise ValueError(f"a parallel run needs at least 2 devices, got {world}: list two or more, or leave the "
                         "MOVA Parallel node out for one device")
    if mode == "ulysses":
        return ParallelPlan(1, world, shard_weights)
    if mode == "cfg":
        if world > 3:
            raise ValueError(f"mode cfg runs the guidance passes side by side: at most 3 (prompt, negative, dual "
                             f"CFG's bridge-off pass), not {world} devices; choose cfg+ulysses for {world}")
        return ParallelPlan(world, 1, shard_weights)
    if world % 2:
        raise ValueError(f"mode cfg+ulysses splits the devices into 2 CFG groups: give an even number, not {world}")
    return ParallelPlan(2, world // 2, shard_weights)


def ulysses_degrees(heads: int, largest: int = 8) -> list[int]:
    """The Ulysses degrees 2..largest that divide ``heads`` (video expert: 40 -> 2, 4, 5, 8)."""
    return [d for d in range(2, largest + 1) if heads % d == 0]


def plan_problems(plan: ParallelPlan, video_heads: int, passes: int, compile: str = "off",
                  attention: str = "auto", swap_blocks: int = 0) -> list[str]:
    """What stops ``plan`` for a video expert of ``video_heads`` heads and ``passes`` guidance passes per step
    (1 without CFG, 2 text CFG, 3 dual CFG), each with the fix; empty when it runs."""
    problems = []
    if plan.ulysses > 1 and video_heads % plan.ulysses:
        fits = ", ".join(str(d) for d in ulysses_degrees(video_heads)) or "none"
        problems.append(f"Ulysses over the video tokens splits the video expert's {video_heads} attention heads, "
                        f"which {plan.ulysses} processes do not divide: use a degree that divides them ({fits}), "
                        "or mode cfg")
    if plan.cfg > 1 and passes == 1:
        problems.append("CFG parallel runs the prompt's and the negative prompt's passes side by side, but with cfg "
                        "1 (and no dual CFG) a step has one pass: raise cfg, or choose mode ulysses")
    elif plan.cfg > passes:
        problems.append(f"CFG parallel on {plan.cfg} processes needs {plan.cfg} passes per step, this run has "
                        f"{passes}: 3 need dual CFG (bridge_cfg other than 1 on MOVA Sampler Options); use 2")
    if compile != "off" and (plan.ulysses > 1 or plan.shard_weights):
        problems.append(f"compile {compile!r} is not available with Ulysses or sharded weights (their collectives "
                        "run inside the blocks): set compile to off, or use mode cfg without shard_weights")
    if attention == "comfy":
        problems.append("attention 'comfy' is ComfyUI's own attention, which the worker processes do not have: "
                        "choose auto (FlashAttention-3 or PyTorch SDPA there) or another backend")
    if plan.shard_weights and swap_blocks:
        problems.append("block swap and sharded weights both keep the experts off the GPU's memory and do not "
                        "combine: set swap_blocks to 0, or turn shard_weights off")
    return problems
