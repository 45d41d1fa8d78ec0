"""MOVA Extend and MOVA Join on the golden tiny models: the next clip keeps the end of the clip so far (frames and
sound), the joined clip has exactly the frames and samples it should, no repeated frames, and a continuous sound."""

import math

import pytest
import torch

from comfyui_mova.nodes.sampling.audio_decode import decode_to_audio
from comfyui_mova.nodes.conditioning.audio_input import codec_encode
from comfyui_mova.nodes.conditioning.extend import crossfade_join, join_clips, overlap_samples
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, NOISE_MASK_KEY, SamplerSettings
from comfyui_mova.nodes.conditioning.keyframes import keyframe_video
from comfyui_mova.nodes.sampling.run import sample_joint
from mova_testing import extend_clip, pooling_encoder


@pytest.mark.parametrize("before, length, overlap, fps, rate", [
    (193, 193, 17, 24.0, 48000), (361, 193, 25, 24.0, 48000), (193, 209, 17, 24.0, 48000),
    (121, 97, 9, 25.0, 48000), (81, 81, 13, 30.0, 16000), (9, 9, 5, 24.0, 300), (97, 49, 1, 23.976, 44100),
])
def test_overlap_point_makes_exact_lengths(before, length, overlap, fps, rate):
    k = overlap_samples(before, length, overlap, fps, rate)
    prev, new = int(rate * before / fps), int(rate * length / fps)
    total = int(rate * (before + length - overlap) / fps)
    assert prev + new - k == total  # the joined sound: int(rate * frames / fps) samples
    assert abs(k - rate * overlap / fps) <= 2  # within two samples of the overlap's duration


