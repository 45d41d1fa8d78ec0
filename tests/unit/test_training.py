"""LoRA training on the golden towers with a two-clip toy dataset made from real clips: the loss falls, the
official expert/timestep alternation, the official key layout, checkpoints, resume and cancel, frozen
weights in their loaded dtype, and the LoRA acting as W + (alpha/rank)·B·A."""

import copy

import pytest
import torch

from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.configs import SchedulerConfig
from comfyui_mova.mova_model.sampling.joint import joint_forward
from comfyui_mova.mova_model.lora.load import lora_from_tensors, merge_lora_
from comfyui_mova.mova_model.lora.adapters import attached, lora_targets, make_lora_set
from comfyui_mova.mova_model.sampling.sampler import MovaTowers
from comfyui_mova.mova_model.sampling.scheduler import shifted_sigmas
from comfyui_mova.mova_model.training.trainer import (HIGH, LOW, TrainSettings, boundary_index, expert_for_step,
                                              flow_matching_loss, prepare_networks, rotation, sample_timestep,
                                              step_generator, train_lora, training_grid)
from comfyui_mova.mova_model.training.checkpoints import TrainingCheckpoints, read_checkpoint
from mova_testing import load_golden_towers
from training_fixtures import build_toy_dataset

FAST = dict(gradient_checkpointing=False, learning_rate=1e-2, rank=4, alpha=4.0, seed=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The golden towers are tiny: one thread runs them faster than several (and leaves the cores alone)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(tmp_path_factory, golden_dir, golden_cases):
    with torch.inference_mode():  # as ComfyUI makes everything: the trainer must cope with inference tensors
        dataset, _, _ = build_toy_dataset(tmp_path_factory.mktemp("toy"), golden_dir, golden_cases)
    return dataset


def fresh_towers(golden_dir, dtype=torch.float32):
    with torch.inference_mode():
        return load_golden_towers(golden_dir, dtype=dtype)


@pytest.fixture(scope="module")
def straight_run(golden_dir, toy):
    """4 steps without interruption: the reference curve for resume and cancel."""
    return train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=4, **FAST))


def _eval_loss(towers, dataset, points):
    """Mean loss over fixed (clip, expert, grid index, noise seed) points, no gradients."""
    sigmas, timesteps = training_grid(SchedulerConfig())
    total = 0.0
    with torch.no_grad():
        for clip, expert, index, seed in points:
            v, a = flow_matching_loss(towers.video_experts[expert], towers, dataset.batch([clip]),
                                      float(sigmas[index]), float(timesteps[index]),
                                      torch.Generator().manual_seed(seed), dataset.fps, torch.float32, "cpu", False)
            total += float(v + a)
    return total / len(points)


