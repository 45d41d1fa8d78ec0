"""MOVA Dataset's cache: clips that encode to NaN or infinite values are refused by name before anything is cached
(a real clip whose float sound track holds NaN, and a caption the text encoder overflows on), a cache holding such
values is not reused, a full disk while writing the cache names the file and leaves nothing, and the cache's
file name stays a plain name whatever the clip folder is called."""

import math

import pytest
import torch

from comfyui_mova.mova_model.training.dataset import save_latent_dataset
from comfyui_mova.nodes.training.dataset import build_dataset, cache_path, dataset_fingerprint, check_clips
from clip_files import write_nan_sound_clip
from training_fixtures import toy_encoders, toy_request, write_toy_clips
from write_faults import NO_RLIMIT, python


def test_clips_that_encode_to_nan_are_refused_by_name(tmp_path, golden_dir, golden_cases):
    folder = write_toy_clips(tmp_path / "clips", golden_cases, count=3)
    write_nan_sound_clip(folder / "dropout.mkv", golden_cases)
    encoders = toy_encoders(golden_dir, golden_cases)
    text = encoders.text
    encoders.text = lambda caption: text(caption) * (math.inf if caption.startswith("clip 2") else 1.0)  # overflow
    with pytest.raises(ValueError) as caught:
        build_dataset(toy_request(folder, golden_cases), encoders, tmp_path / "cache")
    message = str(caught.value)
    assert "dropout.mkv" in message and "NaN" in message, message
    if message.startswith("2 clip(s)"):  # refused by the encoded-latents check (not earlier, by the sound's)
        lines = message.splitlines()
        assert lines[0] == f"2 clip(s) in {folder} encode to NaN or infinite values; nothing was cached:"
        assert lines[1].startswith("- clip2.mp4: caption states (") and lines[1].endswith(" values)")
        assert lines[2].startswith("- dropout.mkv: audio latents (")
        assert lines[3].startswith("Re-encode those clips (e.g. ffmpeg -i clip.mp4 -c:v libx264 -c:a aac fixed.mp4) "
                                   "or take them out of the folder.")
    assert not any((tmp_path / "cache").iterdir())


def test_a_cache_holding_nan_is_not_reused(tmp_path, golden_dir, golden_cases):
    folder = write_toy_clips(tmp_path / "clips", golden_cases)
    encoders = toy_encoders(golden_dir, golden_cases)
    dataset, path, _ = build_dataset(toy_request(folder, golden_cases), encoders, tmp_path / "cache")
    dataset.video[1, 0, 0, 0, 0] = math.nan  # as a version without the check could have cached it
    save_latent_dataset(dataset, path)
    again, path2, lines = build_dataset(toy_request(folder, golden_cases), encoders, tmp_path / "cache")
    assert path2 == path and lines[0] == f"2 clips encoded to {path.name}" and bool(torch.isfinite(again.video).all())


@NO_RLIMIT
def test_disk_full_while_writing_the_cache(tmp_path, golden_dir, golden_cases):
    folder = write_toy_clips(tmp_path / "clips", golden_cases)
    cache = tmp_path / "cache"
    run = python(f"""
        from pathlib import Path
        from comfyui_mova.nodes.training.dataset import build_dataset
        from training_fixtures import toy_encoders, toy_request
        cases = {golden_cases!r}
        encoders = toy_encoders(Path({str(golden_dir)!r}), cases)
        limit_file_size(4096)
        try:
            build_dataset(toy_request(Path({str(folder)!r}), cases), encoders, Path({str(cache)!r}))
        except OSError as exc:
            print(exc)
    """)
    assert run.returncode == 0, run.stderr
    checks, _ = check_clips(toy_request(folder, golden_cases), toy_encoders(golden_dir, golden_cases).sample_rate)
    path = cache_path(cache, toy_request(folder, golden_cases),
                      dataset_fingerprint(toy_request(folder, golden_cases), checks,
                                          toy_encoders(golden_dir, golden_cases)))
    assert run.stdout.strip() == (
        f"could not write the dataset cache {path}: File too large; the file is larger than this system allows (a "
        "file-size limit, or a file system such as FAT32 that holds at most 4 GiB per file): raise the limit, or "
        "choose a folder on another file system. Nothing was saved; no partial file was left.")
    assert list(cache.iterdir()) == []


def test_cache_name_from_any_folder_name(tmp_path, golden_dir, golden_cases):
    folder = write_toy_clips(tmp_path / ("クリップ" + "x" * 200), golden_cases)
    dataset, path, _ = build_dataset(toy_request(folder, golden_cases), toy_encoders(golden_dir, golden_cases),
                                     tmp_path / "cache")
    assert path.name.startswith("x" * 63 + f"_{golden_cases['width']}x{golden_cases['height']}x")
    assert len(path.name) < 120 and path.parent == tmp_path / "cache"
    (tmp_path / "blocked").write_text("a file where the cache folder goes")
    with pytest.raises(ValueError, match=r"^MOVA Dataset's cache folder: .*blocked is a file \(or a broken link\), "
                                         r"not a folder"):
        build_dataset(toy_request(folder, golden_cases, frames=5), toy_encoders(golden_dir, golden_cases),
                      tmp_path / "blocked")
