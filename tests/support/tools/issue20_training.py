"""Issue 20's cases of classes 4 and 5 (training that stops before harm, atomic saves) for issue20_cases.py: the
golden tiny release's towers trained on a two-clip dataset made from real clips (PyAV), real LoRA files in both
layouts, the converter, a full disk through RLIMIT_FSIZE in a child process, and processes started at one moment."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from comfyui_mova.mova_model import convert
from comfyui_mova.mova_model.lora.adapters import make_lora_set
from comfyui_mova.mova_model.lora.load import lora_from_tensors, read_lora
from comfyui_mova.mova_model.lora.save import save_lora_safetensors, save_official_folder
from comfyui_mova.mova_model.training.checkpoints import TrainingCheckpoints, read_checkpoint
from comfyui_mova.mova_model.training.dataset import save_latent_dataset
from comfyui_mova.mova_model.training.trainer import TrainSettings, train_lora
from comfyui_mova.nodes.training.dataset import build_dataset
from comfyui_mova.nodes.training.run import lora_save_paths
from clip_files import write_nan_sound_clip
from issue20_cases import Case, Result, attempt
from mova_testing import load_golden_towers
from training_fixtures import NanBackward, build_toy_dataset, toy_encoders, toy_request, write_toy_clips
from write_faults import leftovers, open_folder, python, start_together

FAST = dict(gradient_checkpointing=False, learning_rate=1e-2, rank=4, alpha=4.0, seed=3)


def toy(lab):
    def make():
        torch.set_num_threads(1)
        with torch.inference_mode():
            return build_toy_dataset(lab.folder("toy"), lab.golden_dir, lab.golden_cases)[0]
    return lab.once("toy", make)


def towers(lab):
    with torch.inference_mode():
        return load_golden_towers(lab.golden_dir)


def four_steps(lab) -> Path:
    """A run of 4 steps with checkpoints at 2 and 4 (copied for each damage)."""
    def make():
        run = lab.folder("template") / "run"
        result = train_lora(towers(lab), toy(lab), TrainSettings(steps=4, checkpoint_every=2, **FAST),
                            TrainingCheckpoints(run))
        return run, [r.loss for r in result.history]
    return lab.once("four_steps", make)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def rewrite(path, change_meta=None, change_tensors=None):
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    save_file(tensors, str(path), metadata=meta)


def cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# -- 4. training ---------------------------------------------------------------------------------------------------

def nan_latents(lab) -> Result:
    data = toy(lab)
    audio = data.audio.clone()
    audio[1, 0, :3] = float("nan")
    run = lab.folder("nan_latents") / "run"
    result, _ = attempt(lambda: train_lora(towers(lab), dataclasses.replace(data, audio=audio),
                                           TrainSettings(steps=2, **FAST), TrainingCheckpoints(run)), "stopped")
    return result.check(not run.exists(), "the run wrote something")


def dataset_nan_clip(lab) -> Result:
    folder = write_toy_clips(lab.folder("nan_clip") / "clips", lab.golden_cases)
    write_nan_sound_clip(folder / "dropout.mkv", lab.golden_cases)
    cache = folder.parent / "cache"
    result, _ = attempt(lambda: build_dataset(toy_request(folder, lab.golden_cases),
                                              toy_encoders(lab.golden_dir, lab.golden_cases), cache))
    result.check("dropout.mkv" in result.message, "the clip is not named")
    return result.check(not cache.exists() or names(cache) == [], "something was cached")


def nan_after_seven(lab) -> Result:
    settings = TrainSettings(steps=10, checkpoint_every=2, **FAST)
    net, run, seen = towers(lab), lab.folder("nan7") / "run", []

    def before_step(expert):  # at step 8 a weight comes back broken (what a bad learning rate or loader does)
        if len(seen) == 7:
            with torch.inference_mode():
                net.video_experts[expert].head.head.weight.fill_(float("nan"))

    result, _ = attempt(lambda: train_lora(net, toy(lab), settings, TrainingCheckpoints(run), before_step=before_step,
                                           on_step=lambda record, total: seen.append(record)), "stopped")
    kept = names(run)
    result.check(kept == ["step_000004.safetensors", "step_000006.safetensors"], f"left {kept}")
    if kept:
        read_checkpoint(run / kept[-1])  # every field checked, every value finite
        read_lora(run / kept[-1])        # what the LoRA loader's advice points to
    lab.once("nan7_run", lambda: (run, seen))
    return result


def resume_after_nan(lab) -> Result:
    if "nan7_run" not in lab._made:
        nan_after_seven(lab)
    run, seen = lab.once("nan7_run", lambda: None)
    settings = TrainSettings(steps=10, checkpoint_every=2, **FAST)
    result, resumed = attempt(lambda: train_lora(towers(lab), toy(lab), settings, TrainingCheckpoints(run)))
    if resumed is not None:
        result.message = (f"continued from step {resumed.resumed_from}; step 7's loss {resumed.history[6].loss:.6g} "
                          f"as before; all 10 losses finite; kept {', '.join(names(run))}")
        result.check(resumed.resumed_from == 6 and resumed.history[6].loss == seen[6].loss, "not the same run")
        result.check(all(math.isfinite(r.loss) for r in resumed.history), "a loss is not finite")
    return result


def nan_gradient(lab) -> Result:
    settings = TrainSettings(steps=4, checkpoint_every=2, **FAST)
    net, run, seen = towers(lab), lab.folder("nan_grad") / "run", []

    def before_step(expert):
        if len(seen) == 2:
            net.video_experts[expert].blocks[0].self_attn.register_forward_hook(
                lambda module, args, output: NanBackward.apply(output))

    result, _ = attempt(lambda: train_lora(net, toy(lab), settings, TrainingCheckpoints(run), before_step=before_step,
                                           on_step=lambda record, total: seen.append(record)), "stopped")
    return result.check(names(run) == ["step_000002.safetensors"], f"left {names(run)}")


def damaged_latest(damage, resume: bool = True):
    """The 4-step run's newest checkpoint damaged by ``damage(path)``; resuming continues from step 2."""
    def run(lab) -> Result:
        template, losses = four_steps(lab)
        folder = lab.folder("damaged") / "run"
        shutil.copytree(template, folder)
        damage(folder / "step_000004.safetensors")
        if not resume:
            return attempt(lambda: read_checkpoint(folder / "step_000004.safetensors"))[0]
        settings = TrainSettings(steps=4, checkpoint_every=2, **FAST)
        result, resumed = attempt(lambda: train_lora(towers(lab), toy(lab), settings, TrainingCheckpoints(folder)))
        if resumed is not None:
            result.message = " ".join(resumed.notes)
            result.check(resumed.resumed_from == 2 and [r.loss for r in resumed.history] == losses,
                         "did not continue from step 2 with the same losses")
            result.check(leftovers(folder) == [], "temporary files left")
        return result
    return run


