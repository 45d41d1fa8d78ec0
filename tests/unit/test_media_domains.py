"""Pictures, sounds, captions and clip folders outside the usual domain, with real media (PyAV, PIL) and real files:
integer PCM and 8/16-bit, grey or RGBA frames are scaled by their type where AUDIO / IMAGE / video enter the pack
(an 8-bit video no longer comes out white); captions are read by byte-order mark, else UTF-8, else Windows-1252
with a note, or refused naming the file and the fix; dangling clip links and other skipped files are reported."""

import codecs
import math
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from clip_files import write_clip
from comfyui_mova.nodes.conditioning.audio_input import MAX_RESAMPLED, audio_waveform, fit_audio
from comfyui_mova.nodes.training.captions import decode_caption
from comfyui_mova.nodes.training.clips import ClipError, find_clips, read_clip
from comfyui_mova.nodes.conditioning.condition import fit_frame, make_conditioning
from comfyui_mova.nodes.training.dataset import build_dataset
from comfyui_mova.nodes.conditioning.extend import prepare_extension
from comfyui_mova.nodes.handles import LATENT_AUDIO_KEY
from comfyui_mova.nodes.conditioning.video_input import take_video
from mova_testing import extend_clip, pooling_encoder, prepare_modes, text_cond
from training_fixtures import toy_encoders, toy_request

PCM = [("pcm_s16le", ".mov", np.int16), ("pcm_s32le", ".mkv", np.int32), ("pcm_u8", ".avi", np.uint8)]


def _decoded_sound(path: Path, fmt: str | None) -> tuple[torch.Tensor, int]:
    """The clip's sound track decoded with PyAV: as stored (integer PCM, [1,C,T]) when ``fmt`` is None, else
    converted by FFmpeg to planar ``fmt`` (e.g. fltp)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        channels, rate = stream.codec_context.channels, stream.codec_context.sample_rate
        resampler = av.AudioResampler(format=fmt, layout=stream.layout.name, rate=rate) if fmt else None
        pieces = []
        for frame in container.decode(stream):
            for out in (resampler.resample(frame) if resampler else [frame]):
                data = out.to_ndarray()
                pieces.append(data if fmt else data.reshape(-1, channels).T)
    return torch.from_numpy(np.concatenate(pieces, axis=1))[None], rate


def _decoded_frames(path: Path) -> torch.Tensor:
    """A video file's frames as PyAV decodes them: uint8 [N,H,W,3]."""
    with av.open(str(path)) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)])


# --- integer sound --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec, suffix, dtype", PCM, ids=[p[0] for p in PCM])
def test_integer_pcm_sound_is_scaled_by_its_type(tmp_path, vae, size, codec, suffix, dtype):  # noqa: F811
    """A real integer PCM track, handed over as stored (numpy sample rate too): MOVA Conditioning keeps the same
    sound as from FFmpeg's own float conversion, at the tone's level (0.5), not 16384 times louder."""
    _, _, frames, fps = size
    path = write_clip(tmp_path / f"speech{suffix}", frames + 8, fps, 48, 40, tone=40.0, audio_codec=codec)
    stored, rate = _decoded_sound(path, None)
    floats, _ = _decoded_sound(path, "fltp")
    assert stored.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
    wave, got_rate = audio_waveform({"waveform": stored, "sample_rate": np.int64(rate)}, "audio")
    assert type(got_rate) is int and got_rate == rate
    assert torch.allclose(wave, floats[0], atol=1e-7) and 0.45 < float(wave.abs().max()) < 0.55
    given = prepare_modes(vae, size, audio={"waveform": stored, "sample_rate": np.int64(rate)})
    reference = prepare_modes(vae, size, audio={"waveform": floats, "sample_rate": rate})
    a, b = given.latent[LATENT_AUDIO_KEY], reference.latent[LATENT_AUDIO_KEY]
    assert torch.allclose(a.given_waveform, b.given_waveform, atol=1e-6)
    assert torch.allclose(a.samples, b.samples, atol=1e-5)