def test_loss_falls_when_overfitting_two_clips(golden_dir, toy):
    towers = fresh_towers(golden_dir)
    _, timesteps = training_grid(SchedulerConfig())
    n_high = boundary_index(timesteps, 0.9, 1000)
    points = [(c, e, i, s) for c in range(len(toy)) for e, i in ((HIGH, n_high // 2), (LOW, (n_high + 1000) // 2))
              for s in (0, 1)]
    before = _eval_loss(towers, toy, points)
    result = train_lora(towers, toy, TrainSettings(steps=12, **FAST))
    lora = make_lora_set(_parts(towers), 4, 4.0, 0)
    lora.load_state_dict(result.state)
    with attached(lora, _parts(towers)):
        after = _eval_loss(towers, toy, points)
    assert after < 0.9 * before, (before, after)
    for expert in (HIGH, LOW):  # and the recorded curve of each expert goes down too
        curve = [r.loss for r in result.history if r.expert == expert]
        assert sum(curve[-3:]) < sum(curve[:3]), curve


def _parts(towers):
    return {"video_dit": towers.video_experts[0], "video_dit_2": towers.video_experts[1],
            "audio_dit": towers.audio_dit, "dual_tower_bridge": towers.bridge}


def test_expert_and_timestep_alternate_as_the_official_trainer(straight_run):
    """Even steps: the high-noise expert at a grid timestep >= boundary; odd steps: the low-noise one below."""
    sigmas, timesteps = training_grid(SchedulerConfig())
    assert [r.expert for r in straight_run.history] == [HIGH, LOW, HIGH, LOW]
    for record in straight_run.history:
        assert record.timestep in timesteps.tolist()
        assert (record.timestep >= 900) == (record.expert == HIGH)
    # the grid is the scheduler's set_timesteps(1000, training=True): shift 5 over linspace(1, 0, 1001)[:-1]
    assert torch.equal(sigmas, shifted_sigmas(1000, 5.0, SchedulerConfig()))
    n_high = boundary_index(timesteps, 0.9, 1000)
    assert timesteps[n_high - 1] >= 900 > timesteps[n_high]
    draws = {e: [sample_timestep(e, n_high, 1000, step_generator(0, "t", i)) for i in range(200)] for e in (HIGH, LOW)}
    assert max(draws[HIGH]) < n_high <= min(draws[LOW]) and max(draws[LOW]) < 1000
    assert len(set(draws[HIGH])) > 50 and len(set(draws[LOW])) > 50  # spread over the grid


def test_rotation_of_experts():
    assert rotation(("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")) == (HIGH, LOW)
    assert rotation(("audio_dit",)) == (HIGH, LOW)          # shared parts learn at every noise level
    assert rotation(("video_dit_2",)) == (LOW,)
    assert [expert_for_step(s, (HIGH, LOW)) for s in range(4)] == [HIGH, LOW, HIGH, LOW]
    assert [expert_for_step(s, (LOW,)) for s in range(3)] == [LOW, LOW, LOW]
    problems = TrainSettings(parts=(), rank=0).problems()
    assert any("rank must be at least 1" in p for p in problems) and any("no part is chosen" in p for p in problems)


def test_lora_targets_and_key_layout_match_the_official_trainer(golden_dir, golden_cases, straight_run):
    """Names pinned from the official code (OpenMOSS/MOVA, checked at development time): the low-resource
    trainer's injection (target_modules q, k, v, o, to_q, to_k, to_v, to_out, proj) picks exactly these
    Linear layers of WanModel / WanAudioModel / DualTowerConditionalBridge (24, 24, 16 and 16 on the golden
    towers), and MOVA's inference script loads our official folder and merges to the same weights (max
    difference 0.0). Keys follow its accelerate trainer: <part>.<module>.lora_A.weight [r,in], lora_B [out,r]."""
    video_layers, audio_layers = golden_cases["video_dit"]["num_layers"], golden_cases["audio_dit"]["num_layers"]
    bridge = golden_cases["dual_tower_bridge"]
    bridge_layers = min(bridge["visual_layers"], bridge["audio_layers"])
    expected = set()
    for part, layers in (("video_dit", video_layers), ("video_dit_2", video_layers), ("audio_dit", audio_layers)):
        expected |= {f"{part}.blocks.{n}.{attn}.{p}" for n in range(layers) for attn in ("self_attn", "cross_attn")
                     for p in "qkvo"}
    expected |= {f"dual_tower_bridge.{d}_conditioners.{n}.inner.{p}" for d in ("audio_to_video", "video_to_audio")
                 for n in range(bridge_layers) for p in "qkvo"}
    keys = set(straight_run.state)
    assert keys == {f"{m}.lora_{x}.weight" for m in expected for x in "AB"}
    towers = fresh_towers(golden_dir)
    for part, model in _parts(towers).items():
        assert {f"{part}.{n}" for n in lora_targets(model)} == {m for m in expected if m.startswith(part + ".")}
        for name in lora_targets(model):
            layer = model.get_submodule(name)
            a = straight_run.state[f"{part}.{name}.lora_A.weight"]
            b = straight_run.state[f"{part}.{name}.lora_B.weight"]
            assert a.shape == (4, layer.in_features) and b.shape == (layer.out_features, 4)
            assert a.dtype == b.dtype == torch.float32


def test_lora_changes_the_output_as_w_plus_scaled_ba(golden_dir, toy, straight_run):
    """The trained LoRA attached as hooks equals the merged weights W + (alpha/rank)·B·A; removing the hooks
    gives the original output back bit for bit."""
    towers = fresh_towers(golden_dir)
    video, condition, audio, text = toy.batch([0])
    t = torch.tensor([700.0])

    def run(tw):
        return joint_forward(tw.video_experts[1], tw.audio_dit, tw.bridge, torch.cat([video, condition], 1),
                             audio, text, t, t, toy.fps)

    plain = run(towers)
    lora = make_lora_set(_parts(towers), 4, 4.0, 0)
    lora.load_state_dict(straight_run.state)
    with torch.no_grad(), attached(lora, _parts(towers)):
        hooked = run(towers)
    assert torch.equal(run(towers).video, plain.video) and torch.equal(run(towers).audio, plain.audio)
    merged = copy.deepcopy(towers)
    patches = lora_from_tensors(straight_run.state, {"alpha": 4.0}, "trained").patches
    for part, model in _parts(merged).items():
        assert merge_lora_(model, patches[part], 1.0) == []
    with torch.no_grad():
        out = run(merged)
    assert not torch.allclose(hooked.video, plain.video, atol=1e-4)
    assert torch.allclose(out.video, hooked.video, atol=1e-5) and torch.allclose(out.audio, hooked.audio, atol=1e-5)


def test_checkpointing_and_offload_give_the_same_loss_and_gradients(golden_dir, toy):
    towers = fresh_towers(golden_dir)
    prepare_networks(towers)  # what train_lora does first: frozen, and usable by autograd
    lora = make_lora_set(_parts(towers), 4, 4.0, 0)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.05)
    results = []
    with attached(lora, _parts(towers)):
        for checkpoint, offload in ((False, False), (True, False), (True, True)):
            for p in lora.parameters():
                p.grad = None
            v, a = flow_matching_loss(towers.video_experts[0], towers, toy.batch([0, 1]), 0.95, 950.0,
                                      torch.Generator().manual_seed(0), toy.fps, torch.float32, "cpu", checkpoint,
                                      offload)
            (v + a).backward()
            results.append(((v + a).item(), [p.grad for p in lora.parameters() if p.grad is not None]))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        assert len(grads) == len(results[0][1]) > 0
        for g0, g1 in zip(results[0][1], grads):
            assert torch.allclose(g0, g1, atol=1e-6)


def test_resume_continues_the_same_loss_curve(golden_dir, toy, straight_run, tmp_path):
    settings = TrainSettings(steps=2, checkpoint_every=2, **FAST)
    first = train_lora(fresh_towers(golden_dir), toy, settings, TrainingCheckpoints(tmp_path / "run"))
    assert first.checkpoint.endswith("step_000002.safetensors")
    resumed = train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=4, checkpoint_every=2, **FAST),
                         TrainingCheckpoints(tmp_path / "run"))
    assert resumed.resumed_from == 2
    assert [r.loss for r in resumed.history] == [r.loss for r in straight_run.history]
    for key, value in straight_run.state.items():
        assert torch.equal(resumed.state[key], value), key
    assert [p.name for _, p in TrainingCheckpoints(tmp_path / "run").files()] == \
        ["step_000002.safetensors", "step_000004.safetensors"]
    # other settings or data are refused with the fix; a fresh run never overwrites an earlier one
    with pytest.raises(ValueError, match=r"rank 4 \(now 8\).*another run name"):
        train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=6, **(FAST | {"rank": 8})),
                   TrainingCheckpoints(tmp_path / "run"))
    with pytest.raises(FileExistsError, match="already holds a training run.*switch resume on"):
        train_lora(fresh_towers(golden_dir), toy, settings, TrainingCheckpoints(tmp_path / "run", allow_resume=False))