def all_damaged(lab) -> Result:
    template, _ = four_steps(lab)
    folder = lab.folder("all_damaged") / "run"
    shutil.copytree(template, folder)
    cut(folder / "step_000004.safetensors")
    rewrite(folder / "step_000002.safetensors", lambda m: m.pop("history"))
    result, _ = attempt(lambda: train_lora(towers(lab), toy(lab), TrainSettings(steps=6, checkpoint_every=2, **FAST),
                                           TrainingCheckpoints(folder)))
    return result.check(names(folder) == ["step_000002.safetensors", "step_000004.safetensors"], "files changed")


def nan_lora_file(lab) -> Result:
    template, _ = four_steps(lab)
    path = lab.folder("nan_lora") / "diverged.safetensors"
    shutil.copy(template / "step_000004.safetensors", path)
    rewrite(path, change_tensors=lambda t: t[next(k for k in t if "lora_B" in k)].fill_(float("nan")))
    return attempt(lambda: read_lora(path))[0]


# -- 5. atomic saves -----------------------------------------------------------------------------------------------

def two_loras(lab):
    def make():
        net = towers(lab)
        models = {"video_dit": net.video_experts[0], "video_dit_2": net.video_experts[1], "audio_dit": net.audio_dit,
                  "dual_tower_bridge": net.bridge}
        out = []
        for seed in (1, 2):
            lora = make_lora_set(models, 4, 4.0, seed)
            gen = torch.Generator().manual_seed(seed)
            state = {k: torch.randn(v.shape, generator=gen) * 0.1 if "lora_B" in k else v
                     for k, v in lora.state_dict().items()}
            out.append(lora_from_tensors(state, {"rank": 4, "alpha": 4.0}, f"trained {seed}"))
        return out
    return lab.once("loras", make)


