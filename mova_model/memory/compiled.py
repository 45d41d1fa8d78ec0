"""Regional compilation: ``torch.compile`` each transformer block instead of the whole model.

Blocks of one tower share their code and shapes, so torch compiles one graph per kind of block
(video block, audio block, each bridge direction) and reuses it for every layer: compile time
stays at a few graphs whatever the depth. Shapes are static per resolution (a new resolution
compiles once more). Block swap slots are compiled too, so swapped blocks run compiled; LoRA
patches and fp8 weights change parameter values, not graph structure, and need no recompile.
"""

from __future__ import annotations

from torch import nn


def compilable_regions(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that are compiled one by one: its blocks (and block-swap slots) or
    the bridge's conditioners."""
    regions: list[nn.Module] = []
    if hasattr(model, "blocks"):
        regions += list(model.blocks)
        swap = model.__dict__.get("block_swap")
        if swap is not None:
            regions += list(swap.slots)
    for name in ("audio_to_video_conditioners", "video_to_audio_conditioners"):
        if hasattr(model, name):
            regions += list(getattr(model, name).values())
    return regions


def compile_blocks(*models: nn.Module, mode: str | None = None) -> int:
    """Compile every region of ``models`` in place (``nn.Module.compile``); returns how many.

    ``mode`` is passed to torch.compile (None: the default, "max-autotune-no-cudagraphs": slower to
    compile, sometimes faster to run). Idempotent: a compiled region is left alone.
    """
    count = 0
    for model in models:
        for region in compilable_regions(model):
            if getattr(region, "_compiled_call_impl", None) is None:
                region.compile(dynamic=False, mode=mode)
            count += 1
    return count


def uncompile_blocks(*models: nn.Module) -> None:
    """Run ``models`` eagerly again."""
    for model in models:
        for region in compilable_regions(model):
            region._compiled_call_impl = None
