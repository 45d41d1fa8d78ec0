"""Runs the official MOVA code (a checkout given on the command line, never part of this project) on the CPU in
float32 for the LoRA parity checks of tests/unit/test_official_lora.py, and writes its results as reference files:

    python tests/support/tools/make_official_lora_refs.py /path/to/MOVA                      # the bundled golden set
    python tests/support/tools/make_official_lora_refs.py /path/to/MOVA --golden /tmp/golden_variant

The bundled golden set's references go to tests/support/data/official_lora/, any other set's to <golden>/official_lora/
(where the tests look for them). What runs (see tests/support/official_lora_cases.py for the cases):

- LoRA inference: ``MOVALoRA.from_pretrained_with_lora`` on a release folder made from the golden checkpoint,
  a LoRA in the official layout (lora_weights.pt + lora_config.pt) on the layers MOVA's LoRA pipeline chooses
  (attention and FFN), at LoRA scale 1 and 0.5, unmerged and merged (``merge_lora_weights`` of accelerate's
  lora_utils on each part: the pipeline's own merge_lora_weights and set_lora_scale raise AttributeError, see
  ``merge`` and ``set_scale``); the pipeline's own
  ``__call__`` samples with CFG from the golden condition and text states and the MOVA Sampler's seeded noise.
- one training step of each official trainer (``AccelerateTrainer`` with accelerate's lora_utils, and
  ``LowResourceTrainer`` with its lora_layers), on the even (high-noise) and the odd (low-noise) global step,
  from the same random LoRA: loss, LoRA gradients (before clipping), the LoRA after clipping + AdamW, and the
  timestep and noise the trainer drew; the official checkpoint files each trainer's save function writes.
- round trip: a LoRA trained by this pack (8-GPU layers) saved with ``mova_model.lora.save`` and sampled by
  the official LoRA pipeline.

What cannot run here is replaced, nothing else: the text encoder and the video VAE (not in the golden set) by
stand-ins that hand over the golden text states and latents (tests/support/tools/official_stub_models.py), the audio
VAE's encoder likewise in the training step; yunchang / audiotools / mmengine / torchvision by small stand-ins,
bitsandbytes and ``kernels`` made unavailable (tests/support/tools/official_stubs.py). Deviations from the official
configs, all for a float32 CPU comparison: float32 instead of bf16 (the low-resource trainer hard-codes bf16
for its LoRA layers: a subclass sets float32; MOVATrain's training forward casts to a hard-coded bf16: its
module sees ``torch.bfloat16`` as float32), torch AdamW (what the low-resource trainer falls back to without bitsandbytes), a
constant learning rate (no warmup), rank 1 for the step cases (small reference files).
Needs diffusers, transformers and accelerate (tests/support/tools/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "tests" / "support" / "tools")]
import mova_pack  # noqa: E402  (imports the pack as comfyui_mova)
import official_lora_cases as cases  # noqa: E402
from official_stubs import install_stubs  # noqa: E402

COMPONENT_FOLDERS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "scheduler")
LOW_RESOURCE_TARGETS = ["q", "k", "v", "o", "to_q", "to_k", "to_v", "to_out", "proj"]  # its config file's list
ACCELERATE_TARGETS = ["q", "k", "v", "o", "to_q", "to_k", "to_v", "proj"]              # its 8-GPU config's list


def make_release(golden: Path, folder: Path) -> Path:
    """A MOVA release folder: the golden components (linked) and stand-ins for the text encoder, tokenizer and
    video VAE, so that the official ``from_pretrained`` loads it as it loads the real release."""
    from official_stub_models import StubTextPart, StubVideoVAE
    ckpt = golden / "checkpoint"
    folder.mkdir(parents=True)
    for name in COMPONENT_FOLDERS:
        (folder / name).symlink_to(ckpt / name, target_is_directory=True)
    index = json.loads((ckpt / "model_index.json").read_text())
    for name, stub in (("video_vae", "StubVideoVAE"), ("text_encoder", "StubTextPart"), ("tokenizer", "StubTextPart")):
        index[name] = ["official_stub_models", stub]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    StubVideoVAE().save_pretrained(folder / "video_vae")
    StubTextPart("text_encoder").save_pretrained(folder / "text_encoder")
    StubTextPart("tokenizer").save_pretrained(folder / "tokenizer")
    return folder


def official_sample(pipeline, golden_cases, tensors, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """The official pipeline's ``__call__`` from the golden inputs; returns its final (video, audio) latents."""
    from PIL import Image
    c = golden_cases
    vae = pipeline.video_vae
    vae.queue, vae.decoded = [tensors["condition"][:, 4:].clone()], []
    contexts = {"positive": tensors["context_pos"], "negative": tensors["context_neg"]}
    pipeline._get_t5_prompt_embeds = lambda prompt, **_: contexts[prompt].clone()
    prepare_video, prepare_audio = pipeline.prepare_latents, pipeline.prepare_audio_latents

    def video_latents(*args, **kwargs):
        latents, condition = prepare_video(*args, **{**kwargs, "latents": noise[0].clone()})
        assert torch.equal(condition, tensors["condition"]), "the official I2V condition differs from the golden one"
        return latents, condition

    pipeline.prepare_latents = video_latents
    pipeline.prepare_audio_latents = lambda *a, **kw: prepare_audio(*a, **{**kw, "latents": noise[1].clone()})
    decoded_audio = []
    decode_audio = pipeline.audio_vae.decode
    pipeline.audio_vae.decode = lambda z: (decoded_audio.append(z.detach().clone()), decode_audio(z))[1]
    pipeline(prompt="positive", negative_prompt="negative", image=Image.new("RGB", (c["width"], c["height"])),
             height=c["height"], width=c["width"], num_frames=c["num_frames"], video_fps=c["fps"],
             num_inference_steps=c["sample_steps"], cfg_scale=cases.SAMPLE_CFG)
    return vae.decoded[-1], decoded_audio[-1]


