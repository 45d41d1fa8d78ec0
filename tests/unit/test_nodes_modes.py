"""MOVA Conditioning beyond image-to-video, on the golden tiny models: first + last frame, a given sound
(speech / sound -> video), a given video (video -> audio); the audio and video fitting; MOVA Audio Decode
returning the given sound; the MOVA Sampler keeping what is given with every guidance option."""

import logging

import pytest
import torch
import torchaudio.functional as AF

from comfyui_mova.mova_model.sampling.latents import normalise_video_latents
from comfyui_mova.nodes.sampling.audio_decode import decode_to_audio
from comfyui_mova.nodes.conditioning.audio_input import codec_encode, fit_audio, longest_clip
from comfyui_mova.nodes.conditioning.condition import make_conditioning
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY, NOISE_MASK_KEY, MovaConditioning, SamplerSettings
from comfyui_mova.nodes.conditioning.keyframes import fold_known_frames, keyframe_video, known_latent_frames
from comfyui_mova.nodes.sampling.run import sample_joint
from comfyui_mova.nodes.conditioning.video_input import fit_video, take_video
from mova_testing import pooling_encoder, prepare_modes, text_cond


def _sound(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    samples = max(1, round(seconds * rate))
    return {"waveform": (torch.rand(1, channels, samples, generator=gen) - 0.5), "sample_rate": rate}


# --- the I2V condition's known frames -------------------------------------------------------------------------

def test_fold_known_frames_like_comfyui_wan_nodes():
    first = torch.zeros(9, dtype=torch.bool)
    first[0] = True
    mask = fold_known_frames(first)  # 9 frames -> 3 latent frames; the first frame fills latent frame 0
    assert mask.shape == (1, 4, 3, 1, 1)
    assert torch.all(mask[:, :, 0] == 1) and torch.all(mask[:, :, 1:] == 0)
    last = first.clone()
    last[-1] = True  # the last pixel frame is the last of latent frame 2's four: channel 3
    assert mask.flatten().tolist() != fold_known_frames(last).flatten().tolist()
    assert fold_known_frames(last)[0, :, 2].flatten().tolist() == [0, 0, 0, 1]
    start5 = torch.zeros(13, dtype=torch.bool)
    start5[:5] = True  # frames 0..4: latent frames 0 and 1 wholly
    assert fold_known_frames(start5)[0, :, :, 0, 0].T.tolist() == [[1] * 4, [1] * 4, [0] * 4, [0] * 4]
    assert known_latent_frames(start5).tolist() == [True, True, False, False]
    assert known_latent_frames(last).tolist() == [True, False, False]


def test_plain_image_path_equals_the_official_one(vae, size):
    """Without the new inputs, the new path builds exactly what MOVA Conditioning always built."""
    width, height, frames, fps = size
    image = torch.rand(1, 40, 48, 3, generator=torch.Generator().manual_seed(3))
    for start in (image, None):
        cond, latent = make_conditioning(text_cond(seed=1), text_cond(seed=2), pooling_encoder, start, width, height,
                                         frames, fps, vae.model.config)
        new = prepare_modes(vae, size, image=start)
        assert torch.equal(new.conditioning.condition, cond.condition)
        assert torch.equal(new.latent["samples"], latent["samples"]) and NOISE_MASK_KEY not in new.latent
        assert new.latent[LATENT_AUDIO_KEY].noise_mask is None and new.video is None and new.report == []


def test_first_and_last_frame(vae, size):
    width, height, frames, _ = size
    gen = torch.Generator().manual_seed(4)
    # 8-bit pictures, as Load Image gives: fitting them (8-bit, as the official pipeline) keeps them exactly
    start, end = (torch.randint(0, 256, (n, height, width, 3), generator=gen).float() / 255 for n in (1, 2))
    pixels, known = keyframe_video(frames, width, height, start, end[-1:])
    assert torch.equal(pixels[0], start[0]) and torch.equal(pixels[-1], end[-1])  # the last image of the batch
    assert torch.all(pixels[1:-1] == 0.5) and known.tolist() == [True] + [False] * (frames - 2) + [True]
    prepared = prepare_modes(vae, size, image=start, end_image=end)
    cond = prepared.conditioning.condition
    assert torch.equal(cond[:, 4:], normalise_video_latents(pooling_encoder(pixels)))
    assert torch.equal(cond[:, :4], fold_known_frames(known).expand(1, 4, *cond.shape[2:]))
    assert NOISE_MASK_KEY not in prepared.latent  # as ComfyUI's node: the condition only, nothing kept
    white_start = prepare_modes(vae, size, end_image=end).conditioning.condition  # no start image: white first frame
    pixels, _ = keyframe_video(frames, width, height, None, end[-1:])
    assert torch.all(pixels[0] == 1.0) and torch.equal(white_start[:, 4:],
                                                       normalise_video_latents(pooling_encoder(pixels)))


# --- a given sound ---------------------------------------------------------------------------------------------

def test_audio_fitting_mono_resample_and_cut(vae, size):
    width, height, frames, fps = size
    rate = vae.model.config.sample_rate
    wanted = int(rate * frames / fps)
    source_rate = rate * 3 + 7  # another rate, not a multiple
    sound = _sound(2 * frames / fps, source_rate, channels=2)
    fitted = fit_audio(sound, "audio", frames, fps, rate)
    mono = sound["waveform"][0].mean(dim=0, keepdim=True)
    expected = AF.resample(mono, source_rate, rate)[None]
    assert fitted.waveform.shape == (1, 1, wanted)
    assert torch.equal(fitted.waveform, expected[..., :wanted]) and not fitted.padded
    assert f"cut at {wanted / rate:.3f} s (sample {wanted} of {expected.shape[-1]})" in fitted.report
    assert f"{source_rate} Hz, 2 channels -> mono {rate} Hz" in fitted.report


def test_audio_fitting_pads_with_silence_and_warns(vae, size, caplog):
    _, _, frames, fps = size
    rate = vae.model.config.sample_rate
    wanted = int(rate * frames / fps)
    sound = _sound(0.5 * frames / fps, rate, channels=1)  # already mono at the codec's rate: used as is
    have = sound["waveform"].shape[-1]
    with caplog.at_level(logging.WARNING):
        fitted = fit_audio(sound, "audio", frames, fps, rate)
    assert fitted.padded and fitted.waveform.shape == (1, 1, wanted)
    assert torch.equal(fitted.waveform[..., :have], sound["waveform"])
    assert torch.all(fitted.waveform[..., have:] == 0)
    assert "padded with" in fitted.report and f"set length to {longest_clip(have, rate, fps)} frames" in fitted.report
    assert "padded with" in caplog.text
    exact = fit_audio(_sound(wanted / rate, rate, 1), "audio", frames, fps, rate)  # exactly the samples needed
    assert "used whole" in exact.report and exact.waveform.shape[-1] == wanted


def test_longest_clip_fits_the_sound():
    for samples, rate, fps in ((386000, 48000, 24.0), (385999, 48000, 24.0), (100, 300, 24.0), (5, 300, 24.0)):
        frames = longest_clip(samples, rate, fps)
        assert frames == 0 or ((frames - 1) % 4 == 0 and int(rate * frames / fps) <= samples)
        assert int(rate * (frames + 4) / fps) > samples
    assert longest_clip(386000, 48000, 24.0) == 193


@pytest.mark.parametrize("audio, message", [
    ({"waveform": torch.zeros(2, 100)}, "expected an AUDIO"),
    ({"waveform": torch.zeros(2, 100), "sample_rate": 300}, "waveform \\[batch, channels, samples\\], got \\(2, 100\\)"),
    ({"waveform": torch.zeros(2, 1, 100), "sample_rate": 300}, "holds 2 sounds: MOVA takes one"),
    ({"waveform": torch.zeros(1, 0, 100), "sample_rate": 300}, "0 channels"),
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 300}, "is empty"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 0}, "sample rate 0 is not a positive whole number"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 44100.5}, "sample rate 44100.5"),
    ({"waveform": torch.full((1, 1, 100), float("nan")), "sample_rate": 300}, "NaN"),
])
def test_bad_audio_is_named(vae, size, audio, message):
    with pytest.raises(ValueError, match="audio.*" + message if "expected an AUDIO" not in message else message):
        prepare_modes(vae, size, audio=audio)