@pytest.mark.parametrize("codec, suffix, dtype", PCM, ids=[p[0] for p in PCM])
def test_training_clips_with_integer_pcm_read_as_floats(tmp_path, golden_cases, codec, suffix, dtype):
    """MOVA Dataset reads a clip's integer PCM track as the same sound stored as float PCM (8-bit: within its step)."""
    w, h, frames, fps = golden_cases["width"], golden_cases["height"], golden_cases["num_frames"], golden_cases["fps"]
    rate = golden_cases["audio_vae"]["sample_rate"]
    waves = []
    for name, audio_codec in (("int", codec), ("float", "pcm_f32le")):
        write_clip(tmp_path / name / f"clip{suffix}", frames + 2, fps, w, h, tone=20.0, audio_codec=audio_codec)
        (clip_,), _ = find_clips(tmp_path / name)
        waves.append(read_clip(clip_, w, h, frames, fps, rate, fps)[1])
    assert waves[0].dtype == torch.float32 and float(waves[1].abs().max()) > 0.3
    assert torch.allclose(waves[0], waves[1], atol=1.5 / 128 if dtype == np.uint8 else 1e-4)


@pytest.mark.parametrize("audio, message", [
    ({"waveform": torch.zeros(1, 1, 100, dtype=torch.int64), "sample_rate": 300}, "holds int64 samples: an AUDIO "
     "waveform is float -1..1"),
    ({"waveform": torch.zeros(1, 1, 100, dtype=torch.bool), "sample_rate": 300}, "holds bool samples"),
    ({"waveform": torch.full((1, 1, 100), 16384.0), "sample_rate": 300}, "peaks at 16384.*divide them by 32768"),
    ({"waveform": torch.zeros(1, 4800, 2), "sample_rate": 300}, "has 4800 channels and 2 samples.*transposed"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 10 ** 7}, "sample rate 10000000 Hz is above 768000 Hz"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": torch.tensor(300.5)}, "sample rate 300.5 is not a positive "
     "whole number"),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": float("nan")}, "sample rate nan is not a positive whole"),
])
def test_sounds_outside_the_domain_are_refused(vae, size, audio, message):  # noqa: F811
    with pytest.raises(ValueError, match="^audio.*" + message):
        prepare_modes(vae, size, audio=audio)


def test_a_sound_too_long_to_resample_is_refused_before_resampling(vae, size):  # noqa: F811
    """At 1 Hz, one sample more than the resampler's limit allows at the audio VAE's rate (the golden set's):
    refused with the counts and both rates, before anything is resampled."""
    rate = vae.model.config.sample_rate
    samples = MAX_RESAMPLED // rate + 1
    audio = {"waveform": torch.zeros(1, 1, samples), "sample_rate": 1}
    expected = (f"{samples} samples at 1 Hz make {samples * rate:.3g} samples at the audio VAE's {rate} Hz, too many "
                "to resample: check its sample rate, or cut the sound")
    with pytest.raises(ValueError, match="^audio: " + re.escape(expected)):
        prepare_modes(vae, size, audio=audio)


@pytest.mark.parametrize("dtype, values, expected", [
    (torch.int16, [-32768, 0, 16384, 32767], [-1.0, 0.0, 0.5, 32767 / 32768]),
    (torch.int32, [-2 ** 31, 0, 2 ** 30], [-1.0, 0.0, 0.5]),
    (torch.int8, [-128, 0, 64], [-1.0, 0.0, 0.5]),
    (torch.uint8, [0, 128, 192, 255], [-1.0, 0.0, 0.5, 127 / 128]),
    (torch.float64, [-1.0, 0.25], [-1.0, 0.25]),
])
def test_sample_types_scale_to_full_scale(dtype, values, expected):
    wave, rate = audio_waveform({"waveform": torch.tensor(values, dtype=dtype).view(1, 1, -1), "sample_rate": 300},
                                "audio")
    assert wave.dtype == torch.float32 and wave.flatten().tolist() == pytest.approx(expected) and rate == 300


