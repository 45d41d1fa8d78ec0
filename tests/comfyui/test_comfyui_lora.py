"""MOVA LoRAs in a real ComfyUI: ComfyUI applies the patches weight by weight (stacked, with per-part strengths,
exactly removed), on fp8 weights too, names what does not fit, and the LoRA workflow runs to an MP4.
"""

from __future__ import annotations

import pytest
import torch

from comfy_fixtures import (STRENGTHS, lora_delta, lora_node, loaders, original, probe_node, probed, probed_latents,
                            write_test_loras)
from comfy_integration import INTEGRATION, api_prompt, check_mp4, node_key, run_prompt

pytestmark = INTEGRATION


def test_lora_patches_stack_and_come_off(client, base, tmp_path):
    """A LoRA at strength s: W + s·(alpha/rank)·B·A on each part's weights (ComfyUI applying the patches);
    a second loader stacks; the loaders' own outputs keep the exact original weights."""
    factors = write_test_loras(tmp_path / "loras")  # the same seeded files the server has
    first = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    second = dict(zip(STRENGTHS, (0.75, 1.0, 1.0, 1.0)))
    prompt = loaders() | {
        "10": lora_node(None, "my_mova_lora/lora_weights.pt", first),
        "11": lora_node("10", "second.safetensors", second),
        "20": probe_node(["10", 0], ["10", 2]), "21": probe_node(["10", 1], ["10", 2]),
        "22": probe_node(["11", 0], ["11", 2]),
    }
    outputs = {}
    run_prompt(client, prompt, outputs)
    one = [("my_mova_lora/lora_weights.pt", first)]
    both = one + [("second.safetensors", second)]
    models = base / "models"
    for node, expert, applied in (("20", "video_dit", one), ("21", "video_dit_2", one), ("22", "video_dit", both)):
        for entry, (dtype, values) in probed(outputs, node).items():
            w = original(models, entry, expert)
            delta = lora_delta(factors, applied, entry, expert)
            assert dtype == "torch.float32"
            assert torch.allclose(values, w + delta, atol=1e-5), (node, entry)
    assert not torch.equal(probed(outputs, "22")["expert:blocks.0.self_attn.q.weight"][1],
                           probed(outputs, "20")["expert:blocks.0.self_attn.q.weight"][1])
    assert outputs["10"]["text"][0].startswith(
        "my_mova_lora/lora_weights.pt: high-noise expert 2 weights at 0.5, low-noise expert 1 weights at 1.5, "
        "audio DiT 1 weights at -1, bridge 1 weights at 2")
    # unplugged: the loaders' outputs, after the patched clones ran, hold the file's weights exactly
    outputs = {}
    run_prompt(client, loaders() | {"30": probe_node(["1", 0], ["3", 0]), "31": probe_node(["2", 0], ["3", 0])}, outputs)
    for node, expert in (("30", "video_dit"), ("31", "video_dit_2")):
        for entry, (_, values) in probed(outputs, node).items():
            assert torch.equal(values, original(models, entry, expert)), (node, entry)


def test_lora_on_fp8_weights(client, base, tmp_path):
    """fp8 experts: ComfyUI dequantises, adds the LoRA and requantises (stays fp8): W + s·(α/r)·B·A within fp8
    rounding. scaled_fp8 layers (ComfyUI up to v0.3.x) keep the weight's own scale, so the range cannot grow
    (|W'| <= max|W|); comfy_quant layers (v0.8.0+) take a new scale from the patched weight, so its largest value
    is kept within fp8 rounding (README says both). Unplugging is exact."""
    factors = write_test_loras(tmp_path / "loras")
    strengths = dict.fromkeys(STRENGTHS, 0.5)  # a small update, as real LoRAs make: little is clipped
    plain = loaders("fp8_e4m3fn") | {"30": probe_node(["1", 0], ["3", 0])}
    before, patched, after = {}, {}, {}
    run_prompt(client, plain, before)
    run_prompt(client, loaders("fp8_e4m3fn") | {"10": lora_node(None, "my_mova_lora/lora_weights.pt", strengths),
                                          "20": probe_node(["10", 0], ["10", 2])}, patched)
    run_prompt(client, plain, after)
    applied = [("my_mova_lora/lora_weights.pt", strengths)]
    for entry, (dtype, w0, layout) in probed(before, "30", layout=True).items():
        dtype1, w1, layout1 = probed(patched, "20", layout=True)[entry]
        assert dtype == dtype1 == "torch.float8_e4m3fn" and layout == layout1, entry
        delta = lora_delta(factors, applied, entry, "video_dit")
        want = w0 + delta
        if delta.abs().max() > 0:
            assert (w1 - want).norm() < 0.1 * want.norm(), entry  # fp8 rounding
            assert torch.cosine_similarity(w1 - w0, delta, dim=0) > 0.8, entry  # the change is the LoRA
        if layout == "scaled_fp8":
            assert w1.abs().max() <= w0.abs().max(), entry
        else:  # a new per-tensor scale: the largest value survives within an fp8 step (3 mantissa bits)
            assert abs(w1.abs().max() - want.abs().max()) <= want.abs().max() * 2 ** -3, entry
        assert torch.equal(probed(after, "30")[entry][1], w0), entry


