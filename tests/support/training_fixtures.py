"""Shared pieces of the training tests: a two-clip toy dataset made from real clips (PyAV) with the golden
DAC, and stand-ins for the two encoders that only run inside ComfyUI (the Wan VAE and UMT5-XXL; the
integration test uses ComfyUI's real Wan VAE)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from clip_files import write_clip
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.nodes.training.dataset import DatasetRequest, Encoders, build_dataset, module_fingerprint


def pooling_video_encoder(frames: torch.Tensor) -> torch.Tensor:
    """Stand-in for the Wan 2.1 VAE (shape and determinism only): frames [F,H,W,3] 0..1 -> [1,16,1+(F-1)/4,H/8,W/8]
    (frame 0 alone, then groups of 4; 8x8 average pooling; a fixed projection of RGB to 16 channels)."""
    x = frames.permute(3, 0, 1, 2)[None].float()                      # [1,3,F,H,W]
    first, rest = x[:, :, :1], x[:, :, 1:]
    pooled = [F.avg_pool3d(first, (1, 8, 8))]
    if rest.shape[2]:
        pooled.append(F.avg_pool3d(rest, (4, 8, 8)))
    x = torch.cat(pooled, dim=2)
    projection = torch.randn(16, 3, generator=torch.Generator().manual_seed(16))
    return torch.einsum("oc,bcthw->bothw", projection, x * 2 - 1)


def hashed_text_encoder(text_dim: int, tokens: int = 8):
    """Stand-in for UMT5-XXL: caption -> states [1,tokens,text_dim] drawn from a generator seeded by the caption."""
    def encode(caption: str) -> torch.Tensor:
        seed = int(hashlib.sha256(caption.encode()).hexdigest()[:8], 16)
        return torch.randn(1, tokens, text_dim, generator=torch.Generator().manual_seed(seed))
    return encode


def golden_dac(golden_dir):
    return loading.load_component(golden_dir / "checkpoint", "audio_vae", dtype=torch.float32, component="audio_vae")


def toy_encoders(golden_dir, golden_cases) -> Encoders:
    dac = golden_dac(golden_dir)

    def encode_audio(wave: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return dac.encode(wave.float())

    return Encoders(video=pooling_video_encoder, audio=encode_audio,
                    text=hashed_text_encoder(golden_cases["video_dit"]["text_dim"]),
                    sample_rate=dac.config.sample_rate, hop_length=dac.config.hop_length,
                    fingerprint=module_fingerprint(dac) + "|pool|hash")


def write_toy_clips(folder: Path, golden_cases, count: int = 2) -> Path:
    """``count`` captioned clips a little larger than the golden size (so fitting crops and resizes) and a few
    frames longer than needed."""
    w, h = golden_cases["width"], golden_cases["height"]
    for i in range(count):
        write_clip(folder / f"clip{i}.mp4", golden_cases["num_frames"] + 3, golden_cases["fps"], w + 16, h + 8,
                   tone=220.0 * (i + 1), caption=f"clip {i}: a test pattern; the audio shows a {220 * (i + 1)} Hz tone",
                   seed=i)
    return folder


def toy_request(folder: Path, golden_cases, **changes) -> DatasetRequest:
    args = dict(folder=folder, width=golden_cases["width"], height=golden_cases["height"],
                frames=golden_cases["num_frames"], fps=float(golden_cases["fps"]))
    return DatasetRequest(**(args | changes))


def build_toy_dataset(tmp: Path, golden_dir, golden_cases):
    """(dataset, cache file, report) of two toy clips, built with the real DAC and the stand-in encoders."""
    clips = write_toy_clips(tmp / "clips", golden_cases)
    return build_dataset(toy_request(clips, golden_cases), toy_encoders(golden_dir, golden_cases), tmp / "cache")


class NanBackward(torch.autograd.Function):
    """Passes its input on unchanged and hands NaN back in the backward pass: hooked on a layer's output, the loss
    stays finite while the gradients turn NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))
