"""LoRAs equal the official MOVA code, against references the official code made (tests/support/tools/
make_official_lora_refs.py; tests/support/official_lora_cases.py has the cases):

- LoRA inference: MOVA LoRA Loader (its plan, applied as ComfyUI applies LoRA patches) + MOVA Sampler give the
  official LoRA pipeline's final latents, unmerged and merged, at LoRA scale 1 and 0.5, from the official folder
  (lora_weights.pt + lora_config.pt) and from our .safetensors; the LoRA carries FFN factors (8-GPU layers);
- the two official recipes choose the official trainers' layers;
- one training step of each official trainer (high- and low-noise): loss, LoRA gradients, LoRA after clip + AdamW;
- round trip: a LoRA trained and saved by the pack gives the official pipeline the pack's latents; the official
  trainers' checkpoint files load in the pack.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import official_lora_cases as cases
from mova_testing import golden_scheduler, load_golden_towers, rel_l2

from comfyui_mova.mova_model.sampling.latents import normalise_video_latents
from comfyui_mova.mova_model.lora.load import lora_from_tensors, read_lora
from comfyui_mova.mova_model.lora.recipes import select_layers
from comfyui_mova.mova_model.lora.save import save_lora_safetensors, save_official_folder
from comfyui_mova.mova_model.lora.adapters import attached, make_lora_set
from comfyui_mova.mova_model.sampling.sampler import make_noise
from comfyui_mova.mova_model.training.trainer import (HIGH, LOW, TrainSettings, boundary_index, expert_for_step,
                                              flow_matching_loss, make_optimizer, optimizer_step, rotation,
                                              training_grid)
from comfyui_mova.nodes.conditioning.condition import empty_joint_latent
from comfyui_mova.nodes.handles import MovaConditioning
from comfyui_mova.nodes.lora.patches import SLOTS, comfy_lora_weights, plan_lora
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.sampling.run import sample_joint

LATENT_TOL, LOSS_TOL, GRAD_TOL, STEP_TOL = 1e-5, 1e-5, 1e-4, 1e-4


@pytest.fixture(scope="module")
def refs(golden_dir):
    folder = cases.refs_dir(golden_dir)
    if not (folder / "official_lora_inference.safetensors").exists():
        pytest.skip(f"no official LoRA references for the golden set {golden_dir}: make them with "
                    f"python tests/support/tools/make_official_lora_refs.py /path/to/MOVA --golden {golden_dir}")
    for path in folder.glob("official_*.safetensors"):
        made_from = cases.read_meta(path)["golden"]
        assert made_from == cases.golden_fingerprint(golden_dir), (
            f"{path} was made from another golden set than {golden_dir}: run tests/support/tools/make_official_lora_refs.py")
    return folder


@pytest.fixture(scope="module")
def inference_refs(refs):
    path = refs / "official_lora_inference.safetensors"
    return load_file(str(path)), cases.read_meta(path)


def _parts(golden_dir):
    """Freshly loaded parts, as the MOVA loaders give them (float32)."""
    ckpt = golden_dir / "checkpoint"
    return dict(zip(SLOTS, (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
                            load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))))


def _networks(parts) -> dict:
    """LoRA component -> network of the loaded parts."""
    tower = parts["audio_tower"].model
    return {"video_dit": parts["high_noise_expert"].model, "video_dit_2": parts["low_noise_expert"].model,
            "audio_dit": tower.audio_dit, "dual_tower_bridge": tower.bridge}


def _load_lora(parts, path, strength: float):
    """MOVA LoRA Loader's plan for ``path`` at one strength for every part, applied as ComfyUI applies it
    (W += strength · alpha / rank · up @ down, float32). Returns the plan."""
    shapes = {slot: {k: tuple(v.shape) for k, v in part.model.state_dict().items()} for slot, part in parts.items()}
    plan = plan_lora(read_lora(path), shapes, dict.fromkeys(cases.COMPONENTS, strength))
    with torch.no_grad():
        for slot, entries in plan.patches.items():
            state = parts[slot].model.state_dict()
            for patches, s in entries:
                for key, patch in patches.items():
                    up, down, alpha = comfy_lora_weights(patch)[:3]
                    state[key] += s * (alpha / down.shape[0]) * (up @ down)
    return plan


def _sample(parts, golden_cases, golden_tensors):
    """The MOVA Sampler on the golden condition and text states: (normalised video latents, audio latents)."""
    c = golden_cases
    cond = MovaConditioning(golden_tensors["context_pos"], golden_tensors["context_neg"], golden_tensors["condition"],
                            c["width"], c["height"], c["num_frames"], c["fps"])
    from comfyui_mova.mova_model.configs import DACConfig, config_from_dict
    latent = empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"],
                                config_from_dict(DACConfig, c["audio_vae"]))
    video, audio = sample_joint(*parts.values(), cond, latent, seed=cases.SAMPLE_SEED, steps=c["sample_steps"],
                                cfg=cases.SAMPLE_CFG, shift=golden_scheduler(c).shift,
                                boundary_ratio=c["boundary_ratio"])
    return normalise_video_latents(video["samples"]), audio.samples


def test_recipes_choose_the_official_layers(golden_dir, inference_refs):
    """Our low-resource and 8-GPU selections = the layers the official trainers' injections chose; MOVA's LoRA
    pipeline chooses the 8-GPU ones (FFN included)."""
    _, meta = inference_refs
    networks = _networks(_parts(golden_dir))
    for layers, official in meta["selections"].items():
        for component, names in official.items():
            assert sorted(select_layers(networks[component], layers)) == names, (layers, component)
    assert meta["pipeline_layers"] == {c: select_layers(n, "accelerate") for c, n in networks.items()}
    assert any(".ffn." in n for n in meta["pipeline_layers"]["video_dit"])


@pytest.mark.parametrize("layout", ["official", "safetensors"])
@pytest.mark.parametrize("scale", cases.INFER_SCALES)
def test_lora_inference_equals_the_official_pipeline(golden_dir, golden_cases, golden_tensors, inference_refs,
                                                     tmp_path, layout, scale):
    ref, _ = inference_refs
    parts = _parts(golden_dir)
    shapes = cases.module_shapes(_networks(parts), "accelerate")
    state = cases.random_lora(shapes, cases.INFER_RANK, cases.INFER_SEED, cases.INFER_GAIN)
    path = cases.write_lora_folder(tmp_path / "official", state, cases.INFER_RANK, cases.INFER_ALPHA)
    if layout == "safetensors":
        lora = lora_from_tensors(state, {"rank": cases.INFER_RANK, "alpha": cases.INFER_ALPHA}, "test")
        path = save_lora_safetensors(lora, tmp_path / "lora.safetensors")
    noise = make_noise(ref["noise_video"].shape, ref["noise_audio"].shape, cases.SAMPLE_SEED)
    assert torch.equal(noise[0], ref["noise_video"]) and torch.equal(noise[1], ref["noise_audio"])
    plan = _load_lora(parts, path, scale)
    assert plan.misses == [] and plan.unknown == [], plan.report()  # every factor placed, the FFN ones too
    assert plan.applied == {c: len(shapes[c]) for c in cases.COMPONENTS}
    video, audio = _sample(parts, golden_cases, golden_tensors)
    errors = {}
    for merged in (False, True):
        name = cases.case_name(scale, merged)
        errors[name] = (rel_l2(video, ref[f"{name}_video"]), rel_l2(audio, ref[f"{name}_audio"]))
    print(f"LoRA inference ({layout}), relative L2 (video, audio):", errors)
    assert all(e <= LATENT_TOL for pair in errors.values() for e in pair), errors
    other = cases.case_name(cases.INFER_SCALES[1] if scale == cases.INFER_SCALES[0] else cases.INFER_SCALES[0], False)
    assert rel_l2(video, ref[f"{other}_video"]) > 100 * LATENT_TOL  # the LoRA's scale shows in the latents


def _step_case(refs, trainer: str, step: str):
    path = refs / f"official_train_step_{trainer}.safetensors"
    tensors = load_file(str(path))
    prefix = step + "."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, cases.read_meta(path)["steps"][step]


def _flat(tensors: dict, keys) -> torch.Tensor:
    return torch.cat([tensors[k].flatten() for k in keys])


@pytest.mark.parametrize("step", list(cases.STEPS))
@pytest.mark.parametrize("trainer", list(cases.TRAINERS))
def test_training_step_equals_the_official_trainer(golden_dir, golden_cases, golden_tensors, refs, trainer, step):
    """MOVA Train LoRA's step (its adapters, flow-matching loss, clip + AdamW) in the trainer's recipe, on the
    batch, timestep and noise the official trainer drew, from the same LoRA."""
    ref, meta = _step_case(refs, trainer, step)
    towers = load_golden_towers(golden_dir)
    networks = dict(zip(cases.COMPONENTS, (*towers.video_experts, towers.audio_dit, towers.bridge)))
    layers, (rank, alpha) = cases.TRAINERS[trainer], cases.STEP_LORA[trainer]
    initial = cases.random_lora(cases.module_shapes(networks, layers), rank, cases.STEP_SEED, cases.STEP_GAIN)
    settings = TrainSettings(rank=rank, alpha=alpha, learning_rate=cases.STEP_LR, layers=layers,
                             boundary_ratio=golden_cases["boundary_ratio"])
    expert = expert_for_step(meta["global_step"], rotation(settings.parts))
    assert expert == (HIGH if step == "high" else LOW)
    scheduler = golden_scheduler(golden_cases)
    sigmas, timesteps = training_grid(scheduler)
    index = int(torch.argmin((timesteps - meta["timestep"]).abs()))
    assert abs(float(timesteps[index]) - meta["timestep"]) < 1e-3 and abs(float(sigmas[index]) - meta["sigma"]) < 1e-6
    n_high = boundary_index(timesteps, settings.boundary_ratio, scheduler.num_train_timesteps)
    assert (index < n_high) == (expert == HIGH)  # the official draw lies in this expert's range
    lora = make_lora_set(networks, rank, alpha, seed=0, layers=layers)
    lora.load_state_dict(initial)
    optimizer = make_optimizer(lora, settings)
    batch = cases.step_inputs(golden_tensors)
    with torch.enable_grad(), attached(lora, networks):
        video_loss, audio_loss = flow_matching_loss(
            towers.video_experts[expert], towers, (batch["video"], batch["condition"], batch["audio"], batch["text"]),
            float(sigmas[index]), float(timesteps[index]), None, meta["fps"], torch.float32, "cpu",
            checkpoint=True, offload=True, noise=(ref["noise_video"], ref["noise_audio"]))
        (video_loss + audio_loss).backward()
    params = dict(lora.named_parameters())
    grads = {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}
    assert sorted(grads) == meta["trained"]
    optimizer_step(lora.parameters(), optimizer, settings)
    after = {k: params[k].detach() for k in grads}
    loss = {"loss": (video_loss + audio_loss).item(), "video_loss": video_loss.item(), "audio_loss": audio_loss.item()}
    errors = {k: abs(v - ref[k].item()) / abs(ref[k].item()) for k, v in loss.items()}
    ref_grads = {k[len("grad."):]: v for k, v in ref.items() if k.startswith("grad.")}
    ref_after = {k[len("after."):]: v for k, v in ref.items() if k.startswith("after.")}
    errors["gradients"] = rel_l2(_flat(grads, meta["trained"]), _flat(ref_grads, meta["trained"]))
    errors["lora_after_step"] = rel_l2(_flat(after, meta["trained"]), _flat(ref_after, meta["trained"]))
    update = {k: after[k] - initial[k] for k in grads}
    errors["update"] = rel_l2(_flat(update, meta["trained"]),
                              _flat({k: ref_after[k] - initial[k] for k in grads}, meta["trained"]))
    print(f"training step {trainer} {step} (t={meta['timestep']:.1f}), relative errors:", errors)
    assert max(errors[k] for k in loss) <= LOSS_TOL, errors
    assert errors["gradients"] <= GRAD_TOL and errors["lora_after_step"] <= STEP_TOL, errors
    assert errors["update"] <= 1e-3, errors  # the step itself, not only the (much larger) weights
    assert not any(torch.equal(after[k], initial[k]) for k in grads)


@pytest.mark.parametrize("trainer", list(cases.TRAINERS))
def test_official_trainer_checkpoint_loads_in_the_pack(golden_dir, refs, trainer):
    """The file each official trainer's save wrote after its high-noise step: the LoRA Loader reads the trained
    factors exactly, at the trained scale, and places every one of them."""
    ref, meta = _step_case(refs, trainer, "high")
    folder = refs / f"official_checkpoint_{trainer}"
    lora = read_lora(folder / "lora_weights.pt")
    parts = _parts(golden_dir)
    networks = _networks(parts)
    layers, (rank, alpha) = cases.TRAINERS[trainer], cases.STEP_LORA[trainer]
    shapes = cases.module_shapes(networks, layers)
    expected = cases.random_lora(shapes, rank, cases.STEP_SEED, cases.STEP_GAIN)
    expected |= {k[len("after."):]: v for k, v in ref.items() if k.startswith("after.")}
    assert lora.unknown_keys == []
    for component in cases.COMPONENTS:
        assert sorted(lora.patches[component]) == sorted(f"{n}.weight" for n, _, _ in shapes[component])
        for key, patch in lora.patches[component].items():
            module = f"{component}.{key[:-len('.weight')]}"
            assert torch.equal(patch.down, expected[f"{module}.lora_A.weight"]), module
            assert torch.equal(patch.up, expected[f"{module}.lora_B.weight"]), module
            assert patch.scale == alpha / rank
    shapes_by_slot = {slot: {k: tuple(v.shape) for k, v in p.model.state_dict().items()} for slot, p in parts.items()}
    plan = plan_lora(lora, shapes_by_slot, dict.fromkeys(cases.COMPONENTS, 1.0))
    assert plan.misses == [] and plan.unknown == []


def test_round_trip_pack_lora_in_the_official_pipeline(golden_dir, golden_cases, golden_tensors, inference_refs,
                                                       tmp_path):
    """A LoRA trained by the pack (8-GPU layers) and saved as the official folder: the official LoRA pipeline gave
    the latents the pack gives with it."""
    ref, _ = inference_refs
    state = cases.train_round_trip_lora(load_golden_towers(golden_dir), golden_cases, golden_tensors)
    weights = save_official_folder(lora_from_tensors(state, {"alpha": cases.ROUND_ALPHA}, "round trip"), tmp_path)
    parts = _parts(golden_dir)
    plain = _sample(parts, golden_cases, golden_tensors)
    plan = _load_lora(parts, weights, 1.0)
    assert plan.misses == [] and plan.unknown == []
    video, audio = _sample(parts, golden_cases, golden_tensors)
    errors = (rel_l2(video, ref["round_trip_video"]), rel_l2(audio, ref["round_trip_audio"]))
    print("round trip, relative L2 (video, audio):", errors, "LoRA effect:",
          (rel_l2(video, plain[0]), rel_l2(audio, plain[1])))
    assert max(errors) <= LATENT_TOL, errors
    assert rel_l2(video, plain[0]) > 100 * LATENT_TOL  # the trained LoRA changes the result