def test_lora_problems_reach_the_user(client, base):
    """Keys that do not fit are named on the node and in the log; a LoRA fitting nothing stops the run."""
    from comfy_client import ServerError
    outputs = {}
    prompt = loaders() | {"10": lora_node(None, "partial.safetensors", dict.fromkeys(STRENGTHS, 1.0)),
                          "20": probe_node(["10", 0], ["10", 2])}
    run_prompt(client, prompt, outputs)
    text = outputs["10"]["text"][0]
    assert "high-noise expert 1 weights at 1" in text
    assert "1 LoRA weights do not fit this model and were skipped: video_dit.blocks.9.self_attn.q.weight" in text
    assert "1 keys are not MOVA LoRA weights and were skipped: vae.decoder.conv_in.lora_A.weight" in text
    assert "MOVA LoRA partial.safetensors: 1 keys do not fit" in (base / "server.log").read_text()
    prompt["10"]["inputs"]["lora_name"] = "mova_720p.safetensors"
    with pytest.raises(ServerError, match="fits none of the loaded MOVA weights.*trained on this MOVA release"):
        run_prompt(client, prompt)


def test_lora_workflow_end_to_end(client, base, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va_lora.json", seed=10, image_name=name)
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    check_mp4(client.download(videos[0], tmp_path / "lora.mp4"))
    key = node_key(prompt, "MovaLoraLoader")
    assert outputs[key]["text"][0].startswith("my_mova_lora/lora_weights.pt: high-noise expert 2 weights at 1")


def test_lora_equals_the_official_pipeline_on_the_golden_release(client, base, golden_dir, golden_cases):
    """The golden release with a LoRA in the official layout carrying FFN factors, through MOVA LoRA Loader and
    MOVA Sampler in ComfyUI (the golden text states and condition handed in by a test node): the final latents of
    MOVA's official LoRA pipeline (tests/support/data/official_lora, made by tests/support/tools/make_official_lora_refs.py) at
    LoRA scale 1 and 0.5, unmerged and merged, within 1e-5."""
    import official_lora_cases as cases
    from mova_testing import golden_scheduler, load_golden_towers, rel_l2
    from safetensors.torch import load_file

    from comfyui_mova.mova_model.sampling.latents import normalise_video_latents
    refs = cases.refs_dir(golden_dir)
    if not (refs / "official_lora_inference.safetensors").exists():
        pytest.skip(f"no official LoRA references for {golden_dir}: python tests/support/tools/make_official_lora_refs.py "
                    f"/path/to/MOVA --golden {golden_dir}")
    ref = load_file(str(refs / "official_lora_inference.safetensors"))
    towers = load_golden_towers(golden_dir)
    networks = dict(zip(cases.COMPONENTS, (*towers.video_experts, towers.audio_dit, towers.bridge)))
    state = cases.random_lora(cases.module_shapes(networks, "accelerate"), cases.INFER_RANK, cases.INFER_SEED,
                              cases.INFER_GAIN)
    cases.write_lora_folder(base / "models" / "loras" / "official_golden", state, cases.INFER_RANK, cases.INFER_ALPHA)
    link = base / "models" / "diffusion_models" / "MOVA-golden"
    link.symlink_to(golden_dir / "checkpoint", target_is_directory=True)
    c = golden_cases
    prompt = {
        "1": {"class_type": "MovaVideoExpertLoader", "inputs": {"model_name": "MOVA-golden/video_dit",
                                                                "weight_dtype": "default"}},
        "2": {"class_type": "MovaVideoExpertLoader", "inputs": {"model_name": "MOVA-golden/video_dit_2",
                                                                "weight_dtype": "default"}},
        "3": {"class_type": "MovaAudioTowerLoader", "inputs": {"audio_dit_name": "MOVA-golden/audio_dit",
                                                               "bridge_name": "MOVA-golden/dual_tower_bridge",
                                                               "weight_dtype": "default"}},
        "4": {"class_type": "TestGoldenMovaInputs", "inputs": {"golden_dir": str(golden_dir)}},
    }
    for i, scale in enumerate(cases.INFER_SCALES):
        loader, sampler, probe = str(10 + i), str(20 + i), str(30 + i)
        prompt[loader] = lora_node(None, "official_golden/lora_weights.pt", dict.fromkeys(STRENGTHS, scale))
        prompt[sampler] = {"class_type": "MovaSampler", "inputs": {
            "high_noise_expert": [loader, 0], "low_noise_expert": [loader, 1], "audio_tower": [loader, 2],
            "conditioning": ["4", 0], "latent": ["4", 1], "seed": cases.SAMPLE_SEED, "steps": c["sample_steps"],
            "cfg": cases.SAMPLE_CFG, "shift": golden_scheduler(c).shift, "boundary_ratio": c["boundary_ratio"]}}
        prompt[probe] = {"class_type": "TestMovaLatentProbe", "inputs": {"video": [sampler, 0], "audio": [sampler, 1]}}
    outputs = {}
    try:
        run_prompt(client, prompt, outputs)
    finally:
        link.unlink()
    errors = {}
    for i, scale in enumerate(cases.INFER_SCALES):
        report = outputs[str(10 + i)]["text"][0]
        assert "skipped" not in report, report  # every factor placed, the FFN ones too
        video, audio = probed_latents(outputs, str(30 + i))
        video = normalise_video_latents(video)
        for merged in (False, True):
            name = cases.case_name(scale, merged)
            errors[name] = (rel_l2(video, ref[f"{name}_video"]), rel_l2(audio, ref[f"{name}_audio"]))
    print("ComfyUI LoRA Loader + MOVA Sampler vs the official LoRA pipeline, relative L2 (video, audio):", errors)
    assert all(e <= 1e-5 for pair in errors.values() for e in pair), errors
