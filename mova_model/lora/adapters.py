"""Trainable LoRA adapters on frozen MOVA networks (forward hooks; the networks themselves are not changed).

A target Linear W (its weight stays frozen, in whatever dtype it was loaded: bf16, fp16, fp32 or fp8) gets
y = W(x) + (alpha / rank) · B(A(x)) with A [r,in] and B [out,r] float32 parameters held apart from the network.
The update is computed in the activations' dtype, so gradients reach the float32 A and B through a cast.
Adapters are attached as forward hooks for the duration of a training run and removed afterwards: the
networks' state dicts, their ComfyUI patchers and inference results are untouched.

Targets follow one of the official recipes' layer selections (``lora_recipes``): the low-resource trainer's
q, k, v, o of every attention (the default), or the 8-GPU trainer's every Linear of the blocks (FFN included).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .recipes import LOW_RESOURCE, select_layers

# LoRA components (the official key prefixes) in the order their parts are listed to users.
COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")


def lora_targets(model: nn.Module, layers: str = LOW_RESOURCE) -> list[str]:
    """Names of the Linear modules of ``model`` that get an adapter under the recipe selection ``layers``
    (default: the low-resource trainer's q/k/v/o projections), in module order."""
    return select_layers(model, layers)


class LoraAdapter(nn.Module):
    """One low-rank update: lora_A [r,in] (Kaiming-uniform), lora_B [out,r] (zeros), scale alpha / rank."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform_(a=sqrt(5)), as the official trainers
        a = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = float(alpha) / rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> scale · B(A(x)) [..., out] in x's dtype."""
        down = F.linear(x, self.lora_A.to(x.dtype))
        return F.linear(down, self.lora_B.to(x.dtype)) * self.scale


@dataclass
class LoraSet:
    """Adapters per LoRA component: ``adapters[component][module name]``."""

    rank: int
    alpha: float
    adapters: dict[str, dict[str, LoraAdapter]] = field(default_factory=dict)

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(official key, parameter) in a fixed order: ``<component>.<module>.lora_A.weight`` / ``lora_B``."""
        out = []
        for component in COMPONENTS:
            for module, adapter in sorted(self.adapters.get(component, {}).items()):
                out.append((f"{component}.{module}.lora_A.weight", adapter.lora_A))
                out.append((f"{component}.{module}.lora_B.weight", adapter.lora_B))
        return out

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA in the official accelerate trainer's key layout (float32, CPU, detached copies)."""
        return {k: p.detach().float().cpu().clone() for k, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a state from ``state_dict`` back in; every key must be present with the same shape."""
        for key, param in self.named_parameters():
            if key not in state:
                raise KeyError(f"the checkpoint has no {key}: it was made for other parts or another model")
            if tuple(state[key].shape) != tuple(param.shape):
                raise ValueError(f"{key} is {tuple(state[key].shape)} in the checkpoint, {tuple(param.shape)} here")
            with torch.no_grad():
                param.copy_(state[key].to(param.device, param.dtype))

    def to(self, device) -> "LoraSet":
        for adapters in self.adapters.values():
            for adapter in adapters.values():
                adapter.to(device)
        return self

    def count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def make_lora_set(parts: dict[str, nn.Module], rank: int, alpha: float, seed: int,
                  layers: str = LOW_RESOURCE) -> LoraSet:
    """Fresh adapters (B = 0, so the networks start unchanged) on the targets of each part (recipe selection
    ``layers``); ``parts`` maps a LoRA component to its network. A's initialisation draws from one generator
    seeded with ``seed``."""
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    gen = torch.Generator().manual_seed(int(seed))
    lora = LoraSet(rank=rank, alpha=float(alpha))
    for component in COMPONENTS:
        if component not in parts:
            continue
        model = parts[component]
        lora.adapters[component] = {
            name: LoraAdapter(model.get_submodule(name).in_features, model.get_submodule(name).out_features,
                              rank, alpha, gen)
            for name in lora_targets(model, layers)
        }
        if not lora.adapters[component]:
            raise ValueError(f"{component} has no Linear layer that the {layers} recipe puts a LoRA on")
    return lora


@contextlib.contextmanager
def attached(lora: LoraSet, parts: dict[str, nn.Module]):
    """Within the block, every adapted Linear of ``parts`` (LoRA component -> network) adds its LoRA update;
    the hooks are removed on exit, whatever happens inside."""
    handles = []
    try:
        for component, adapters in lora.adapters.items():
            model = parts[component]
            for name, adapter in adapters.items():
                handles.append(model.get_submodule(name).register_forward_hook(_hook(adapter)))
        yield lora
    finally:
        for handle in handles:
            handle.remove()


def _hook(adapter: LoraAdapter):
    def add_update(module, args, output):
        return output + adapter.delta(args[0]).to(output.dtype)
    return add_update


@torch.inference_mode(False)
@torch.no_grad()
def release_inference_tensors(model: nn.Module, all_parameters: bool = True) -> None:
    """Give the parameters and buffers of ``model`` fresh tensor objects usable by autograd.

    Hosts that load models under ``torch.inference_mode()`` (ComfyUI does) leave tensors autograd refuses to
    save for the backward pass, also after their data was moved outside inference mode (which leaves no
    visible mark): every parameter object is replaced when ``all_parameters``, else only those that are
    inference tensors (say, weights a host restored from an earlier backup). Values, devices and dtypes stay;
    inference tensors are copied (one at a time), others keep their storage."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and (all_parameters or torch.is_inference(param)):
                data = param.data.clone() if torch.is_inference(param.data) else param.data
                module._parameters[name] = nn.Parameter(data, requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and torch.is_inference(buffer):
                module._buffers[name] = buffer.clone()
