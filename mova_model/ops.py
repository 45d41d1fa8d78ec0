"""The default ``operations`` namespace: plain torch.nn layers.

Every network takes ``operations=`` (ComfyUI passes ``comfy.ops.manual_cast`` and friends,
which have the same class names and constructor arguments) so that the host can swap in
layers that cast stored weights or stream them in low-VRAM mode.
"""

from types import SimpleNamespace

from torch import nn

torch_ops = SimpleNamespace(
    Linear=nn.Linear,
    Conv1d=nn.Conv1d,
    Conv3d=nn.Conv3d,
    ConvTranspose1d=nn.ConvTranspose1d,
    LayerNorm=nn.LayerNorm,
)