def merge(pipeline) -> None:
    """Merge the LoRA into the weights. The pipeline's own merge_lora_weights fails (it walks named_children of
    the pipeline, which is no nn.Module): this merges each part with the same LoRALinear.merge_weights through
    lora_utils.merge_lora_weights, the module-level merge of the same official file."""
    from mova.engine.trainer.accelerate.lora_utils import merge_lora_weights
    try:
        pipeline.merge_lora_weights()
    except AttributeError:
        for component in cases.COMPONENTS:
            merge_lora_weights(getattr(pipeline, component))


def set_scale(pipeline, scale: float) -> None:
    """The LoRA scale. The pipeline's set_lora_scale fails like its merge (named_modules of the pipeline): this
    sets what it sets, scaling = alpha / rank · scale, on every LoRALinear of the parts."""
    from mova.engine.trainer.accelerate.lora_utils import LoRALinear
    try:
        pipeline.set_lora_scale(scale)
    except AttributeError:
        for component in cases.COMPONENTS:
            for module in getattr(pipeline, component).modules():
                if isinstance(module, LoRALinear):
                    module.scaling = module.alpha / module.rank * scale


def inference_cases(release: Path, work: Path, golden_cases, tensors, parts, noise) -> tuple[dict, dict]:
    from mova.diffusion.pipelines import MOVALoRA
    from mova.engine.trainer.accelerate.lora_utils import LoRALinear
    state = cases.random_lora(cases.module_shapes(parts, "accelerate"), cases.INFER_RANK, cases.INFER_SEED,
                              cases.INFER_GAIN)
    folder = cases.write_lora_folder(work / "lora_inference", state, cases.INFER_RANK, cases.INFER_ALPHA).parent
    out, info = {}, {}
    for scale in cases.INFER_SCALES:
        for merged in (False, True):
            pipeline = MOVALoRA.from_pretrained_with_lora(str(release), str(folder), device="cpu",
                                                          torch_dtype=torch.float32)
            info.setdefault("pipeline_layers", {
                component: [n for n, m in getattr(pipeline, component).named_modules() if isinstance(m, LoRALinear)]
                for component in cases.COMPONENTS})
            if scale != 1.0:
                set_scale(pipeline, scale)
            if merged:
                merge(pipeline)
            name = cases.case_name(scale, merged)
            out[f"{name}_video"], out[f"{name}_audio"] = official_sample(pipeline, golden_cases, tensors, noise)
            print(f"inference {name} done", file=sys.stderr)
    return out, info