def test_cancel_leaves_the_last_checkpoint_usable(golden_dir, toy, straight_run, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel_at_3(record, total):
        if record.step == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=4, checkpoint_every=2, **FAST),
                   TrainingCheckpoints(tmp_path / "run"), on_step=cancel_at_3)
    checkpoints = TrainingCheckpoints(tmp_path / "run")
    assert [p.name for _, p in checkpoints.files()] == ["step_000002.safetensors"]
    assert not list((tmp_path / "run").glob("*.tmp"))
    meta, tensors = read_checkpoint(checkpoints.latest())
    assert meta["step"] == "2" and len(meta["history"]) == 2
    resumed = train_lora(fresh_towers(golden_dir), toy, TrainSettings(steps=4, checkpoint_every=2, **FAST), checkpoints)
    assert [r.loss for r in resumed.history] == [r.loss for r in straight_run.history]


def test_only_chosen_parts_train_and_frozen_weights_stay(golden_dir, toy):
    towers = fresh_towers(golden_dir)
    before = {part: copy.deepcopy(m.state_dict()) for part, m in _parts(towers).items()}
    result = train_lora(towers, toy, TrainSettings(steps=2, parts=("video_dit_2",), **FAST))
    assert [r.expert for r in result.history] == [LOW, LOW]
    assert {k.split(".")[0] for k in result.state} == {"video_dit_2"}
    assert any(v.abs().max() > 0 for k, v in result.state.items() if "lora_B" in k)
    for part, model in _parts(towers).items():
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[part][key]), (part, key)
        assert not any(p.requires_grad for p in model.parameters())


def test_fp8_frozen_weights_train_a_float32_lora(golden_dir, toy):
    towers = MovaTowers(video_experts=[
        loading.load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float8_e4m3fn, component=c)
        for c in ("video_dit", "video_dit_2")],
        audio_dit=loading.load_component(golden_dir / "checkpoint", "audio_dit", dtype=torch.float8_e4m3fn),
        bridge=loading.load_component(golden_dir / "checkpoint", "dual_tower_bridge", dtype=torch.float8_e4m3fn))
    q = towers.video_experts[0].blocks[0].self_attn.q
    stored = q.weight.clone()
    result = train_lora(towers, toy, TrainSettings(steps=2, **FAST))
    assert q.weight.dtype == torch.float8_e4m3fn and torch.equal(q.weight, stored)
    assert all(v.dtype == torch.float32 for v in result.state.values())
    assert all(r.loss == r.loss for r in result.history)  # finite
