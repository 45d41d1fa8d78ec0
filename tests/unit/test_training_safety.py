"""Training that stops before harm, on the golden towers with the two-clip toy dataset from real clips: a run that
turns NaN after 7 steps stops at step 8 naming the clip, keeps its finite checkpoints and continues from the last
one; non-finite latents stop a run before its first step; damaged checkpoints (cut short, a metadata field missing
or wrong, NaN values) are named, set aside, and the run continues from the newest intact one."""

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfyui_mova.mova_model.training.dataset import save_latent_dataset
from comfyui_mova.mova_model.lora.load import read_lora
from comfyui_mova.mova_model.lora.adapters import make_lora_set
from comfyui_mova.mova_model.training.trainer import EXPERT_NAMES, LOW, TrainSettings, sample_indices, train_lora
from comfyui_mova.mova_model.training.checkpoints import CheckpointDamaged, TrainingCheckpoints, read_checkpoint
from comfyui_mova.mova_model.training.guard import StepGuard, TrainingStopped
from comfyui_mova.nodes.training.run import report
from mova_testing import load_golden_towers
from training_fixtures import NanBackward, build_toy_dataset
from write_faults import NO_RLIMIT, leftovers, python

FAST = dict(gradient_checkpointing=False, learning_rate=1e-2, rank=4, alpha=4.0, seed=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(tmp_path_factory, golden_dir, golden_cases):
    with torch.inference_mode():
        dataset, _, _ = build_toy_dataset(tmp_path_factory.mktemp("toy"), golden_dir, golden_cases)
    return dataset


def fresh_towers(golden_dir):
    with torch.inference_mode():
        return load_golden_towers(golden_dir)


def clip_at(toy, settings, step):
    """The clip file the (1-based) step trains on (batch 1, no accumulation)."""
    return toy.clips[sample_indices(settings.seed, step - 1, 0, settings, len(toy))[0]]["name"]


def test_nan_after_seven_steps_stops_at_step_8_and_keeps_the_finite_checkpoints(golden_dir, toy, tmp_path):
    """The issue's run: finite for 7 steps, then NaN, a checkpoint every 2 steps. The run stops at step 8 before
    anything of it is saved; step 4 and step 6 stay (the newest finite ones), the MOVA LoRA Loader reads them, and
    the run continues from step 6 with the same loss at step 7."""
    settings = TrainSettings(steps=10, checkpoint_every=2, **FAST)
    towers, run, seen = fresh_towers(golden_dir), tmp_path / "run", []

    def before_step(expert):  # the host loading weights; at step 8 a weight comes back broken
        if len(seen) == 7:
            with torch.inference_mode():
                towers.video_experts[expert].head.head.weight.fill_(float("nan"))

    with pytest.raises(TrainingStopped) as caught:
        train_lora(towers, toy, settings, TrainingCheckpoints(run), before_step=before_step,
                   on_step=lambda record, total: seen.append(record))
    message = str(caught.value)
    assert message.startswith(f"training stopped at step 8 of 10 ({EXPERT_NAMES[LOW]} expert, clip(s) "
                              f"{clip_at(toy, settings, 8)}): the loss is not finite at timestep "), message
    assert "(video nan, audio " in message
    assert (f"Nothing of this step was saved; the newest checkpoint, step_000006.safetensors in {run}, holds finite "
            "weights: lower learning_rate (now 0.01) and queue the run again to continue from it.") in message
    assert [p.name for p in sorted(run.iterdir())] == ["step_000004.safetensors", "step_000006.safetensors"]
    meta, tensors = read_checkpoint(run / "step_000006.safetensors")  # every field checked, every value finite
    assert [r["loss"] for r in meta["history"]] == [r.loss for r in seen[:6]]
    lora = read_lora(run / "step_000006.safetensors")  # what the LoRA loader's advice points to
    assert sum(len(p) for p in lora.patches.values()) == sum(1 for k in tensors if k.endswith("lora_A.weight"))
    assert all(k.startswith("optimizer.") for k in lora.unknown_keys)
    resumed = train_lora(fresh_towers(golden_dir), toy, settings, TrainingCheckpoints(run))
    assert resumed.resumed_from == 6 and resumed.notes == []
    assert resumed.history[6].loss == seen[6].loss  # step 7 again, exactly
    assert all(torch.isfinite(torch.tensor([r.loss for r in resumed.history])))
    assert [p.name for p in sorted(run.iterdir())] == ["step_000008.safetensors", "step_000010.safetensors"]


def test_non_finite_latents_stop_the_run_before_its_first_step(golden_dir, toy, tmp_path):
    audio = toy.audio.clone()
    audio[1, 0, :3] = float("nan")
    text = toy.text.clone()
    text[1, 0, 0] = float("inf")
    broken = dataclasses.replace(toy, audio=audio, text=text)
    with pytest.raises(TrainingStopped) as caught:
        train_lora(fresh_towers(golden_dir), broken, TrainSettings(steps=2, **FAST), TrainingCheckpoints(tmp_path / "r"))
    a, t = audio[1].numel(), text[1].numel()
    assert str(caught.value) == (
        f"the dataset holds NaN or infinite values in 1 clip(s); nothing was trained:\n- {toy.clips[1]['name']}: "
        f"audio latents (3 of {a} values), caption states (1 of {t} values)\nBuild the dataset again with MOVA "
        "Dataset, which refuses such clips and names them (re-encode or remove those clips).")
    assert not (tmp_path / "r").exists()


def test_gradients_and_weights_that_are_not_finite(golden_dir, toy, tmp_path):
    """Gradients that turn NaN in the backward pass while the loss stays finite (the first block's self-attention
    passes its output on unchanged but hands NaN back): the run stops before the optimizer step. A LoRA holding an
    infinity is never written as a checkpoint."""
    settings = TrainSettings(steps=4, checkpoint_every=2, **FAST)
    towers, run, seen = fresh_towers(golden_dir), tmp_path / "run", []

    def before_step(expert):
        if len(seen) == 2:
            towers.video_experts[expert].blocks[0].self_attn.register_forward_hook(
                lambda module, args, output: NanBackward.apply(output))

    checkpoints = TrainingCheckpoints(run)
    with pytest.raises(TrainingStopped) as caught:
        train_lora(towers, toy, settings, checkpoints, before_step=before_step,
                   on_step=lambda record, total: seen.append(record))
    assert str(caught.value).startswith(
        f"training stopped at step 3 of 4 (high-noise expert, clip(s) {clip_at(toy, settings, 3)}): the LoRA's "
        "gradients are not finite (norm nan) although the loss is. Nothing of this step was saved; the newest "
        f"checkpoint, step_000002.safetensors in {run}, holds finite weights"), str(caught.value)
    before = (run / "step_000002.safetensors").read_bytes()
    lora = make_lora_set({"video_dit": fresh_towers(golden_dir).video_experts[0]}, 4, 4.0, 0)
    with torch.no_grad():
        lora.parameters()[1].fill_(float("inf"))
    guard = StepGuard(toy, settings, checkpoints)
    with pytest.raises(TrainingStopped, match=r"at step 4 of 4 \(after the optimizer step\): 1 LoRA or optimizer "
                                              r"tensors hold NaN or infinite values \(first: video_dit.blocks.0."
                                              r"cross_attn.k.lora_B.weight\) before writing step_000004.safetensors"):
        checkpoints.save(4, settings, toy.fingerprint, lora, torch.optim.AdamW(lora.parameters()), [], guard)
    assert sorted(p.name for p in run.iterdir()) == ["step_000002.safetensors"]
    assert (run / "step_000002.safetensors").read_bytes() == before


@pytest.fixture(scope="module")
def four_steps(golden_dir, toy, tmp_path_factory):
    """A run of 4 steps with checkpoints at 2 and 4 (copied for each damage), and its loss curve."""
    run = tmp_path_factory.mktemp("template") / "run"
    result = train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=4, checkpoint_every=2, **FAST),
                        TrainingCheckpoints(run))
    return run, [r.loss for r in result.history]


