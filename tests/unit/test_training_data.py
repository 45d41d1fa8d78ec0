"""Training clips and the latent dataset: real clips written with PyAV are found with their captions, checked
(every problem reported before anything is encoded), fitted, resampled when asked, encoded with the golden
DAC and cached; unchanged inputs reuse the cache."""

import os

import av
import pytest
import torch

from clip_files import write_clip
from comfyui_mova.mova_model.training.dataset import load_latent_dataset
from comfyui_mova.mova_model.sampling.sizes import audio_latent_length
from comfyui_mova.nodes.training.clips import ClipError, find_clips, inspect_clip, read_clip, resample_indices
from comfyui_mova.nodes.training.dataset import build_dataset, module_fingerprint, output_fingerprint
from training_fixtures import golden_dac, toy_encoders, toy_request, write_toy_clips


@pytest.fixture(scope="module")
def sizes(golden_cases):
    return golden_cases["width"], golden_cases["height"], golden_cases["num_frames"], float(golden_cases["fps"])


@pytest.fixture(scope="module")
def rate(golden_cases):
    return golden_cases["audio_vae"]["sample_rate"]


def test_every_problem_is_reported_before_encoding(tmp_path, golden_dir, golden_cases, sizes):
    w, h, frames, fps = sizes
    folder = tmp_path / "clips"
    write_clip(folder / "good.mp4", frames, fps, w, h)
    write_clip(folder / "no_caption.mp4", frames, fps, w, h, caption=None)
    write_clip(folder / "mute.mp4", frames, fps, w, h, sound="none")
    write_clip(folder / "silent.mp4", frames, fps, w, h, sound="silent")
    write_clip(folder / "short.mp4", frames - 4, fps, w, h)
    write_clip(folder / "fast.mp4", frames, fps * 1.25, w, h)
    (folder / "empty.mp4").write_bytes((folder / "good.mp4").read_bytes())
    (folder / "empty.txt").write_text("  \n")
    cache = tmp_path / "cache"
    with pytest.raises(ClipError) as caught:
        build_dataset(toy_request(folder, golden_cases), toy_encoders(golden_dir, golden_cases), cache)
    message = str(caught.value)
    assert message.startswith("6 problem(s) with the clips in") and "nothing was encoded" in message
    for needle in ("no_caption.mp4: no caption (write it in no_caption.txt beside the clip)",
                   "empty.mp4: the caption empty.txt is empty",
                   "mute.mp4: has no sound track",
                   "silent.mp4: its sound track is silent",
                   f"short.mp4: is too short: {frames - 4} frames",
                   f"fast.mp4: is {fps * 1.25:g} fps but the dataset is {fps:g} fps",
                   "set fps_mode to resample"):
        assert needle in message, needle
    assert "good.mp4" not in message
    assert not cache.exists()  # nothing encoded, nothing written


def test_missing_folder_and_folder_without_clips(tmp_path):
    with pytest.raises(ClipError, match="does not exist.*inside ComfyUI/input"):
        find_clips(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ClipError, match="holds no video clips"):
        find_clips(tmp_path)