def test_sound_to_video_keeps_the_encoded_sound(vae, size):
    _, _, frames, fps = size
    rate = vae.model.config.sample_rate
    sound = _sound(frames / fps * 1.5, rate * 2, channels=2)
    prepared = prepare_modes(vae, size, audio=sound, image=torch.rand(1, 32, 32, 3))
    audio = prepared.latent[LATENT_AUDIO_KEY]
    fitted = fit_audio(sound, "audio", frames, fps, rate).waveform
    assert torch.equal(audio.given_waveform, fitted)
    assert torch.equal(audio.samples, codec_encode(vae, fitted))
    assert audio.noise_mask.shape == (1, 1, audio.samples.shape[-1]) and torch.all(audio.noise_mask == 0)
    assert NOISE_MASK_KEY not in prepared.latent and "cut at" in prepared.report[0]


def test_decode_returns_the_given_sound(vae, size):
    prepared = prepare_modes(vae, size, audio=_sound(1.0, 1000, channels=3))
    latent = prepared.latent[LATENT_AUDIO_KEY]
    out = decode_to_audio(vae, latent)
    assert torch.equal(out["waveform"], latent.given_waveform)  # the user's sound, not a codec round trip
    # partly kept: given samples over the kept latent steps, decoded ones elsewhere
    hop = latent.hop_length
    mask = torch.ones_like(latent.noise_mask)
    mask[..., :3] = 0
    partial = decode_to_audio(vae, type(latent)(**{**latent.__dict__, "noise_mask": mask}))
    decoded = decode_to_audio(vae, type(latent)(**{**latent.__dict__, "given_waveform": None}))
    assert torch.equal(partial["waveform"][..., :3 * hop], latent.given_waveform[..., :3 * hop])
    assert torch.equal(partial["waveform"][..., 3 * hop:], decoded["waveform"][..., 3 * hop:])