def _rewrite(path, change_meta=None, change_tensors=None):
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    save_file(tensors, str(path), metadata=meta)


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _first_lora_key(tensors):
    return next(k for k in tensors if not k.startswith("optimizer."))


DAMAGES = {
    "truncated": (_cut, "its header promises"),
    "not a checkpoint": (lambda p: p.write_bytes(b"not a checkpoint at all"),
                         "the file is truncated or not a safetensors file (header of 7521891404167278446 bytes, file "
                         "of 23)"),
    "history missing": (lambda p: _rewrite(p, lambda m: m.pop("history")), "its metadata field 'history' is missing"),
    "history not JSON": (lambda p: _rewrite(p, lambda m: m.update(history="[{")),
                         "its metadata field 'history' is not valid JSON"),
    "history too short": (lambda p: _rewrite(p, lambda m: m.update(history=json.dumps(json.loads(m["history"])[:3]))),
                          "its metadata field 'history' does not hold one record per step (step 4, 3 records)"),
    "step not a number": (lambda p: _rewrite(p, lambda m: m.update(step="four")),
                          "its metadata field 'step' is 'four', not a step number"),
    "NaN weights": (lambda p: _rewrite(p, change_tensors=lambda t: t[_first_lora_key(t)].fill_(float("nan"))),
                    "it holds NaN or infinite values"),
    "unknown optimizer state": (lambda p: _rewrite(p, change_tensors=lambda t: t.update(
        {"optimizer.99999.exp_avg": torch.zeros(1)})), "but the file holds optimizer state optimizer.99999.exp_avg"),
    "optimizer state misshapen": (lambda p: _rewrite(p, change_tensors=lambda t: t.update(
        {"optimizer.0.exp_avg": torch.zeros(3)})), "its optimizer state optimizer.0.exp_avg is (3,)"),
    "settings missing": (lambda p: _rewrite(p, lambda m: m.pop("settings")), "its metadata field 'settings' is missing"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_named_and_the_run_continues_from_the_intact_one(golden_dir, toy, four_steps, tmp_path,
                                                                                damage):
    template, losses = four_steps
    run = tmp_path / "run"
    shutil.copytree(template, run)
    make_damage, reason = DAMAGES[damage]
    make_damage(run / "step_000004.safetensors")
    settings = TrainSettings(steps=4, checkpoint_every=2, **FAST)
    resumed = train_lora(fresh_towers(golden_dir), toy, settings, TrainingCheckpoints(run))
    assert resumed.resumed_from == 2 and [r.loss for r in resumed.history] == losses
    [note] = resumed.notes
    assert note.startswith("step_000004.safetensors is damaged (") and reason in note, note
    assert note.endswith("); it was renamed step_000004.safetensors.damaged, and the run continued from "
                         "step_000002.safetensors"), note
    assert f"note: {note}" in report(resumed, settings)
    assert sorted(p.name for p in run.iterdir()) == ["step_000002.safetensors", "step_000004.safetensors",
                                                     "step_000004.safetensors.damaged"]
    assert leftovers(run) == []


def test_metadata_without_history_is_named_not_a_key_error(four_steps, tmp_path):
    path = tmp_path / "step_000004.safetensors"
    shutil.copy(four_steps[0] / path.name, path)
    _rewrite(path, lambda m: m.pop("history"))
    with pytest.raises(CheckpointDamaged) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"the training checkpoint {path} is damaged: its metadata field 'history' is missing"


def test_every_checkpoint_damaged(golden_dir, toy, four_steps, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(four_steps[0], run)
    _cut(run / "step_000004.safetensors")
    _rewrite(run / "step_000002.safetensors", lambda m: m.pop("history"))
    with pytest.raises(CheckpointDamaged) as caught:
        train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=6, checkpoint_every=2, **FAST),
                   TrainingCheckpoints(run))
    message = str(caught.value)
    assert message.startswith(f"the training checkpoint {run} is damaged: every checkpoint there is damaged "
                              "(step_000004.safetensors: the file is truncated: its header promises "), message
    assert message.endswith("step_000002.safetensors: its metadata field 'history' is missing). Choose another run "
                            "name to start a new LoRA, or move that folder away.")
    assert sorted(p.name for p in run.iterdir()) == ["step_000002.safetensors", "step_000004.safetensors"]


@NO_RLIMIT
def test_disk_full_while_writing_a_checkpoint(golden_dir, toy, four_steps, tmp_path):
    """The run stops at the checkpoint it cannot write, naming it and the fix; the previous one stays whole."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(four_steps[0] / "step_000002.safetensors", run)
    before = (run / "step_000002.safetensors").read_bytes()
    data = save_latent_dataset(toy, tmp_path / "toy.safetensors")
    result = python(f"""
        import torch
        from pathlib import Path
        from comfyui_mova.mova_model.training.dataset import load_latent_dataset
        from comfyui_mova.mova_model.training.trainer import TrainSettings, train_lora
        from comfyui_mova.mova_model.training.checkpoints import TrainingCheckpoints
        from mova_testing import load_golden_towers
        torch.set_num_threads(1)
        dataset = load_latent_dataset({str(data)!r})
        with torch.inference_mode():
            towers = load_golden_towers(Path({str(golden_dir)!r}))
        limit_file_size({len(before) + 16})  # the next checkpoint's longer history no longer fits
        try:
            train_lora(towers, dataset, TrainSettings(steps=4, checkpoint_every=2, **{FAST!r}),
                       TrainingCheckpoints({str(run)!r}), on_step=lambda r, total: print("step", r.step))
        except OSError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    steps, message = result.stdout.splitlines()[:-1], result.stdout.splitlines()[-1]
    assert steps == ["step 3"]  # step 4 ran, then its checkpoint failed before on_step
    assert message == (f"could not write the training checkpoint {run / 'step_000004.safetensors'}: File too large; "
                       "the file is larger than this system allows (a file-size limit, or a file system such as "
                       "FAT32 that holds at most 4 GiB per file): raise the limit, or choose a folder on another file "
                       "system. Nothing was saved; no partial file was left.")
    assert sorted(p.name for p in run.iterdir()) == ["step_000002.safetensors"]
    assert (run / "step_000002.safetensors").read_bytes() == before