def round_trip(release: Path, work: Path, golden_cases, tensors, towers, noise) -> dict:
    """A LoRA trained by this pack, saved by it in the official layout, sampled by the official LoRA pipeline."""
    from mova.diffusion.pipelines import MOVALoRA
    from comfyui_mova.mova_model.lora.load import lora_from_tensors
    from comfyui_mova.mova_model.lora.save import save_official_folder
    state = cases.train_round_trip_lora(towers, golden_cases, tensors)
    lora = lora_from_tensors(state, {"alpha": cases.ROUND_ALPHA}, "round trip")
    folder = work / "lora_round_trip"
    save_official_folder(lora, folder)
    pipeline = MOVALoRA.from_pretrained_with_lora(str(release), str(folder), device="cpu", torch_dtype=torch.float32)
    video, audio = official_sample(pipeline, golden_cases, tensors, noise)
    print("round trip done", file=sys.stderr)
    return {"round_trip_video": video, "round_trip_audio": audio}


def official_selections(release: Path) -> dict:
    """The layers each official trainer's injection chooses, per component, on fresh copies of the golden parts."""
    from mova.diffusion.models import WanAudioModel, WanModel
    from mova.diffusion.models.interactionv2 import DualTowerConditionalBridge
    from mova.engine.trainer.accelerate.lora_utils import inject_lora_to_model
    from mova.engine.trainer.low_resource.lora_layers import inject_lora_into_model
    classes = {"video_dit": WanModel, "video_dit_2": WanModel, "audio_dit": WanAudioModel,
               "dual_tower_bridge": DualTowerConditionalBridge}
    out = {"accelerate": {}, "low_resource": {}}
    for component, cls in classes.items():
        load = lambda: cls.from_pretrained(str(release / component), torch_dtype=torch.float32)  # noqa: E731
        out["accelerate"][component] = sorted(inject_lora_to_model(load(), rank=2, alpha=2.0,
                                                                   target_modules=ACCELERATE_TARGETS))
        out["low_resource"][component] = sorted(inject_lora_into_model(load(), rank=2, alpha=2.0,
                                                                       target_modules=LOW_RESOURCE_TARGETS)[1])
    return out


# ---- one training step of an official trainer ----

class _Float32Torch:
    """``torch`` for mova_train.py with ``bfloat16`` meaning float32: its training forward (inference_single_step)
    casts the latents to a hard-coded bf16, which a float32 comparison cannot use. Everything else is torch."""

    bfloat16 = torch.float32

    def __getattr__(self, name):
        return getattr(torch, name)


def _train_pipeline(release: Path, batch: dict):
    """MOVATrain as the training scripts build it (float32, gradient checkpointing with offload on, as both
    configs), its encoders handing over the batch's latents and text states."""
    import mova.diffusion.pipelines.mova_train as mova_train
    from mova.diffusion.pipelines.mova_train import MOVATrain_from_pretrained
    mova_train.torch = _Float32Torch()
    model = MOVATrain_from_pretrained(str(release), device="cpu", torch_dtype=torch.float32,
                                      use_gradient_checkpointing=True, use_gradient_checkpointing_offload=True)
    model.scheduler.set_timesteps(1000, training=True)
    model.video_vae.queue = [batch["video"].clone(), batch["condition"][:, 4:].clone()]
    model._get_t5_prompt_embeds = lambda caption, **_: batch["text"].clone()
    model.audio_vae.preprocess = lambda audio, sample_rate: audio
    audio = batch["audio"]
    model.audio_vae.encode = lambda x: (SimpleNamespace(mode=lambda: audio.clone()), None, None, None, None)
    record = {"add_noise": [], "loss": None, "fps": None}
    add_noise = model.scheduler.add_noise

    def spy_add_noise(original, noise, timestep):
        index = torch.argmin((model.scheduler.timesteps - timestep.cpu()).abs())
        record["add_noise"].append((original.clone(), noise.clone(), float(timestep), float(model.scheduler.sigmas[index])))
        return add_noise(original, noise, timestep)

    model.scheduler.add_noise = spy_add_noise
    training_step = model.training_step

    def spy_training_step(*args, **kwargs):
        record["fps"] = float(kwargs.get("video_fps", 24.0))  # the accelerate trainer passes none: 24.0
        out = training_step(*args, **kwargs)
        record["loss"] = {k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)}
        return out

    model.training_step = spy_training_step
    return model, record