def test_numpy_and_tensor_sample_rates_are_accepted(vae, size):  # noqa: F811
    _, _, frames, fps = size
    rate = vae.model.config.sample_rate
    wave = torch.rand(1, 1, rate, generator=torch.Generator().manual_seed(3)) - 0.5
    plain = fit_audio({"waveform": wave, "sample_rate": rate}, "audio", frames, fps, rate).waveform
    for given in (np.int32(rate), np.float64(rate), torch.tensor(rate)):
        assert torch.equal(fit_audio({"waveform": wave, "sample_rate": given}, "audio", frames, fps, rate).waveform,
                           plain)


# --- 8-bit, 16-bit, grey and RGBA pictures ------------------------------------------------------------------------

def test_eight_bit_video_is_no_longer_white(tmp_path, vae, size):  # noqa: F811
    """A real H.264 video decoded by PyAV to 8-bit frames: video -> audio gives exactly what its 0..1 frames give."""
    width, height, frames, fps = size
    decoded = _decoded_frames(write_clip(tmp_path / "v.mp4", frames + 2, fps, 48, 40, caption=None))
    assert decoded.dtype == torch.uint8
    eight_bit = prepare_modes(vae, size, video=decoded, video_fps=np.float32(fps))
    floats = prepare_modes(vae, size, video=decoded.float() / 255, video_fps=fps)
    assert torch.equal(eight_bit.video, floats.video) and eight_bit.video.dtype == torch.float32
    assert torch.equal(eight_bit.latent["samples"], floats.latent["samples"])
    assert torch.equal(eight_bit.conditioning.condition, floats.conditioning.condition)
    assert float(eight_bit.video.mean()) < 0.9  # not white
    white = prepare_modes(vae, size, video=torch.ones(frames, 40, 48, 3))
    assert not torch.equal(eight_bit.latent["samples"], white.latent["samples"])


def test_eight_and_sixteen_bit_images(tmp_path, vae, size):  # noqa: F811
    """Start and end images read by PIL as 8-bit (and the same as 16-bit) equal their 0..1 float form."""
    width, height, frames, fps = size
    Image.radial_gradient("L").convert("RGB").resize((50, 36)).save(tmp_path / "start.png")
    with Image.open(tmp_path / "start.png") as picture:
        pixels = torch.from_numpy(np.array(picture))[None]
    assert pixels.dtype == torch.uint8
    floats = pixels.float() / 255
    sixteen = (pixels.to(torch.int32) * 257).to(torch.uint16)  # 8-bit v -> 16-bit 257 v (the same level)
    for given in (pixels, sixteen):
        assert torch.equal(fit_frame(given, width, height), fit_frame(floats, width, height))
    cond, _ = make_conditioning(text_cond(seed=1), text_cond(seed=2), pooling_encoder, pixels, width, height, frames, fps,
                                vae.model.config)
    reference, _ = make_conditioning(text_cond(seed=1), text_cond(seed=2), pooling_encoder, floats, width, height, frames,
                                     fps, vae.model.config)
    assert torch.equal(cond.condition, reference.condition)
    both = prepare_modes(vae, size, image=pixels, end_image=pixels.flip(1))
    both_floats = prepare_modes(vae, size, image=floats, end_image=floats.flip(1))
    assert torch.equal(both.conditioning.condition, both_floats.conditioning.condition)


def test_grey_and_alpha_channels(size):  # noqa: F811
    width, height, _, _ = size
    grey = torch.rand(1, 40, 50, 1, generator=torch.Generator().manual_seed(4))
    rgb = grey.expand(1, 40, 50, 3)
    alpha = torch.rand(1, 40, 50, 1)
    for given in (grey, torch.cat([grey, alpha], -1), torch.cat([rgb, alpha], -1)):
        assert torch.equal(fit_frame(given, width, height), fit_frame(rgb, width, height))
    used, _ = take_video(grey.expand(9, 40, 50, 1), 9, 24.0, None)
    assert used.shape == (9, 40, 50, 3) and torch.equal(used[0], rgb[0])


