"""The continuous DAC audio codec (MOVA's audio VAE) in plain PyTorch.

Module names mirror the released checkpoint (``encoder.block.*``, ``decoder.model.*``,
``quant_conv``, ``post_quant_conv``), so its state dict loads with ``strict=True``.
Weights are plain conv ``weight``s; files stored with weight-norm (``weight_g`` / ``weight_v``)
go through :func:`fuse_weight_norm` first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import DACConfig
from .ops import torch_ops

# Kernel size and dilations of the residual units used throughout the codec.
_RES_KERNEL = 7
_RES_DILATIONS = (1, 3, 9)
# Kernel size of the decoder's first and last convolutions.
_EDGE_KERNEL = 7


_WN_PAIRS = ((".weight_g", ".weight_v"), (".parametrizations.weight.original0", ".parametrizations.weight.original1"))


def fuse_weight_norm(state_dict: dict) -> dict:
    """Replace each ``X.weight_g``/``X.weight_v`` pair by ``X.weight = g * v / ||v||`` (norm over all dims but 0)."""
    out = {}
    for key, value in state_dict.items():
        pair = next((p for p in _WN_PAIRS if key.endswith(p[0]) or key.endswith(p[1])), None)
        if pair is None:
            out[key] = value
            continue
        g_suffix, v_suffix = pair
        prefix = key[: -len(g_suffix)] if key.endswith(g_suffix) else key[: -len(v_suffix)]
        g_key, v_key = prefix + g_suffix, prefix + v_suffix
        if g_key not in state_dict or v_key not in state_dict:
            raise KeyError(f"weight-norm key {key!r} has no partner ({g_key!r} / {v_key!r})")
        if key == v_key:
            continue  # fused when its g was met
        out[prefix + ".weight"] = weight_from_norm(state_dict[g_key], state_dict[v_key])
    return out


def weight_from_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One weight-norm pair as a plain weight: w = g * v / ||v||, the norm over every dim but 0."""
    v32 = v.float()
    norm = v32.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return (v32 * (g.float().reshape(norm.shape) / norm)).to(v.dtype)


class Snake1d(nn.Module):
    """Snake activation x + sin^2(alpha x) / (alpha + 1e-9), per channel: [B,C,T] -> [B,C,T]."""

    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,T] -> [B,C,T]."""
        alpha = self.alpha.to(device=x.device, dtype=x.dtype)
        return x + torch.sin(alpha * x).pow(2) * (alpha + 1e-9).reciprocal()


class ResidualUnit(nn.Module):
    """Snake, dilated conv k7, snake, conv k1, plus the (centre-cropped) input: [B,C,T] -> [B,C,T]."""

    def __init__(self, dim: int, dilation: int, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.block = nn.Sequential(
            Snake1d(dim, **kw),
            operations.Conv1d(dim, dim, _RES_KERNEL, dilation=dilation,
                              padding=(_RES_KERNEL - 1) * dilation // 2, **kw),
            Snake1d(dim, **kw),
            operations.Conv1d(dim, dim, 1, **kw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,T] -> [B,C,T]."""
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


def _residual_stack(dim, operations, kw):
    return [ResidualUnit(dim, d, operations, **kw) for d in _RES_DILATIONS]