def same(a, b) -> bool:
    return all(torch.equal(a.patches[c][k].up, b.patches[c][k].up) for c in a.patches for k in a.patches[c])


def last_line(run) -> str:
    lines = (run.stdout.strip() or run.stderr.strip()).splitlines()
    return lines[-1] if lines else f"(no output, exit {run.returncode})"


def disk_full_lora(official: bool):
    def run(lab) -> Result:
        old, new = two_loras(lab)
        folder = lab.folder("lora_full")
        target = (save_official_folder(old, folder / "my_official") if official
                  else save_lora_safetensors(old, folder / "my.safetensors", dtype=torch.bfloat16))
        files = [target, target.with_name("lora_config.pt")] if official else [target]
        source = save_lora_safetensors(new, folder / "source" / "new.safetensors")
        before = {p: p.read_bytes() for p in files}
        limit = (target.stat().st_size + source.stat().st_size) // 2
        save = (f"save_official_folder(lora, {str(target.parent)!r}, overwrite=True)" if official
                else f"save_lora_safetensors(lora, {str(target)!r}, overwrite=True)")
        child = python(f"""
            from comfyui_mova.mova_model.lora.load import read_lora
            from comfyui_mova.mova_model.lora.save import save_lora_safetensors, save_official_folder
            lora = read_lora({str(source)!r})
            limit_file_size({limit})
            try:
                {save}
            except OSError as exc:
                print(exc)
        """)
        result = Result("stopped" if child.returncode == 0 and child.stdout.strip() else "raw error", last_line(child))
        result.check(all(p.read_bytes() == data for p, data in before.items()), "the old file changed")
        result.check(leftovers(folder) == [], "temporary files left")
        if official:
            result.check(same(read_lora(target), old), "the old pair no longer loads as before")
        return result
    return run


def config_only(overwrite: bool):
    def run(lab) -> Result:
        loras = lab.folder("config_only")
        (loras / "mine_official").mkdir()
        (loras / "mine_official" / "lora_config.pt").write_bytes(b"a config left from an earlier save")

        def save():
            path, folder = lora_save_paths(loras, "mine", overwrite=overwrite, official=True)
            save_lora_safetensors(two_loras(lab)[0], path, overwrite=overwrite)
            return save_official_folder(two_loras(lab)[0], folder, overwrite=overwrite)

        result, weights = attempt(save)
        if overwrite and weights is not None:
            result.message = f"wrote {', '.join(names(loras))} and {', '.join(names(weights.parent))}; the pair loads"
            result.check(same(read_lora(weights), two_loras(lab)[0]), "the pair does not load")
        if not overwrite:
            result.check(names(loras) == ["mine_official"] and names(loras / "mine_official") == ["lora_config.pt"],
                         "something was written")
        return result
    return run


def pair_cut_apart(lab) -> Result:
    old, new = two_loras(lab)
    folder = lab.folder("pair")
    weights = save_official_folder(old, folder / "pair")
    other = save_official_folder(new, folder / "other")
    weights.with_name("lora_config.pt").write_bytes(other.with_name("lora_config.pt").read_bytes())
    return attempt(lambda: read_lora(weights))[0]


