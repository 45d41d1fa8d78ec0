"""Step caching (the idea behind TeaCache / EasyCache): reuse the last guided velocity on steps
where the towers' timestep-modulated inputs barely changed.

The indicator is the relative L1 change of each tower's first-block input after AdaLN modulation
(cheap: a patch embedding, the time embedding and one LayerNorm). Changes accumulate over skipped
steps; a step is computed again once either tower's accumulated change reaches the threshold.
The towers exchange information through the bridge at every layer, so they are skipped together.
The first step, the last step and the first step of each expert are always computed.
"""

from __future__ import annotations

import torch

from ..networks.dit import WanDiT
from ..networks.layers import layer_norm, modulate, param_like
from .joint import JointOutput


def modulated_input(dit: WanDiT, x: torch.Tensor, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The first block's AdaLN-modulated input [B,N,C] (what its self-attention sees)."""
    tokens, _ = dit.patchify(x.to(dtype))
    _, t_mod = dit.embed_time(timestep.float().reshape(-1).expand(x.shape[0]), dtype)
    block = dit.blocks[0]
    shift, scale = (param_like(block.modulation, t_mod) + t_mod).chunk(6, dim=1)[:2]
    return modulate(layer_norm(tokens, block.eps), shift, scale)


def _relative_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    return ((new - old).abs().mean() / old.abs().mean().clamp_min(1e-12)).item()


class StepCache:
    """Decides per step whether to reuse the previous guided velocity; counts what it skipped."""

    def __init__(self, threshold: float):
        self.threshold = float(threshold)
        self.computed = 0
        self.skipped = 0
        self._previous = None     # modulated inputs (video, audio) of the last step
        self._accumulated = [0.0, 0.0]
        self._velocity: JointOutput | None = None

    @property
    def skipped_share(self) -> float:
        total = self.computed + self.skipped
        return self.skipped / total if total else 0.0

    def reset(self) -> None:
        """Forget the cache (e.g. when the video expert changes)."""
        self._previous, self._velocity, self._accumulated = None, None, [0.0, 0.0]

    def lookup(self, towers, expert: WanDiT, video_in, audio_in, t_video, t_audio, dtype, last: bool):
        """The cached velocity if this step may be skipped, else None (then call ``store``)."""
        if self.threshold <= 0:
            return None
        current = (modulated_input(expert, video_in, t_video, dtype),
                   modulated_input(towers.audio_dit, audio_in, t_audio, dtype))
        reuse = False
        if self._previous is not None and self._velocity is not None and not last:
            for k in range(2):
                self._accumulated[k] += _relative_l1(current[k].float(), self._previous[k].float())
            reuse = max(self._accumulated) < self.threshold
        self._previous = current
        if reuse:
            self.skipped += 1
            return self._velocity
        self._accumulated = [0.0, 0.0]
        return None

    def store(self, velocity: JointOutput) -> None:
        self.computed += 1
        if self.threshold > 0:
            self._velocity = velocity