class EncoderBlock(nn.Module):
    """Residual units at dim/2 then a strided conv to dim: [B,dim/2,T] -> [B,dim,T/stride]."""

    def __init__(self, dim: int, stride: int, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.block = nn.Sequential(
            *_residual_stack(dim // 2, operations, kw),
            Snake1d(dim // 2, **kw),
            operations.Conv1d(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2), **kw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,dim/2,T] -> [B,dim,T/stride]."""
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, transposed conv upsampling by stride, residual units: [B,Cin,T] -> [B,Cout,T*stride]."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.block = nn.Sequential(
            Snake1d(in_dim, **kw),
            operations.ConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride,
                                       padding=math.ceil(stride / 2), output_padding=stride % 2, **kw),
            *_residual_stack(out_dim, operations, kw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,Cin,T] -> [B,Cout,T*stride]."""
        return self.block(x)


class Encoder(nn.Module):
    """Waveform to latent features: [B,1,T] -> [B,latent_dim,T/hop]."""

    def __init__(self, config: DACConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        dim = config.encoder_dim
        layers = [operations.Conv1d(1, dim, 7, padding=3, **kw)]
        for stride in config.encoder_rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride, operations, **kw))
        layers += [Snake1d(dim, **kw), operations.Conv1d(dim, config.latent_dim, 3, padding=1, **kw)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,1,T] -> [B,latent_dim,T/hop]."""
        return self.block(x)


class Decoder(nn.Module):
    """Latent features to waveform in [-1,1]: [B,latent_dim,L] -> [B,1,L*hop]."""

    def __init__(self, config: DACConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        pad = (_EDGE_KERNEL - 1) // 2
        dim = config.decoder_dim
        layers = [operations.Conv1d(config.latent_dim, dim, _EDGE_KERNEL, padding=pad, **kw)]
        for i, stride in enumerate(config.decoder_rates):
            layers.append(DecoderBlock(dim >> i, dim >> (i + 1), stride, operations, **kw))
        out_dim = dim >> len(config.decoder_rates)
        layers += [
            Snake1d(out_dim, **kw),
            operations.Conv1d(out_dim, 1, _EDGE_KERNEL, padding=pad, **kw),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,latent_dim,L] -> [B,1,L*hop]."""
        return self.model(x)


def _decoder_context(config: DACConfig) -> int:
    """Latent frames either side that any decoder output sample depends on (exact interval arithmetic)."""
    # Layers in forward order: ("conv", kernel, dilation) with 'same' padding, or ("up", stride).
    layers = [("conv", _EDGE_KERNEL, 1)]
    for stride in config.decoder_rates:
        layers.append(("up", stride))
        for d in _RES_DILATIONS:
            layers += [("conv", _RES_KERNEL, d), ("conv", 1, 1)]
    layers.append(("conv", _EDGE_KERNEL, 1))
    hop = math.prod(config.decoder_rates)
    need = 0
    for n in range(hop):  # every output phase within one latent frame
        lo, hi = n, n
        for layer in reversed(layers):
            if layer[0] == "conv":
                _, k, d = layer
                half = (k - 1) * d // 2
                lo, hi = lo - half, hi + half
            else:
                s = layer[1]
                p = math.ceil(s / 2)
                lo, hi = -((-(lo + p - 2 * s + 1)) // s), (hi + p) // s
        need = max(need, -lo, hi)
    return need


class DAC(nn.Module):
    """Continuous DAC: ``encode`` waveform -> posterior mean, ``decode`` latent -> waveform."""

    def __init__(self, config: DACConfig, operations=torch_ops, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.config = config
        self.hop_length = config.hop_length
        self.upsampling = math.prod(config.decoder_rates)  # waveform samples per latent frame
        self.encoder = Encoder(config, operations, **kw)
        self.quant_conv = operations.Conv1d(config.latent_dim, 2 * config.latent_dim, 1, **kw)
        self.post_quant_conv = operations.Conv1d(config.latent_dim, config.latent_dim, 1, **kw)
        self.decoder = Decoder(config, operations, **kw)
        self.decode_overlap = _decoder_context(config)  # latent frames of context for exact chunking

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B,1,T] -> posterior mean [B,latent_dim,ceil(T/hop)] (right-pads T to a hop multiple)."""
        length = waveform.shape[-1]
        waveform = F.pad(waveform, (0, -length % self.hop_length))
        moments = self.quant_conv(self.encoder(waveform))
        mean, _logvar = moments.chunk(2, dim=1)
        return mean

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B,latent_dim,L] -> waveform [B,1,L*hop] in [-1,1] (hop = product of decoder_rates)."""
        return self.decoder(self.post_quant_conv(latent))

    def decode_chunked(self, latent: torch.Tensor, chunk: int, overlap: int | None = None) -> torch.Tensor:
        """[B,latent_dim,L] -> [B,1,L*hop], decoding ``chunk`` frames at a time with ``overlap`` frames of context.

        With ``overlap >= self.decode_overlap`` (the default) the result equals :meth:`decode`.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        overlap = self.decode_overlap if overlap is None else overlap
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        length, hop = latent.shape[-1], self.upsampling
        if length <= chunk:
            return self.decode(latent)
        pieces = []
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            lo, hi = max(0, start - overlap), min(length, stop + overlap)
            audio = self.decode(latent[..., lo:hi])
            pieces.append(audio[..., (start - lo) * hop:(stop - lo) * hop])
        return torch.cat(pieces, dim=-1)