def _pixel_batch(golden_cases, fps: float) -> list[dict]:
    c = golden_cases
    samples = int(c["audio_num_samples"])
    return [{"video": torch.zeros(1, 3, c["num_frames"], c["height"], c["width"]), "audio": torch.zeros(1, 1, samples),
             "first_frame": torch.zeros(1, 3, c["height"], c["width"]), "caption": ["positive"], "video_fps": fps}]


def _lora_params(model, low_resource: bool) -> dict[str, torch.nn.Parameter]:
    """Official key -> the trainer's LoRA parameter."""
    return {(k + ".weight" if low_resource else k): p for k, p in model.named_parameters() if "lora_" in k}


def official_step(trainer: str, step: str, release: Path, work: Path, golden_cases, batch: dict, initial: dict) -> tuple:
    from torch.utils.data import DataLoader
    model, record = _train_pipeline(release, batch)
    loader = DataLoader(_pixel_batch(golden_cases, golden_cases["fps"]), batch_size=None, collate_fn=lambda b: b)
    save = work / f"{trainer}_{step}"
    global_step = cases.STEPS[step]
    rank, alpha = cases.STEP_LORA[trainer]
    optimizer = {"type": "AdamW", "lr": cases.STEP_LR, "betas": (0.9, 0.999), "weight_decay": 0.01, "eps": 1e-8}
    if trainer == "accelerate":
        from mova.engine.trainer.accelerate.accelerate_trainer import AccelerateTrainer
        run = AccelerateTrainer(
            model, loader, optimizer, max_steps=global_step + 1, gradient_accumulation_steps=1, gradient_clip_norm=1.0,
            mixed_precision="no", use_fsdp=False, logger_type="none", save_interval=10 ** 6, save_path=str(save),
            lr_scheduler_type="constant", warmup_steps=0, train_modules=list(cases.COMPONENTS), use_lora=True,
            lora_config={"rank": rank, "alpha": alpha, "dropout": 0.0,
                         "target_modules": ACCELERATE_TARGETS})
    else:
        from mova.engine.trainer.low_resource.low_resource_trainer import LowResourceTrainer

        class Float32Trainer(LowResourceTrainer):
            """The low-resource trainer in float32 (it hard-codes bf16 for the LoRA layers and the batch)."""

            def _setup_model(self, model):
                self.dtype = torch.float32
                return super()._setup_model(model)

        cfg = _AttrDict(
            trainer={"max_steps": global_step + 1, "gradient_accumulation_steps": 1, "gradient_clip_norm": 1.0,
                     "warmup_steps": 0, "min_lr": 1e-6, "log_interval": 1, "logger_type": "none",
                     "save_interval": 10 ** 6, "save_path": str(save), "train_modules": list(cases.COMPONENTS),
                     "use_fp8_cpu_offload": False, "gradient_checkpointing": True,
                     "gradient_checkpointing_offload": True},
            lora={"rank": rank, "alpha": alpha, "dropout": 0.0,
                  "target_modules": LOW_RESOURCE_TARGETS},
            optimizer=optimizer, data={"batch_size": 1}, logger={})
        run = Float32Trainer(model, loader, cfg)
    params = _lora_params(run.model, trainer == "low_resource")
    assert set(params) == set(initial), sorted(set(params) ^ set(initial))[:6]
    grads = {}
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(initial[key])
            param.register_post_accumulate_grad_hook(lambda p, key=key: grads.__setitem__(key, p.grad.detach().clone()))
    run.global_step = global_step
    torch.manual_seed(cases.STEP_DRAW_SEED + global_step)
    run.train()
    after = {k: p.detach().clone() for k, p in params.items() if k in grads}
    assert all(torch.equal(p, initial[k]) for k, p in params.items() if k not in grads), "an untrained LoRA changed"
    (video, video_noise, timestep, sigma), (audio, audio_noise, audio_timestep, _) = record["add_noise"]
    assert torch.equal(video, batch["video"]) and torch.equal(audio, batch["audio"]) and timestep == audio_timestep
    out = {"loss": record["loss"]["loss"], "video_loss": record["loss"]["video_loss"],
           "audio_loss": record["loss"]["audio_loss"], "noise_video": video_noise, "noise_audio": audio_noise}
    out |= {f"grad.{k}": v for k, v in grads.items()} | {f"after.{k}": v for k, v in after.items()}
    meta = {"timestep": timestep, "sigma": sigma, "fps": record["fps"], "global_step": global_step,
            "trained": sorted(grads)}
    checkpoint = None
    if trainer == "low_resource":
        checkpoint = [save / "final" / "lora_weights.pt"]      # the trainer's own save (LoRAManager.save_lora)
    else:  # the 8-GPU recipe (use_fsdp=True) saves through save_lora_weights_fsdp from the full state dict
        from mova.engine.trainer.accelerate.lora_utils import save_lora_weights_fsdp
        folder = work / "accelerate_fsdp_save"
        save_lora_weights_fsdp(run.model.state_dict(), str(folder), list(cases.COMPONENTS))
        checkpoint = [folder / "lora_weights.pt", folder / "lora_config.pt"]
    print(f"{trainer} {step} step done: loss {float(out['loss']):.6g}, timestep {timestep:.4g}", file=sys.stderr)
    return out, meta, checkpoint