def exists_without_overwrite(lab) -> Result:
    old, new = two_loras(lab)
    target = save_lora_safetensors(old, lab.folder("exists") / "mine.safetensors")
    before = target.read_bytes()
    result, _ = attempt(lambda: save_lora_safetensors(new, target))
    return result.check(target.read_bytes() == before, "the old file changed")


def link_at_target(lab) -> Result:
    """A link planted where the LoRA goes, pointing outside the folder: the save replaces the link, the file it
    pointed to stays as it was."""
    folder = lab.folder("link")
    outside = folder / "outside" / "precious.txt"
    outside.parent.mkdir()
    outside.write_text("not a LoRA")
    (folder / "loras").mkdir()
    (folder / "loras" / "mine.safetensors").symlink_to(outside)
    result, path = attempt(lambda: save_lora_safetensors(two_loras(lab)[0], folder / "loras" / "mine.safetensors",
                                                         overwrite=True))
    if path is not None:
        result.message = f"{path.name} is now a file of its own; the link's target still reads {outside.read_text()!r}"
    result.check(outside.read_text() == "not a LoRA", "the file outside was written through the link")
    return result.check(not (folder / "loras" / "mine.safetensors").is_symlink(), "the link is still there")


def read_only_folder(lab) -> Result:
    """An ordinary user (uid nobody) saving into a folder it may not write: named, nothing left."""
    with open_folder() as folder:
        source = save_lora_safetensors(two_loras(lab)[0], folder / "new.safetensors")
        loras = folder / "loras"
        loras.mkdir(mode=0o555)
        loras.chmod(0o555)
        child = python(f"""
            import os
            from comfyui_mova.mova_model.lora.load import read_lora
            from comfyui_mova.mova_model.lora.save import save_lora_safetensors
            lora = read_lora({str(source)!r})
            if os.geteuid() == 0:
                os.setegid(65534); os.seteuid(65534)
            try:
                save_lora_safetensors(lora, {str(loras / 'mine.safetensors')!r})
            except OSError as exc:
                print(exc)
        """)
        result = Result("stopped" if child.returncode == 0 and child.stdout.strip() else "raw error", last_line(child))
        return result.check(names(loras) == [], "something was left in the folder")


def disk_full_converter(lab) -> Result:
    out = lab.folder("convert_full")
    ckpt = lab.golden_dir / "checkpoint"
    with contextlib.redirect_stderr(io.StringIO()):  # its progress lines
        assert convert.main([str(ckpt), str(out), "--components", "audio_vae"]) == 0
    [old] = out.iterdir()
    before = old.read_bytes()
    child = python(f"""
        from comfyui_mova.mova_model import convert
        limit_file_size({len(before) // 2})
        raise SystemExit(convert.main([{str(ckpt)!r}, {str(out)!r}, "--components", "audio_vae", "--overwrite"]))
    """)
    result = Result("stopped" if child.returncode == 2 else "raw error", child.stderr.strip().splitlines()[-1])
    result.check("Traceback" not in child.stderr, "a traceback")
    return result.check(old.read_bytes() == before and names(out) == [old.name], "the old file changed or a file was left")


def three_converters(lab) -> Result:
    base = lab.folder("three")
    ckpt, out, reference = lab.golden_dir / "checkpoint", base / "out", base / "reference"
    with contextlib.redirect_stderr(io.StringIO()):
        assert convert.main([str(ckpt), str(reference), "--components", "high", "low", "bridge"]) == 0
    codes = [f"from comfyui_mova.mova_model import convert\nraise SystemExit(convert.main({args!r}))\n"
             for args in ([str(ckpt), str(out), "--components", "high", "low", "bridge", *flag]
                          for flag in (["--overwrite"], ["--overwrite"], []))]
    runs = start_together(codes, base)
    codes_seen = [r.returncode for r in runs]
    result = Result("handled", f"exit codes {codes_seen} (0: wrote the files; 2: told a file exists); "
                               f"{len(names(out))} files, each whole and equal to a single converter's")
    for r in runs:
        result.check("Traceback" not in r.stderr and "Bus error" not in r.stderr, "a crash: " + r.stderr[-200:])
        if r.returncode == 2:
            result.message += "; the one without --overwrite: " + r.stderr.strip().splitlines()[-1]
    result.check(codes_seen[:2] == [0, 0] and codes_seen[2] in (0, 2), f"exit codes {codes_seen}")
    result.check(names(out) == names(reference) and leftovers(base) == [], "other files or temporary files left")
    for name in names(reference):
        a, b = load_file(str(out / name)), load_file(str(reference / name))
        result.check(a.keys() == b.keys() and all(a[k].equal(b[k]) for k in b), f"{name} differs")
    return result