def test_eight_bit_frames_extend_a_clip(vae, clip):  # noqa: F811
    frames, sound, fps = clip
    eight_bit = (frames * 255).round().to(torch.uint8)
    cond, latent, ext, _ = extend_clip(vae, (eight_bit, sound, fps))
    ref_cond, ref_latent, ref_ext, _ = extend_clip(vae, (eight_bit.float() / 255, sound, fps))
    assert torch.equal(cond.condition, ref_cond.condition) and torch.equal(ext.frames, ref_ext.frames)
    assert torch.equal(latent["samples"], ref_latent["samples"])


@pytest.mark.parametrize("image, message", [
    (torch.rand(1, 3, 40, 48), r"start_image has 48 channels in its last dimension .*channels first \[B,C,H,W\]"),
    (torch.rand(1, 40, 48, 3) * 255, r"start_image holds float pixels from .* to 25\d.*divide them by 255"),
    (torch.rand(1, 40, 48, 3) * 4, r"start_image holds float pixels from .* to 3.\d*.*over-bright \(HDR\) values: "
     r"clamp or tone-map them to 0..1"),
    (torch.rand(1, 40, 48, 3) * 2 - 1, r"start_image holds float pixels from -0.9\d*.*\(x \+ 1\) / 2"),
    (torch.full((1, 40, 48, 3), float("nan")), r"start_image holds NaN or infinite pixels"),
    (torch.zeros(1, 40, 48, 3, dtype=torch.bool), r"start_image holds bool pixels: an IMAGE is float 0..1"),
    (torch.zeros(1, 40, 48, 3, dtype=torch.int16), r"start_image holds int16 pixels"),
    (torch.zeros(0, 40, 48, 3), r"start_image holds no image \(a batch of 0"),
    (torch.zeros(1, 40, 48, 0), r"start_image must be an IMAGE \[B,H,W,3\] with at least one pixel"),
])
def test_pictures_outside_the_domain_are_refused(vae, size, image, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        prepare_modes(vae, size, image=image)


def test_empty_text_states_are_refused(vae, size):  # noqa: F811
    width, height, frames, fps = size
    with pytest.raises(ValueError, match=r"positive holds no text states \(shape \(1, 0, 4096\)\): encode the prompt"):
        make_conditioning([[torch.zeros(1, 0, 4096), {}]], text_cond(), pooling_encoder, None, width, height, frames, fps,
                          vae.model.config)


def test_end_image_and_video_errors_name_their_input(vae, size):  # noqa: F811
    with pytest.raises(ValueError, match="end_image holds float pixels"):
        prepare_modes(vae, size, end_image=torch.rand(1, 40, 48, 3) * 255)
    with pytest.raises(ValueError, match="^video holds float pixels"):
        prepare_modes(vae, size, video=torch.rand(size[2], 40, 48, 3) * 255)
    with pytest.raises(ValueError, match="^images holds int16 pixels"):
        prepare_extension(text_cond(), text_cond(), pooling_encoder, None, vae.model.config,
                          torch.zeros(9, 32, 32, 3, dtype=torch.int16), None, 9, 5, 24.0, 0.0)
    with pytest.raises(ValueError, match="video_fps nan is not a frame rate"):
        prepare_modes(vae, size, video=torch.rand(size[2], 40, 48, 3), video_fps=float("nan"))


def test_one_frame_video_and_image_batches(vae, size):  # noqa: F811
    width, height, _, fps = size
    one = prepare_modes(vae, (width, height, 1, fps), video=torch.rand(1, 40, 48, 3))
    assert one.latent["samples"].shape[2] == 1 and "1 frames" in one.report[0]
    warnings = []
    make_conditioning(text_cond(seed=1), text_cond(seed=2), pooling_encoder, torch.rand(3, 40, 48, 3), width, height, 5,
                      fps, vae.model.config, warnings=warnings)
    assert warnings == ["start_image holds 3 images: the first one is used"]
    prepared = prepare_modes(vae, size, end_image=torch.rand(2, 40, 48, 3))
    assert "end_image holds 2 images: the last one is used" in prepared.report


@pytest.mark.parametrize("fps, crossfade, message", [
    (float("nan"), 0.1, "fps must be a positive number, got nan"),
    (24.0, float("nan"), "crossfade nan s must be 0"),
    (24.0, float("inf"), "crossfade inf s must be 0"),
])
def test_extend_refuses_non_finite_numbers_before_int(vae, clip, fps, crossfade, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        extend_clip(vae, clip, fps=fps, crossfade=crossfade)


# --- captions ---------------------------------------------------------------------------------------------------

CAPTION = "Un homme au café dit « bonjour » — The audio shows a café's murmur."
JAPANESE = "カフェで男性が「こんにちは」と言う。The audio shows a cafe."
READ = [  # (bytes as a text editor saves them, the text read, a note expected)
    ("utf-8", CAPTION.encode("utf-8"), CAPTION, False),
    ("utf-8 with BOM", codecs.BOM_UTF8 + CAPTION.encode("utf-8"), CAPTION, False),
    ("utf-16 LE with BOM", CAPTION.encode("utf-16"), CAPTION, False),
    ("utf-16 BE with BOM", codecs.BOM_UTF16_BE + JAPANESE.encode("utf-16-be"), JAPANESE, False),
    ("utf-32 with BOM", JAPANESE.encode("utf-32"), JAPANESE, False),
    ("cp1252", CAPTION.encode("cp1252"), CAPTION, True),
    ("latin-1", "Un café à Zürich.".encode("latin-1"), "Un café à Zürich.", True),
]
REFUSED = [
    ("utf-16 without BOM", CAPTION.encode("utf-16-le"), "holds NUL characters: it looks like UTF-16 saved without a "
     "byte-order mark; save it as UTF-8"),
    ("shift-jis", JAPANESE.encode("shift_jis"), r"is not UTF-8 \(byte 0 is 0x83\) nor a Western 8-bit text "
     r"\(Windows-1252\): save it as UTF-8"),
    ("broken utf-16", codecs.BOM_UTF16_LE + b"\x00\xd8a\x00", "starts with a UTF-16 byte-order mark but is not valid "
     "UTF-16"),
]


@pytest.mark.parametrize("name, data, text, noted", READ, ids=[r[0] for r in READ])
def test_captions_are_read_in_the_usual_encodings(tmp_path, name, data, text, noted):
    write_clip(tmp_path / "clip.mp4", 5, 24.0, 32, 32, caption=None)
    (tmp_path / "clip.txt").write_bytes(data)
    notes = []
    (found,), problems = find_clips(tmp_path, notes)
    assert found.caption == text and problems == []
    if noted:
        first = next(i for i, b in enumerate(data) if b > 127)
        (note,) = notes
        assert note.startswith(f"clip.mp4: the caption clip.txt is not UTF-8 (byte {first} is 0x{data[first]:02x}): "
                               f"read as Windows-1252 (cp1252): \"{text[:40]}")
        assert note.endswith("; if that is wrong, save it as UTF-8 (in Notepad: Save As, Encoding UTF-8)")
    else:
        assert notes == []


@pytest.mark.parametrize("name, data, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_captions_in_other_encodings_are_refused_naming_the_file(tmp_path, name, data, message):
    write_clip(tmp_path / "clip.mp4", 5, 24.0, 32, 32, caption=None)
    (tmp_path / "clip.txt").write_bytes(data)
    clips, problems = find_clips(tmp_path)
    assert clips == [] and len(problems) == 1
    assert problems[0].startswith("clip.mp4: the caption clip.txt ")
    import re
    assert re.search(message, problems[0]), problems[0]


def test_long_caption_note_is_shortened():
    text, note = decode_caption(("é " + "word " * 40).encode("cp1252"))
    assert text.startswith("é word") and '..."' in note and len(note) < 300


# --- the clip folder: nothing skipped silently -----------------------------------------------------------------

def test_a_file_given_as_the_clip_folder_is_named(tmp_path):
    (tmp_path / "clips.mp4").write_bytes(b"")
    with pytest.raises(ClipError, match="clips.mp4 is a file, not a folder: give the folder that holds the clips"):
        find_clips(tmp_path / "clips.mp4")


def test_dangling_links_and_other_skipped_files_are_reported(tmp_path, golden_dir, golden_cases):
    """Clips that cannot be used stop the run with every problem named; files that are only not used (a caption
    without a clip, a dangling link without a caption) are listed in the node's report."""
    w, h, frames, fps = golden_cases["width"], golden_cases["height"], golden_cases["num_frames"], golden_cases["fps"]
    folder = tmp_path / "clips"
    write_clip(folder / "good.mp4", frames, fps, w, h, tone=30.0, caption="a good clip")
    (folder / "gone.mp4").symlink_to(tmp_path / "elsewhere" / "gone.mp4")
    (folder / "gone.txt").write_text("a clip that was moved")
    (folder / "lonely.mp4").symlink_to(tmp_path / "elsewhere" / "lonely.mp4")
    (folder / "old.mpg").write_bytes(b"\x00\x00\x01\xba")
    (folder / "old.txt").write_text("an MPEG-1 clip")
    (folder / "shots.mp4").mkdir()
    (folder / "shots.txt").write_text("a folder, not a clip")
    write_clip(folder / "moved_caption.mp4", frames, fps, w, h, caption=None)
    (folder / "moved_caption.txt").symlink_to(tmp_path / "elsewhere" / "moved_caption.txt")
    (folder / "readme.txt").write_text("how I made these clips")
    (folder / "cp1252.mp4").symlink_to(folder / "good.mp4")
    (folder / "cp1252.txt").write_bytes("a café".encode("cp1252"))
    encoders, cache = toy_encoders(golden_dir, golden_cases), tmp_path / "cache"
    with pytest.raises(ClipError) as caught:
        build_dataset(toy_request(folder, golden_cases), encoders, cache)
    message = str(caught.value)
    for needle in (f"gone.mp4: is a link to {tmp_path / 'elsewhere' / 'gone.mp4'}, which does not exist: restore the "
                   "clip, or remove the link and its caption gone.txt",
                   "old.mpg: .mpg is not a clip type MOVA Dataset reads (.mp4, .mov, .mkv, .webm, .avi, .m4v): convert "
                   "it (e.g. ffmpeg -i old.mpg old.mp4), or remove its caption old.txt",
                   "shots.mp4: is not a file: put the clip there, or remove its caption shots.txt",
                   "moved_caption.mp4: its caption moved_caption.txt is a link to "):
        assert needle in message, message
    assert message.startswith("4 problem(s)") and not cache.exists()
    for name in ("gone.mp4", "gone.txt", "old.txt", "shots.txt", "moved_caption.txt", "moved_caption.mp4"):
        (folder / name).unlink()
    dataset, _, report = build_dataset(toy_request(folder, golden_cases), encoders, cache)
    assert len(dataset) == 2 and [c["caption"] for c in dataset.clips] == ["a café", "a good clip"]
    assert "lonely.mp4: not a readable file and no caption: skipped" in report
    assert "readme.txt: no clip of that name (.mp4, .mov, .mkv, .webm, .avi, .m4v): not used" in report
    assert any(line.startswith("cp1252.mp4: the caption cp1252.txt is not UTF-8") for line in report), report
    assert math.isfinite(float(dataset.video.sum()))
