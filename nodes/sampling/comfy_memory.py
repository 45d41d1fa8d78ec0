"""Which MOVA experts sit on the sampling device, through ComfyUI's memory manager (MOVA Sampler and MOVA Guider):
both video experts stay loaded when they fit beside the audio tower and one step's activations, else one at a
time, the other unloaded before each is loaded."""

from __future__ import annotations

import logging
from typing import Callable

import comfy.model_management as mm

from ..handles import LoadedPart
from .run import experts_fit_together

log = logging.getLogger(__name__)


def unload(patcher) -> None:
    """Move one model (and its LoRA clones) off the GPU now: ComfyUI's unload_model_and_clones where it has it,
    else the steps its free_memory takes for one model."""
    helper = getattr(mm, "unload_model_and_clones", None)
    if helper is not None:
        helper(patcher)
        return
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
            mm.soft_empty_cache()
            return


def keep_both_experts(experts, tower, activations: int, device) -> bool:
    """Whether both experts can stay on ``device`` with the tower and the activations (always on the CPU, where
    nothing moves); the budget is the device's memory less ComfyUI's reserve for inference."""
    if all(part.patcher.load_device == part.patcher.offload_device for part in (*experts, tower)):
        return True
    budget = mm.get_total_memory(device) - mm.minimum_inference_memory()
    return experts_fit_together(tuple(e.patcher.model_size() for e in experts), tower.patcher.model_size(),
                                activations, budget)


def expert_loader(experts: tuple[LoadedPart, LoadedPart], tower: LoadedPart, activations: int, device,
                  who: str) -> Callable[[int], None]:
    """The sampler's ``before_expert(index)``: loads expert ``index`` with the audio tower (keeping or dropping the
    other as the memory allows) and stops when the user pressed Cancel. Logs the policy as ``who``."""
    together = keep_both_experts(experts, tower, activations, device)
    log.info("%s: %s", who, "both video experts stay loaded (they fit together)" if together else
             "one video expert at a time (both do not fit): the other is unloaded before each is loaded")

    def before_expert(index: int) -> None:
        # Both experts fit: load this one beside the other (kept across steps and queues). Otherwise at most
        # one video expert on the GPU: drop the other before loading this one.
        mm.throw_exception_if_processing_interrupted()
        other = experts[1 - index].patcher
        if not together and other is not experts[index].patcher:
            unload(other)
        mm.load_models_gpu([experts[index].patcher, tower.patcher], memory_required=activations)

    return before_expert