def concurrent_writers(lab) -> Result:
    """Three processes replacing one file at one moment with the pack's atomic write: the file is whole (one of
    them), no temporary file is left, none crashes."""
    folder = lab.folder("writers")
    target = folder / "shared.bin"
    payloads = [bytes([65 + i]) * 3_000_000 for i in range(3)]
    codes = [f"from comfyui_mova.mova_model.files.atomic_write import write_bytes\n"
             f"write_bytes({str(target)!r}, bytes([{65 + i}]) * 3_000_000, what='the shared file')\n"
             for i in range(3)]
    runs = start_together(codes, folder)
    data = target.read_bytes()
    result = Result("handled", f"exit codes {[r.returncode for r in runs]}; the file is whole: one writer's "
                               f"{len(data)} bytes")
    result.check(all(r.returncode == 0 for r in runs), "a writer failed: " + " ".join(r.stderr[-200:] for r in runs))
    return result.check(data in payloads and leftovers(folder) == [] and names(folder) == ["shared.bin"],
                        "a mixed file or a leftover")


def disk_full_cache(lab) -> Result:
    folder = write_toy_clips(lab.folder("cache_full") / "clips", lab.golden_cases)
    cache = folder.parent / "cache"
    child = python(f"""
        from pathlib import Path
        from comfyui_mova.nodes.training.dataset import build_dataset
        from training_fixtures import toy_encoders, toy_request
        cases = {lab.golden_cases!r}
        encoders = toy_encoders(Path({str(lab.golden_dir)!r}), cases)
        limit_file_size(4096)
        try:
            build_dataset(toy_request(Path({str(folder)!r}), cases), encoders, Path({str(cache)!r}))
        except OSError as exc:
            print(exc)
    """)
    result = Result("stopped" if child.returncode == 0 and child.stdout.strip() else "raw error", last_line(child))
    return result.check(names(cache) == [], "a file was left in the cache folder")


def disk_full_checkpoint(lab) -> Result:
    template, _ = four_steps(lab)
    base = lab.folder("ckpt_full")
    run = base / "run"
    run.mkdir()
    shutil.copy(template / "step_000002.safetensors", run)
    before = (run / "step_000002.safetensors").read_bytes()
    data = save_latent_dataset(toy(lab), base / "toy.safetensors")
    child = python(f"""
        import torch
        from pathlib import Path
        from comfyui_mova.mova_model.training.dataset import load_latent_dataset
        from comfyui_mova.mova_model.training.trainer import TrainSettings, train_lora
        from comfyui_mova.mova_model.training.checkpoints import TrainingCheckpoints
        from mova_testing import load_golden_towers
        torch.set_num_threads(1)
        dataset = load_latent_dataset({str(data)!r})
        with torch.inference_mode():
            towers = load_golden_towers(Path({str(lab.golden_dir)!r}))
        limit_file_size({len(before) + 16})
        try:
            train_lora(towers, dataset, TrainSettings(steps=4, checkpoint_every=2, **{FAST!r}),
                       TrainingCheckpoints({str(run)!r}))
        except OSError as exc:
            print(exc)
    """)
    result = Result("stopped" if child.returncode == 0 and child.stdout.strip() else "raw error", last_line(child))
    result.check(names(run) == ["step_000002.safetensors"], f"left {names(run)}")
    return result.check((run / "step_000002.safetensors").read_bytes() == before, "the previous checkpoint changed")