def test_read_clip_fits_frames_and_makes_mono_sound(tmp_path, sizes, rate):
    w, h, frames, fps = sizes
    tone = rate / 6  # well below the codec's Nyquist frequency
    clip_path = write_clip(tmp_path / "wide.mp4", frames + 2, fps, w * 2, h, tone=tone)
    (clip,), _ = find_clips(tmp_path)
    video, wave = read_clip(clip, w, h, frames, fps, rate, fps)
    assert video.shape == (frames, h, w, 3) and video.dtype == torch.float32
    assert 0.0 <= float(video.min()) and float(video.max()) <= 1.0
    assert wave.shape == (int(rate * frames / fps),)
    spectrum = torch.fft.rfft(wave - wave.mean()).abs()
    peak_hz = float(spectrum.argmax()) * rate / wave.numel()
    assert abs(peak_hz - tone) <= rate / wave.numel() + 1, peak_hz
    # the first frame is the centre of the source picture (crop of a 2:1 picture to 1:1 keeps the middle half)
    with av.open(str(clip_path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    centre = torch.from_numpy(first[:, w // 2: w // 2 + w]).float() / 255
    assert (video[0] - centre).abs().mean() < 0.02


def test_other_frame_rate_is_resampled_and_reported(tmp_path, sizes, rate):
    w, h, frames, fps = sizes
    source_fps = fps * 1.25
    write_clip(tmp_path / "fast.mp4", int(frames * 1.25) + 2, source_fps, w, h)
    (clip,), _ = find_clips(tmp_path)
    check = inspect_clip(clip, frames, fps, rate, resample=True)
    assert check.problems == [] and check.resampled
    assert check.notes == [f"{source_fps:g} fps resampled to {fps:g} fps"]
    video, _ = read_clip(clip, w, h, frames, fps, rate, check.source_fps)
    with av.open(str(clip.path)) as container:
        source = [torch.from_numpy(f.to_ndarray(format="rgb24")).float() / 255 for f in container.decode(video=0)]
    picked = resample_indices(frames, fps, source_fps)
    assert picked[0] == 0 and picked[-1] == round((frames - 1) * source_fps / fps)
    for i, j in enumerate(picked):
        assert (video[i] - source[j]).abs().mean() < 1e-3, (i, j)


def test_dataset_is_encoded_once_and_reused(tmp_path, golden_dir, golden_cases, sizes):
    w, h, frames, fps = sizes
    folder = write_toy_clips(tmp_path / "clips", golden_cases)
    encoders = toy_encoders(golden_dir, golden_cases)
    dataset, path, lines = build_dataset(toy_request(folder, golden_cases), encoders, tmp_path / "cache")
    assert lines[0] == f"2 clips encoded to {path.name}" and path.parent == tmp_path / "cache"
    t = (frames - 1) // 4 + 1
    dac = golden_dac(golden_dir)
    assert dataset.video.shape == (2, 16, t, h // 8, w // 8)
    assert dataset.condition.shape == (2, 20, t, h // 8, w // 8)
    assert torch.equal(dataset.condition[:, :4, 0], torch.ones_like(dataset.condition[:, :4, 0]))  # first-frame mask
    assert dataset.condition[:, :4, 1:].abs().max() == 0
    assert dataset.audio.shape == (2, golden_cases["audio_dit"]["in_dim"], audio_latent_length(frames, fps, dac.config))
    assert dataset.audio.shape[-1] == golden_cases["audio_latent_length"]
    assert dataset.text.shape == (2, 8, golden_cases["video_dit"]["text_dim"])
    assert [c["name"] for c in dataset.clips] == ["clip0.mp4", "clip1.mp4"]
    # the sound went through the real codec: the clips' different tones give different latents
    assert not torch.allclose(dataset.audio[0], dataset.audio[1])
    again, path2, lines = build_dataset(toy_request(folder, golden_cases), encoders, tmp_path / "cache")
    assert path2 == path and lines[0] == f"2 clips from the cache {path.name} (inputs unchanged)"
    for name in ("video", "condition", "audio", "text"):
        assert torch.equal(getattr(again, name), getattr(dataset, name))
    assert torch.equal(load_latent_dataset(path).audio, dataset.audio)
    # a changed caption is a new dataset
    caption = folder / "clip1.txt"
    caption.write_text(caption.read_text() + " With rain.")
    _, path3, lines = build_dataset(toy_request(folder, golden_cases), encoders, tmp_path / "cache")
    assert path3 != path and lines[0].startswith("2 clips encoded")
    # so is another size
    _, path4, _ = build_dataset(toy_request(folder, golden_cases, frames=frames - 4), encoders, tmp_path / "cache")
    assert path4 not in (path, path3)
    assert len(os.listdir(tmp_path / "cache")) == 3


def test_encoder_fingerprints(golden_dir):
    dac = golden_dac(golden_dir)
    before = module_fingerprint(dac)
    assert module_fingerprint(dac) == before
    with torch.no_grad():
        dac.encoder.block[0].weight.view(-1)[0] += 1.0
    assert module_fingerprint(dac) != before
    x = torch.linspace(-1, 1, 100)
    assert output_fingerprint(x) == output_fingerprint(x + 1e-9) != output_fingerprint(x * 2)


def test_official_metadata_for_the_same_clip_folder(tmp_path, golden_cases):
    """scripts/make_official_metadata.py writes the metadata.json MOVA's own trainers read, from the captions."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_official_metadata.py"
    folder = write_toy_clips(tmp_path / "clips", golden_cases)
    run = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    entries = json.loads((folder / "metadata.json").read_text())
    assert entries == [{"video_path": f"clip{i}.mp4", "caption": (folder / f"clip{i}.txt").read_text().strip()}
                       for i in range(2)]
    run = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True)
    assert run.returncode == 2 and "already exists: pass --overwrite" in run.stderr
    (folder / "clip1.txt").unlink()
    run = subprocess.run([sys.executable, str(script), str(folder), "--overwrite"], capture_output=True, text=True)
    assert run.returncode == 2 and "no caption for clip1.mp4" in run.stderr
    assert json.loads((folder / "metadata.json").read_text()) == entries  # left as it was