def test_extension_keeps_the_overlap(vae, clip):  # noqa: F811
    frames, sound, fps = clip
    cond, latent, ext, report = extend_clip(vae, clip, overlap=5)
    length, overlap = frames.shape[0], 5
    # video: the last 5 frames lead the condition; their 2 latent frames are kept (raw, as encoded)
    pixels, known = keyframe_video(length, frames.shape[2], frames.shape[1], frames[-overlap:])
    encoded = pooling_encoder(pixels)
    assert torch.equal(cond.condition[:, :4, :2], torch.ones(1, 4, 2, *cond.condition.shape[3:]))
    assert torch.all(cond.condition[:, :4, 2:] == 0)
    mask = latent[NOISE_MASK_KEY]
    assert mask.flatten().tolist() == [0, 0] + [1] * (mask.shape[2] - 2)
    assert torch.equal(latent["samples"][:, :, :2], encoded[:, :, :2]) and torch.all(latent["samples"][:, :, 2:] == 0)
    # sound: the latent steps wholly inside the overlap's sound, encoded with the sound before them as context
    audio = latent[LATENT_AUDIO_KEY]
    hop, rate = audio.hop_length, audio.sample_rate
    keep = ext.overlap_samples // hop
    assert audio.noise_mask.flatten().tolist() == [0] * keep + [1] * (audio.samples.shape[-1] - keep)
    wave = sound["waveform"]
    start = wave.shape[-1] - ext.overlap_samples
    context = min(start // hop, keep)
    reference = codec_encode(vae, wave[..., start - context * hop:])[..., context:context + keep]
    assert torch.equal(audio.samples[..., :keep], reference) and torch.all(audio.samples[..., keep:] == 0)
    assert audio.given_waveform is None
    assert f"joined: {2 * length - overlap} frames" in report and (ext.overlap, ext.length) == (overlap, length)


def test_join_drops_the_overlap_frames_and_crossfades(vae, clip):  # noqa: F811
    frames, sound, fps = clip
    _, _, ext, _ = extend_clip(vae, clip, overlap=5, crossfade=0.05)
    new_frames = torch.rand(ext.length, *frames.shape[1:])
    rate, before = ext.sample_rate, sound["waveform"].shape[-1]
    new_sound = {"waveform": torch.rand(1, 1, int(rate * ext.length / fps)) - 0.5, "sample_rate": rate}
    joined, joined_sound = join_clips(ext, new_frames, new_sound)
    assert joined.shape[0] == frames.shape[0] + ext.length - 5
    assert torch.equal(joined[:frames.shape[0]], frames) and torch.equal(joined[frames.shape[0]:], new_frames[5:])
    out = joined_sound["waveform"]
    assert out.shape[-1] == int(rate * joined.shape[0] / fps) and joined_sound["sample_rate"] == rate
    fade, k = ext.crossfade, ext.overlap_samples
    assert fade == round(0.05 * rate)
    assert torch.equal(out[..., :before - fade], sound["waveform"][..., :before - fade])
    assert torch.equal(out[..., before:], new_sound["waveform"][..., k:])
    ramp = (torch.arange(fade) + 0.5) / fade
    assert torch.equal(out[..., before - fade:before],
                       sound["waveform"][..., before - fade:] * (1 - ramp) + new_sound["waveform"][..., k - fade:k] * ramp)


def test_crossfade_is_continuous():
    """Two smooth sounds that disagree by an offset at the seam: the crossfade takes the jump away."""
    t = torch.arange(4000) / 4000
    before = torch.sin(2 * math.pi * 5 * t).view(1, 1, -1)
    after = (torch.sin(2 * math.pi * 5 * (t + 0.75)) + 0.3).view(1, 1, -1)  # at sample 1000: before's end + 0.3
    hard, soft = crossfade_join(before, after, 1000, 0), crossfade_join(before, after, 1000, 400)
    step = lambda x: x.diff(dim=-1).abs().max().item()  # noqa: E731
    smooth = max(step(before), step(after))
    assert step(hard) > 0.25 and step(soft) < smooth + 0.3 / 400 * 2
    assert hard.shape == soft.shape == (1, 1, 4000 + 4000 - 1000)


def test_extension_samples_and_chains(parts, vae, clip):  # noqa: F811
    """Extend -> sample (dual CFG + caching) -> decode -> Join, twice: exact lengths, the kept parts as given."""
    frames, sound, fps = clip
    settings = SamplerSettings(bridge_cfg=3.5, cache_threshold=10.0)
    so_far, so_far_sound = frames, sound
    for i in range(2):
        cond, latent, ext, _ = extend_clip(vae, (so_far, so_far_sound, fps), length=frames.shape[0], overlap=5)
        video, audio = sample_joint(*parts, cond, latent, i, 3, 5.0, 5.0, 0.9, settings=settings)
        kept_v = latent[NOISE_MASK_KEY].flatten() == 0
        assert torch.equal(video["samples"][:, :, kept_v], latent["samples"][:, :, kept_v])
        kept_a = latent[LATENT_AUDIO_KEY].noise_mask.flatten() == 0
        assert torch.equal(audio.samples[..., kept_a], latent[LATENT_AUDIO_KEY].samples[..., kept_a])
        decoded_frames = torch.rand(ext.length, *frames.shape[1:])  # VAE Decode stands apart (ComfyUI's VAE)
        so_far, so_far_sound = join_clips(ext, decoded_frames, decode_to_audio(vae, audio))
    rate = sound["sample_rate"]
    total = frames.shape[0] + 2 * (frames.shape[0] - 5)
    assert so_far.shape[0] == total and so_far_sound["waveform"].shape[-1] == int(rate * total / fps)


# each case from the golden clip: n frames of w x h, its sound of `samples` samples at `rate` Hz
BAD_EXTENSIONS = {
    "overlap not 4k+1": lambda n, w, h, rate, samples: (dict(overlap=4), "overlap 4 is not 4k\\+1: use 5"),
    "overlap as long as the clip": lambda n, w, h, rate, samples: (
        dict(overlap=n), f"overlap {n} is not shorter than length {n}.*at most {n - 4}"),
    "overlap longer than the clip so far": lambda n, w, h, rate, samples: (
        dict(overlap=n + 4, length=n + 8),
        f"overlap {n + 4} is longer than the clip so far \\({n} frames\\): use at most {n}"),
    "length not 4k+1": lambda n, w, h, rate, samples: (dict(length=n + 1), f"length {n + 1} is not 4k\\+1: use {n}"),
    "crossfade longer than the overlap": lambda n, w, h, rate, samples: (
        dict(crossfade=5.0), "crossfade 5 s is longer than the overlap's"),
    "sound of another frame rate": lambda n, w, h, rate, samples: (
        dict(fps=30.0), f"sound has {samples} samples .* {n} frames at 30 fps need {int(rate * n / 30)}.*as if the "
                        f"frames ran at {n * rate / samples:.3f} fps: set fps"),
    "images not multiples of 16": lambda n, w, h, rate, samples: (
        dict(images=torch.rand(n, h - 8, w, 3)), f"images are {w}x{h - 8}, not multiples of 16"),
}


@pytest.mark.parametrize("case", list(BAD_EXTENSIONS))
def test_bad_extension_inputs_name_the_fix(vae, clip, case):  # noqa: F811
    frames, sound, _ = clip
    n, h, w = frames.shape[:3]
    change, message = BAD_EXTENSIONS[case](n, w, h, sound["sample_rate"], sound["waveform"].shape[-1])
    with pytest.raises(ValueError, match=message):
        extend_clip(vae, clip, **change)


def test_sound_of_another_rate_or_channels(vae, clip):  # noqa: F811
    frames, sound, fps = clip
    rate = sound["sample_rate"]
    resampled = {"waveform": sound["waveform"], "sample_rate": rate * 2}
    with pytest.raises(ValueError, match=f"audio is at {rate * 2} Hz but the audio VAE at {rate} Hz.*MOVA Audio Decode"):
        extend_clip(vae, (frames, resampled, fps))
    stereo = {"waveform": sound["waveform"].repeat(1, 2, 1), "sample_rate": rate}
    with pytest.raises(ValueError, match="audio has 2 channels, MOVA's sound is mono.*MOVA Audio Decode"):
        extend_clip(vae, (frames, stereo, fps))


def test_join_refuses_other_clips(vae, clip):  # noqa: F811
    frames, sound, fps = clip
    _, _, ext, _ = extend_clip(vae, clip)
    rate = sound["sample_rate"]
    good = {"waveform": torch.zeros(1, 1, int(rate * ext.length / fps)), "sample_rate": rate}
    height, width = frames.shape[1:3]
    with pytest.raises(ValueError, match=f"images are 5 frames of {width}x{height}, the clip MOVA Extend set up has "
                                         f"{ext.length} of {width}x{height}"):
        join_clips(ext, frames[:5], good)
    with pytest.raises(ValueError, match="new clip's sound has 100 samples"):
        join_clips(ext, frames, {"waveform": torch.zeros(1, 1, 100), "sample_rate": rate})
    with pytest.raises(ValueError, match="expected the extension output of MOVA Extend"):
        join_clips(None, frames, good)