def cases() -> list[Case]:
    out = []
    add = lambda cls, key, text, expect, run, **kw: out.append(Case(cls, key, text, expect, run, **kw))  # noqa: E731
    add(4, "nan-latents", "a dataset whose clip 2 holds NaN audio latents, trained 2 steps", "stopped", nan_latents)
    add(4, "dataset-nan-clip", "MOVA Dataset on 2 clips + a clip whose float sound holds NaN samples", "refused",
        dataset_nan_clip)
    add(4, "nan-after-7", "finite for 7 steps, then NaN (a weight breaks); 10 steps, a checkpoint every 2",
        "stopped", nan_after_seven)
    add(4, "resume-after-nan", "the same run queued again after the stop", "handled", resume_after_nan)
    add(4, "nan-gradient", "gradients turn NaN at step 3 while the loss stays finite", "stopped", nan_gradient)
    add(4, "truncated-latest", "resume with the newest checkpoint cut to half its size", "handled",
        damaged_latest(cut))
    add(4, "garbage-latest", "resume with the newest checkpoint replaced by 23 bytes of text", "handled",
        damaged_latest(lambda p: p.write_bytes(b"not a checkpoint at all")))
    add(4, "no-history-read", "reading a checkpoint whose metadata has no 'history'", "refused",
        damaged_latest(lambda p: rewrite(p, lambda m: m.pop("history")), resume=False))
    add(4, "no-history-resume", "resume with the newest checkpoint's 'history' missing", "handled",
        damaged_latest(lambda p: rewrite(p, lambda m: m.pop("history"))))
    add(4, "step-not-number", "resume with the newest checkpoint's 'step' = 'four'", "handled",
        damaged_latest(lambda p: rewrite(p, lambda m: m.update(step="four"))))
    add(4, "nan-checkpoint", "resume with NaN in the newest checkpoint's LoRA weights", "handled",
        damaged_latest(lambda p: rewrite(p, change_tensors=lambda t: t[next(k for k in t if "lora_A" in k)].fill_(
            float("nan")))))
    add(4, "all-damaged", "resume where one checkpoint is cut short and the other lacks 'history'", "refused",
        all_damaged)
    add(4, "nan-lora-load", "MOVA LoRA Loader on a LoRA file holding NaN", "refused", nan_lora_file)
    add(5, "lora-full-safetensors", "MOVA Save LoRA, overwrite on, disk full (RLIMIT_FSIZE) over an old .safetensors",
        "stopped", disk_full_lora(official=False))
    add(5, "lora-full-official", "the same over an old official lora_weights.pt + lora_config.pt", "stopped",
        disk_full_lora(official=True))
    add(5, "config-only", "only lora_config.pt in the official folder, overwrite off", "refused",
        config_only(overwrite=False))
    add(5, "config-only-overwrite", "only lora_config.pt in the official folder, overwrite on", "handled",
        config_only(overwrite=True))
    add(5, "pair-cut-apart", "lora_config.pt from another save beside lora_weights.pt (a save cut off between them)",
        "refused", pair_cut_apart)
    add(5, "exists", "save a LoRA over an existing file with overwrite off", "refused", exists_without_overwrite)
    add(5, "link-at-target", "a link to a file outside models/loras planted where the LoRA goes, overwrite on",
        "handled", link_at_target)
    add(5, "read-only", "save as an ordinary user into a folder it may not write", "stopped", read_only_folder)
    add(5, "converter-full", "converter --overwrite with a disk too small for the new file", "stopped",
        disk_full_converter)
    add(5, "three-converters", "three converters into one folder at one moment (two with --overwrite)", "handled",
        three_converters)
    add(5, "three-writers", "three processes replacing one file at one moment", "handled", concurrent_writers)
    add(5, "cache-full", "MOVA Dataset with the disk full while writing its cache", "stopped", disk_full_cache)
    add(5, "checkpoint-full", "training with the disk full at the step-4 checkpoint", "stopped", disk_full_checkpoint)
    return out