# --- a given video ---------------------------------------------------------------------------------------------

def test_take_video_trims_with_a_report_or_names_the_length():
    video = torch.rand(30, 20, 24, 3)
    used, report = take_video(video, 25, 24.0, 24.0)
    assert torch.equal(used, video[:25]) and "using the first 25" in report and "the last 5 are cut" in report
    assert take_video(video[:25], 25, 24.0, None)[1].endswith("used whole")
    with pytest.raises(ValueError, match="the video has 30 frames but length is 33: set length to 29"):
        take_video(video, 33, 24.0, None)
    with pytest.raises(ValueError, match="video_fps 30 .* differs from fps 24: set fps to 30"):
        take_video(video, 25, 24.0, 30.0)
    with pytest.raises(ValueError, match="expected IMAGE frames"):
        take_video(torch.rand(20, 24, 3), 25, 24.0, None)


def test_video_to_audio_keeps_the_whole_video(vae, size):
    width, height, frames, fps = size
    video = torch.rand(frames + 3, 48, 40, 3, generator=torch.Generator().manual_seed(5))
    prepared = prepare_modes(vae, size, video=video, video_fps=fps)
    fitted = fit_video(video[:frames], width, height)
    assert torch.equal(prepared.video, video[:frames])  # for Create Video, at the video's own size
    assert torch.equal(prepared.latent["samples"], pooling_encoder(fitted))
    mask = prepared.latent[NOISE_MASK_KEY]
    assert mask.shape == (1, 1, prepared.latent["samples"].shape[2], 1, 1) and torch.all(mask == 0)
    pixels, _ = keyframe_video(frames, width, height, fitted[:1])  # the I2V condition: the video's first frame
    assert torch.equal(prepared.conditioning.condition[:, 4:], normalise_video_latents(pooling_encoder(pixels)))
    assert "the last 3 are cut" in prepared.report[0]


@pytest.mark.parametrize("extra, message", [
    ({"image": torch.rand(1, 32, 32, 3)}, "start_image and video are both connected"),
    ({"end_image": torch.rand(1, 32, 32, 3)}, "end_image and video are both connected"),
    ({"audio": _sound(1.0, 300)}, "audio and video are both connected: there would be nothing left"),
])
def test_video_excludes_other_givens(vae, size, extra, message):
    with pytest.raises(ValueError, match=message):
        prepare_modes(vae, size, video=torch.rand(size[2], 32, 32, 3), **extra)


# --- the sampler keeps what is given, with every guidance option -------------------------------------------------

SETTINGS = {
    "official": None,
    "dual_cfg_caching": SamplerSettings(bridge_cfg=3.5, cache_threshold=10.0),
    "clean": SamplerSettings(clean_given=True, audio_cfg=2.0, audio_shift=3.0, cfg_cutoff=0.5),
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_sampler_keeps_the_given_sound(parts, vae, size, settings):
    prepared = prepare_modes(vae, size, audio=_sound(0.3, 500), image=torch.rand(1, 32, 32, 3))
    given = prepared.latent[LATENT_AUDIO_KEY]
    video, audio = sample_joint(*parts, prepared.conditioning, prepared.latent, 3, 3, 5.0, 5.0, 0.9,
                                settings=settings)
    assert torch.equal(audio.samples, given.samples)
    assert torch.equal(decode_to_audio(vae, audio)["waveform"], given.given_waveform)
    assert video["samples"].shape == prepared.latent["samples"].shape


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_sampler_keeps_the_given_video(parts, vae, size, settings):
    prepared = prepare_modes(vae, size, video=torch.rand(size[2], 32, 32, 3))
    loaded = []
    video, audio = sample_joint(*parts, prepared.conditioning, prepared.latent, 3, 3, 5.0, 5.0, 0.9,
                                settings=settings, before_expert=loaded.append)
    assert torch.equal(video["samples"], prepared.latent["samples"])  # the raw latents, bit for bit
    assert not torch.equal(audio.samples, prepared.latent[LATENT_AUDIO_KEY].samples)  # a soundtrack was written
    assert loaded == ([1] if settings is not None and settings.clean_given else [0, 1])


def test_first_last_frame_conditioning_samples(parts, vae, size):
    width, height, _, _ = size
    prepared = prepare_modes(vae, size, image=torch.rand(1, height, width, 3), end_image=torch.rand(1, height, width, 3))
    assert isinstance(prepared.conditioning, MovaConditioning)
    video, _ = sample_joint(*parts, prepared.conditioning, prepared.latent, 3, 2, 5.0, 5.0, 0.9,
                            settings=SETTINGS["dual_cfg_caching"])
    assert torch.isfinite(video["samples"]).all()
