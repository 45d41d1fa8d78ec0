"""Pictures and sounds as MOVA reads them, whatever number type they arrive in (plain Python; no ComfyUI import).

ComfyUI's IMAGE is float 0..1, channels last [B,H,W,C]; its AUDIO waveform is float -1..1 [B,C,T]. Other nodes
and scripts also hand over 8- or 16-bit pixels and integer PCM samples; read as floats those are 255 or 32767
times too large (an 8-bit video came out white). The rule, by the tensor's type:

- pixels: uint8 / 0..255 and uint16 / 0..65535 scale to 0..1; float pixels stay as they are (a little over- or
  undershoot is clipped later); float pixels far outside 0..1 (0..255 or -1..1 data) and other types are refused.
  1 channel (grey) is repeated to RGB, 2 (grey + alpha) and 4 (RGBA) drop the alpha; more is refused.
- samples: int16 / 32768, int32 / 2^31, int8 / 128, uint8 (unsigned 8-bit PCM, silence 128) (x - 128) / 128;
  float samples stay as they are, unless they reach far beyond -1..1 (integer PCM stored as floats); other types
  are refused. NaN or infinite values are refused either way.
"""

from __future__ import annotations

import torch

PIXEL_SCALES = {torch.uint8: 255.0, torch.uint16: 65535.0} if hasattr(torch, "uint16") else {torch.uint8: 255.0}
SAMPLE_SCALES = {torch.int16: (0.0, 32768.0), torch.int32: (0.0, 2147483648.0), torch.int8: (0.0, 128.0),
                 torch.uint8: (128.0, 128.0)}
PIXEL_SLACK = 0.5     # float pixels beyond -0.5..1.5 are not 0..1 pixels
EIGHT_BIT_LIKE = 16.0  # float pixels this bright are 0..255 values
SAMPLE_LIMIT = 16.0   # float samples beyond +-16 (+24 dB over full scale) are not -1..1 samples


def _kind(x: torch.Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")


def check_channels(image: torch.Tensor, name: str) -> None:
    """Refuse an IMAGE with more than 4 channels last (a channels-first tensor or a MASK), showing its shape."""
    channels = image.shape[-1] if image.dim() else 0
    if channels > 4:
        raise ValueError(
            f"{name} has {channels} channels in its last dimension (shape {tuple(image.shape)}): an IMAGE is "
            "[B,H,W,C], channels last, with 3 (RGB); this looks like channels first [B,C,H,W] (permute it, e.g. "
            "image.permute(0, 2, 3, 1), in the node that makes it) or a MASK [B,H,W] (use Convert Mask to Image)")


def image_pixels(image: torch.Tensor, name: str) -> torch.Tensor:
    """IMAGE [...,H,W,C] of any supported type -> float32 [...,H,W,3] in 0..1 (see the module's rule); a ValueError
    naming ``name``, the problem and the fix otherwise."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name}: expected an IMAGE (a tensor [B,H,W,3]), got {type(image).__name__}")
    check_channels(image, name)
    channels = image.shape[-1] if image.dim() else 0
    if image.dtype in PIXEL_SCALES:
        pixels = image.detach().float() / PIXEL_SCALES[image.dtype]
    elif image.is_floating_point():
        pixels = image.detach().float()
        if pixels.numel() and not bool(torch.isfinite(pixels).all()):
            raise ValueError(f"{name} holds NaN or infinite pixels: connect a clean picture (the node that made it "
                             "failed)")
        if pixels.numel():
            low, high = float(pixels.min()), float(pixels.max())
            if low < -PIXEL_SLACK or high > 1 + PIXEL_SLACK:
                hint = ("0..255 values: divide them by 255" if high >= EIGHT_BIT_LIKE else
                        "over-bright (HDR) values: clamp or tone-map them to 0..1" if high > 1 + PIXEL_SLACK else
                        "-1..1 values: map them with (x + 1) / 2")
                raise ValueError(f"{name} holds float pixels from {low:g} to {high:g}, an IMAGE's are 0..1; these "
                                 f"look like {hint} in the node that makes them")
    else:
        raise ValueError(f"{name} holds {_kind(image)} pixels: an IMAGE is float 0..1 (8-bit uint8 and 16-bit uint16 "
                         "pixels are scaled too); convert it in the node that makes it")
    if channels in (1, 2):
        return pixels[..., :1].expand(*pixels.shape[:-1], 3)
    return pixels[..., :3]


def waveform_samples(wave: torch.Tensor, name: str) -> torch.Tensor:
    """An AUDIO waveform of any supported type -> float32 in -1..1 full scale (see the module's rule); a ValueError
    naming ``name``, the problem and the fix otherwise."""
    if wave.dtype in SAMPLE_SCALES:
        offset, scale = SAMPLE_SCALES[wave.dtype]
        return (wave.detach().float() - offset) / scale
    if not wave.is_floating_point():
        raise ValueError(f"{name} holds {_kind(wave)} samples: an AUDIO waveform is float -1..1 (int16, int32, int8 "
                         "and unsigned 8-bit PCM are scaled too); convert it in the node that makes it")
    samples = wave.detach().float()
    if not bool(torch.isfinite(samples).all()):
        raise ValueError(f"{name} holds NaN or infinite samples: connect a clean sound")
    peak = float(samples.abs().max()) if samples.numel() else 0.0
    if peak > SAMPLE_LIMIT:
        raise ValueError(f"{name} peaks at {peak:g}, an AUDIO waveform's full scale is -1..1: these look like integer "
                         "PCM values stored as floats; divide them by 32768 (16-bit) in the node that makes them")
    return samples