class _AttrDict(dict):
    """mmengine's Config as far as the low-resource trainer reads it (keys as attributes, nested)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if isinstance(value, dict):
                self[key] = _AttrDict(value)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _save(tensors: dict, path: Path, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"info": json.dumps(info, sort_keys=True)})
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="a checkout of OpenMOSS/MOVA")
    parser.add_argument("--golden", type=Path, default=None,
                        help="golden set (default: $MOVA_GOLDEN_DIR, else tests/support/data/golden/tiny)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: where the tests look)")
    args = parser.parse_args(argv)
    install_stubs(args.official)
    import torch.distributed as dist
    golden = mova_pack.golden_root() if args.golden is None else args.golden.resolve()
    if args.golden is not None and not (golden / "cases.json").exists() and (golden / "tiny" / "cases.json").exists():
        golden = golden / "tiny"
    out = args.out or cases.refs_dir(golden)
    golden_cases = json.loads((golden / "cases.json").read_text())
    tensors = load_file(str(golden / "cases.safetensors"))
    from mova_testing import load_golden_towers
    from comfyui_mova.mova_model.sampling.sampler import make_noise
    towers = load_golden_towers(golden)
    parts = dict(zip(cases.COMPONENTS, (*towers.video_experts, towers.audio_dit, towers.bridge)))
    noise = make_noise(tensors["noise_video"].shape, tensors["noise_audio"].shape, cases.SAMPLE_SEED)
    torch.set_grad_enabled(True)
    base = {"golden": cases.golden_fingerprint(golden), "official": str(args.official.resolve().name),
            "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="mova_official_") as tmp:
        work = Path(tmp)
        dist.init_process_group("gloo", init_method=f"file://{work / 'store'}", rank=0, world_size=1)
        try:
            release = make_release(golden, work / "release")
            selections = official_selections(release)
            inference, info = inference_cases(release, work, golden_cases, tensors, parts, noise)
            inference |= round_trip(release, work, golden_cases, tensors, towers, noise)
            inference |= {"noise_video": noise[0], "noise_audio": noise[1]}
            info |= {"selections": selections}
            _save(inference, out / "official_lora_inference.safetensors", base | info)
            batch = cases.step_inputs(tensors)
            for trainer, layers in cases.TRAINERS.items():
                shapes = cases.module_shapes(parts, layers)
                initial = cases.random_lora(shapes, cases.STEP_LORA[trainer][0], cases.STEP_SEED, cases.STEP_GAIN)
                step_out, step_info = {}, {}
                for step in cases.STEPS:
                    values, meta, checkpoint = official_step(trainer, step, release, work, golden_cases, batch, initial)
                    step_out |= {f"{step}.{k}": v for k, v in values.items()}
                    step_info[step] = meta
                    if step == "high":
                        folder = out / f"official_checkpoint_{trainer}"
                        shutil.rmtree(folder, ignore_errors=True)
                        folder.mkdir(parents=True)
                        for path in checkpoint:
                            shutil.copy(path, folder / path.name)
                _save(step_out, out / f"official_train_step_{trainer}.safetensors", base | {"steps": step_info})
        finally:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
