"""Saving LoRAs without losing one: a full disk while replacing a .safetensors LoRA or the official pair
(lora_weights.pt + lora_config.pt) leaves the old files whole, a pair cut apart between its two files is refused
by the loader, every file of a save is checked before the first is written, and MOVA Save LoRA's filename takes
what the file system takes."""

import pytest
import torch

from comfyui_mova.mova_model.checkpoint import CheckpointError
from comfyui_mova.mova_model.lora import lora_from_tensors, read_lora
from comfyui_mova.mova_model.lora_save import save_lora_safetensors, save_official_folder
from comfyui_mova.mova_model.lora_train import make_lora_set
from comfyui_mova.mova_model.names import NameProblem
from comfyui_mova.nodes.training_run import lora_save_paths
from mova_testing import load_golden_towers
from write_faults import NO_RLIMIT, leftovers, python


@pytest.fixture(scope="module")
def two_loras(golden_dir):
    """Two LoRAs over every part of the golden towers (random B, seeds 1 and 2), as MOVA Train LoRA hands them on."""
    with torch.inference_mode():
        towers = load_golden_towers(golden_dir)
    models = {"video_dit": towers.video_experts[0], "video_dit_2": towers.video_experts[1],
              "audio_dit": towers.audio_dit, "dual_tower_bridge": towers.bridge}
    out = []
    for seed in (1, 2):
        lora = make_lora_set(models, 4, 4.0, seed)
        gen = torch.Generator().manual_seed(seed)
        state = {k: torch.randn(v.shape, generator=gen) * 0.1 if "lora_B" in k else v
                 for k, v in lora.state_dict().items()}
        out.append(lora_from_tensors(state, {"rank": 4, "alpha": 4.0}, f"trained {seed}"))
    return out


def _same(a, b):
    return all(torch.equal(a.patches[c][k].up, b.patches[c][k].up) for c in a.patches for k in a.patches[c])


@NO_RLIMIT
def test_disk_full_while_replacing_a_lora_keeps_the_old_files(two_loras, tmp_path):
    old, new = two_loras
    target = save_lora_safetensors(old, tmp_path / "my.safetensors", dtype=torch.bfloat16)
    weights = save_official_folder(old, tmp_path / "my_official")
    config = weights.with_name("lora_config.pt")
    source = save_lora_safetensors(new, tmp_path / "source" / "new.safetensors")
    before = {p: p.read_bytes() for p in (target, weights, config)}
    limit = (target.stat().st_size + source.stat().st_size) // 2  # more than the old file, less than the new one
    run = python(f"""
        from comfyui_mova.mova_model.lora import read_lora
        from comfyui_mova.mova_model.lora_save import save_lora_safetensors, save_official_folder
        lora = read_lora({str(source)!r})
        limit_file_size({limit})
        for save in (lambda: save_lora_safetensors(lora, {str(target)!r}, overwrite=True),
                     lambda: save_official_folder(lora, {str(weights.parent)!r}, overwrite=True)):
            try:
                save()
            except OSError as exc:
                print(exc)
    """)
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    tail = ("File too large; the file is larger than this system allows (a file-size limit, or a file system such as "
            "FAT32 that holds at most 4 GiB per file): raise the limit, or choose a folder on another file system. "
            "Nothing was saved; the previous {} is unchanged.")
    assert first == f"could not write the LoRA {target}: " + tail.format("my.safetensors")
    assert second == f"could not write the official LoRA weights {weights}: " + tail.format("lora_weights.pt")
    assert all(p.read_bytes() == data for p, data in before.items()) and leftovers(tmp_path) == []
    assert _same(read_lora(weights), old)  # the old pair, whole and matching


def test_a_pair_cut_apart_between_its_two_files_is_refused(two_loras, tmp_path):
    old, new = two_loras
    weights = save_official_folder(old, tmp_path / "pair")
    other = save_official_folder(new, tmp_path / "other")
    weights.with_name("lora_config.pt").write_bytes(other.with_name("lora_config.pt").read_bytes())
    with pytest.raises(CheckpointError) as caught:
        read_lora(weights)
    assert str(caught.value) == (
        f"{weights.with_name('lora_config.pt')} belongs to another lora_weights.pt than the one beside it (its "
        "weights_sha256 differs): a save of this pair was cut off between the two files. Save the LoRA again (MOVA "
        "Save LoRA with overwrite, or python -m mova_model.lora_save LORA FOLDER --overwrite).")
    save_official_folder(new, tmp_path / "pair", overwrite=True)  # saved again: a matching pair
    assert _same(read_lora(weights), new)
    # a config without the digest (the official trainer's, or ours before it had one) still loads
    torch.save({"rank": 4, "alpha": 4.0, "target_modules": []}, weights.with_name("lora_config.pt"))
    assert _same(read_lora(weights), new)


def test_every_file_of_a_save_is_checked_before_the_first_is_written(two_loras, tmp_path):
    loras = tmp_path / "loras"
    (loras / "mine_official").mkdir(parents=True)
    (loras / "mine_official" / "lora_config.pt").write_bytes(b"a config left alone")
    with pytest.raises(FileExistsError) as caught:
        lora_save_paths(loras, "mine", overwrite=False, official=True)
    assert str(caught.value) == (f"{loras / 'mine_official' / 'lora_config.pt'} already exists: switch overwrite on "
                                 "to replace it, or choose another filename.")
    assert sorted(p.name for p in loras.iterdir()) == ["mine_official"]
    (loras / "taken_official").write_text("a file")
    with pytest.raises(NameProblem, match=r"MOVA Save LoRA's filename 'taken': .*taken_official is a file, not a "
                                          r"folder: choose another filename, or switch official_folder off."):
        lora_save_paths(loras, "taken", overwrite=True, official=True)
    with pytest.raises(FileExistsError, match=r"taken_official is a file, not a folder: choose another folder for lora_weights.pt"):
        save_official_folder(two_loras[0], loras / "taken_official", overwrite=True)


def test_lora_file_names_the_file_system_takes(two_loras, tmp_path):
    path, folder = lora_save_paths(tmp_path, "歌う猫/第1版", overwrite=False, official=True)
    assert path == tmp_path / "歌う猫" / "第1版.safetensors" and folder == tmp_path / "歌う猫" / "第1版_official"
    save_lora_safetensors(two_loras[0], path)
    save_official_folder(two_loras[0], folder)
    assert _same(read_lora(path), two_loras[0]) and _same(read_lora(folder / "lora_weights.pt"), two_loras[0])
    with pytest.raises(NameProblem) as caught:
        lora_save_paths(tmp_path, "x" * 250, overwrite=False, official=True)
    assert str(caught.value).startswith(f"MOVA Save LoRA's filename: the name {'x' * 40!r}… is 262 bytes long with "
                                        "'.safetensors'; the file system takes at most 255 bytes per name")
