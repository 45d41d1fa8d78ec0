"""Real training clips for the tests: H.264 video with an AAC sound track, written with PyAV."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np


PCM_FORMATS = {"pcm_s16le": "s16", "pcm_s32le": "s32", "pcm_u8": "u8", "pcm_f32le": "flt"}


def pcm_samples(wave: np.ndarray, fmt: str) -> np.ndarray:
    """Float samples in -1..1 as PCM of PyAV's packed format ``fmt`` (s16, s32, u8: unsigned 8-bit centres at 128;
    flt: float32 as given)."""
    if fmt == "flt":
        return wave.astype(np.float32)
    if fmt == "u8":
        return np.clip(np.round(wave * 128 + 128), 0, 255).astype(np.uint8)
    bits = {"s16": 16, "s32": 32}[fmt]
    top = 2 ** (bits - 1)
    return np.clip(np.round(wave * top), -top, top - 1).astype(np.int16 if bits == 16 else np.int32)


def write_clip(path: Path, frames: int, fps: float, width: int, height: int, sample_rate: int = 16000,
               tone: float = 440.0, sound: str = "tone", caption: str | None = "a test clip", seed: int = 0,
               audio_seconds: float | None = None, audio_codec: str = "aac") -> Path:
    """A clip of moving colour bars and a sine tone. ``sound``: "tone", "silent" (zeros) or "none" (no track).
    ``caption`` None writes no .txt; ``audio_seconds`` shortens the sound track; ``audio_codec``: "aac" or an
    uncompressed PCM codec (pcm_s16le, pcm_s32le, pcm_u8, pcm_f32le; the container must take it: mov, mkv, avi)."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(3,), dtype=np.int64)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "18", "preset": "ultrafast"}
        audio = None
        if sound != "none":
            audio = container.add_stream(audio_codec, rate=sample_rate)
            audio.layout = "stereo"
        for i in range(frames):
            x = np.arange(width)[None, :, None]
            y = np.arange(height)[:, None, None]
            image = (base[None, None, :] + 7 * i + 3 * x + 2 * y) % 256
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            seconds = frames / fps if audio_seconds is None else audio_seconds
            total = int(round(seconds * sample_rate))
            t = np.arange(total) / sample_rate
            wave = 0.5 * np.sin(2 * math.pi * tone * t) if sound == "tone" else np.zeros(total)
            stereo = np.stack([wave, wave]).astype(np.float32)
            chunk = 1024
            for start in range(0, total, chunk):
                piece = np.ascontiguousarray(stereo[:, start:start + chunk])
                if audio_codec in PCM_FORMATS:  # interleaved: [1, samples * channels]
                    piece = pcm_samples(piece.T.reshape(1, -1), PCM_FORMATS[audio_codec])
                fmt = PCM_FORMATS.get(audio_codec, "fltp")
                frame = av.AudioFrame.from_ndarray(piece, format=fmt, layout="stereo")
                frame.sample_rate = sample_rate
                frame.pts = start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def write_nan_sound_clip(path: Path, golden_cases: dict, sample_rate: int = 16000) -> Path:
    """A Matroska clip (H.264 pictures, 32-bit float PCM sound) whose sound holds NaN samples: what a broken
    recorder or an editor's export can produce, and what the sound decoder hands on as it is."""
    import av
    w, h, frames, fps = golden_cases["width"] + 16, golden_cases["height"] + 8, golden_cases["num_frames"] + 3, Fraction(golden_cases["fps"]).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        audio = container.add_stream("pcm_f32le", rate=sample_rate)
        audio.layout = "mono"
        for i in range(frames):
            image = np.full((h, w, 3), (40 * i) % 256, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        total = math.ceil(frames / fps * sample_rate)
        wave = (0.5 * np.sin(2 * np.pi * 330 * np.arange(total) / sample_rate)).astype(np.float32)
        wave[total // 3: total // 3 + 50] = np.nan
        for start in range(0, total, 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024].copy(), format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    path.with_suffix(".txt").write_text("a grey ramp; the audio shows a 330 Hz tone with a dropout", encoding="utf-8")
    return path
