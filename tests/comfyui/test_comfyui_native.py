"""The native path in a real ComfyUI: SamplerCustomAdvanced with stock noise and samplers, the MOVA Guider and
MOVA Scheduler, on the joint latent in core's audio-video form (ComfyUI 0.8 and later: comfy/nested_tensor.py);
before 0.8 the guider is refused with what to do.
"""

from __future__ import annotations

import io

import pytest
import torch

from comfy_fixtures import probed_latents
from comfy_integration import (FPS, FRAMES, INTEGRATION, NATIVE, STEPS, api_prompt, cancel_during, check_mp4,
                               needs_native, node_key, refusal, run_prompt, saved_latent)

pytestmark = INTEGRATION




def _native(client, seed: int, sampler: str = "euler", scheduler: str = "official", **params) -> dict:
    """The native workflow as an API prompt at the test size, with ``sampler`` and ``scheduler``."""
    prompt = api_prompt(client, "mova_i2va_native.json", seed=seed, image_name="start.png", **params)
    prompt[node_key(prompt, "KSamplerSelect")]["inputs"]["sampler_name"] = sampler
    prompt[node_key(prompt, "MovaScheduler")]["inputs"]["scheduler"] = scheduler
    return prompt


@needs_native
def test_native_euler_official_equals_mova_sampler(client, base, tmp_path):
    """Euler + MOVA Scheduler (official) + stock Random Noise + MOVA Guider: the MOVA Sampler's latents (float32, the
    tiny release) from the same conditioning and seed; the native workflow ends in an MP4 with audio, with progress."""
    from mova_testing import rel_l2
    prompt = _native(client, seed=31)
    cond, guider = node_key(prompt, "MovaConditioning"), node_key(prompt, "MovaGuider")
    split = node_key(prompt, "MovaSeparateAVLatent")
    inputs = prompt[guider]["inputs"]
    prompt |= {
        "50": {"class_type": "MovaSampler", "inputs": {
            k: inputs[k] for k in ("high_noise_expert", "low_noise_expert", "audio_tower", "conditioning", "cfg",
                                   "shift", "boundary_ratio")} | {"latent": [cond, 1], "seed": 31, "steps": STEPS}},
        "51": {"class_type": "TestMovaLatentProbe", "inputs": {"video": ["50", 0], "audio": ["50", 1]}},
        "52": {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}},
    }
    outputs = {}
    videos, progress = run_prompt(client, prompt, outputs)
    reference, native = probed_latents(outputs, "51"), probed_latents(outputs, "52")
    for ref, out in zip(reference, native):
        assert ref.shape == out.shape and rel_l2(out, ref) <= 1e-5, rel_l2(out, ref)
    print("native vs MOVA Sampler, relative L2 (video, audio):", [rel_l2(o, r) for r, o in zip(reference, native)])
    steps = [value for kind, value in progress if kind == "SamplerCustomAdvanced"]
    assert steps[-1] == STEPS and steps == sorted(steps)
    assert "MOVA Guider: 4 steps, the official timesteps" in (base / "server.log").read_text()
    check_mp4(client.download(videos[0], tmp_path / "native.mp4"))


@needs_native
def test_native_parity_on_the_golden_release(client, base, golden_dir, golden_cases):
    """The same on the golden tiny release at the golden case's size, steps and seed: ComfyUI's euler, MOVA
    Scheduler (official), Random Noise and the MOVA Guider give the MOVA Sampler's latents (float32, <= 1e-5)."""
    from mova_testing import rel_l2
    links = [base / "models" / folder / "MOVA-golden" for folder in ("diffusion_models", "vae")]
    for link in links:
        link.symlink_to(golden_dir / "checkpoint", target_is_directory=True)
    try:
        c = golden_cases
        prompt = _native(client, seed=c["seed"])
        for kind in ("SaveVideo", "PreviewAudio", "CreateVideo", "VAEDecode", "MovaAudioDecode"):
            del prompt[node_key(prompt, kind)]
        for node in prompt.values():
            inputs = node["inputs"]
            for key in ("model_name", "audio_dit_name", "bridge_name", "vae_name"):
                if isinstance(inputs.get(key), str) and inputs[key].startswith("MOVA-360p/"):
                    inputs[key] = inputs[key].replace("MOVA-360p/", "MOVA-golden/")
        cond, guider = node_key(prompt, "MovaConditioning"), node_key(prompt, "MovaGuider")
        prompt[cond]["inputs"].update(width=c["width"], height=c["height"], length=c["num_frames"], fps=c["fps"])
        prompt[guider]["inputs"]["boundary_ratio"] = c["boundary_ratio"]
        prompt[node_key(prompt, "MovaScheduler")]["inputs"]["steps"] = c["sample_steps"]
        split, inputs = node_key(prompt, "MovaSeparateAVLatent"), prompt[guider]["inputs"]
        prompt |= {
            "80": {"class_type": "MovaSampler", "inputs": {
                k: inputs[k] for k in ("high_noise_expert", "low_noise_expert", "audio_tower", "conditioning", "cfg",
                                       "shift", "boundary_ratio")}
                | {"latent": [cond, 1], "seed": c["seed"], "steps": c["sample_steps"]}},
            "81": {"class_type": "TestMovaLatentProbe", "inputs": {"video": ["80", 0], "audio": ["80", 1]}},
            "82": {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}},
        }
        outputs = {}
        run_prompt(client, prompt, outputs)
    finally:
        for link in links:
            link.unlink()
    from comfyui_mova.mova_model.sampling.sizes import VAE_SPACE, VAE_TIME
    reference, native = probed_latents(outputs, "81"), probed_latents(outputs, "82")
    assert reference[0].shape[2:] == ((c["num_frames"] - 1) // VAE_TIME + 1, c["height"] // VAE_SPACE,
                                      c["width"] // VAE_SPACE)
    assert reference[1].shape[-1] == c["audio_latent_length"]
    for ref, out in zip(reference, native):
        assert ref.shape == out.shape and rel_l2(out, ref) <= 1e-5, rel_l2(out, ref)
    print("golden: native vs MOVA Sampler, relative L2 (video, audio):",
          [rel_l2(o, r) for r, o in zip(reference, native)])


def _check_previews(previews: list[bytes]) -> None:
    """The sampler sent live previews (``--preview-method auto``): ComfyUI's binary messages of event 1 (a preview
    image: 4 bytes event, 4 bytes format, the image), each a picture PIL opens, as for the stock samplers."""
    from PIL import Image
    images = [p for p in previews if int.from_bytes(p[:4], "big") == 1]
    assert images, f"no preview among {len(previews)} binary messages"
    for payload in images:
        with Image.open(io.BytesIO(payload[8:])) as picture:
            assert picture.size[0] > 0 and picture.size[1] > 0


@needs_native
@pytest.mark.parametrize("sampler,scheduler", [("res_multistep", "simple"), ("dpmpp_2m", "official")])
def test_native_second_order_samplers_to_mp4(client, tmp_path, sampler, scheduler):
    """Second-order stock samplers (a stock or the official schedule) run MOVA to an MP4 with audio; Random Noise
    seeds the run: the same seed twice gives the same latents."""
    prompt = _native(client, seed=32, sampler=sampler, scheduler=scheduler)
    split = node_key(prompt, "MovaSeparateAVLatent")
    prompt["60"] = {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}}
    first, second, previews = {}, {}, []
    videos, _ = run_prompt(client, prompt, first, previews)
    check_mp4(client.download(videos[0], tmp_path / f"{sampler}.mp4"))
    _check_previews(previews)
    # again, through stock Split Sigmas (all of them): the sampler runs anew, Random Noise draws from the seed again
    sigmas = node_key(prompt, "MovaScheduler")
    prompt["61"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": [sigmas, 0], "step": STEPS}}
    prompt[node_key(prompt, "SamplerCustomAdvanced")]["inputs"]["sigmas"] = ["61", 0]
    run_prompt(client, prompt, second)
    for a, b in zip(probed_latents(first, "60"), probed_latents(second, "60")):
        assert torch.equal(a, b)


@needs_native
def test_native_keeps_the_given_sound(client, base):
    """Sound -> video on the native path: the audio part of the joint latent is kept (mask 0), so a stock sampler
    returns it unchanged; core's LTXV Separate AV Latent splits the joint latent (its masks nested)."""
    prompt = _native(client, seed=33, sampler="dpmpp_2m")
    cond = node_key(prompt, "MovaConditioning")
    sampler = node_key(prompt, "SamplerCustomAdvanced")
    prompt |= {
        "70": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
        "71": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": [cond, 4]}},
        "72": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": [sampler, 0]}},
        "73": {"class_type": "SaveLatent", "inputs": {"samples": ["71", 1], "filename_prefix": "latents/native_given"}},
        "74": {"class_type": "SaveLatent", "inputs": {"samples": ["72", 1], "filename_prefix": "latents/native_audio"}},
        "75": {"class_type": "SaveLatent", "inputs": {"samples": ["72", 0], "filename_prefix": "latents/native_video"}},
    }
    prompt[cond]["inputs"]["audio"] = ["70", 0]
    outputs = {}
    run_prompt(client, prompt, outputs)
    given, sampled = saved_latent(base, outputs, "73"), saved_latent(base, outputs, "74")
    assert given.abs().sum() > 0 and torch.equal(sampled, given)
    video = saved_latent(base, outputs, "75")
    assert video.dim() == 5 and torch.isfinite(video).all() and video[:, :, 1:].abs().sum() > 0


@needs_native
def test_native_extension_keeps_the_overlap(client, base):
    """MOVA Extend's av_latent on the native path: the first clip sampled natively, decoded and extended; a second
    MOVA Guider on the extension's conditioning with the same stock noise, sampler and sigmas returns the overlap's
    latent frames and audio steps as MOVA Extend gave them, and generates the rest."""
    overlap = 9
    prompt = _native(client, seed=36, sampler="dpmpp_2m")
    cond, guider, sampler = (node_key(prompt, t) for t in ("MovaConditioning", "MovaGuider", "SamplerCustomAdvanced"))
    given = prompt[cond]["inputs"]
    prompt |= {
        "80": {"class_type": "MovaExtend", "inputs": {
            k: given[k] for k in ("positive", "negative", "vae", "audio_vae")} | {
            "images": [node_key(prompt, "VAEDecode"), 0], "audio": [node_key(prompt, "MovaAudioDecode"), 0],
            "length": FRAMES, "overlap": overlap, "fps": FPS, "crossfade": 0.05}},
        "81": {"class_type": "MovaGuider", "inputs": prompt[guider]["inputs"] | {"conditioning": ["80", 0]}},
        "82": {"class_type": "SamplerCustomAdvanced", "inputs": prompt[sampler]["inputs"] | {
            "guider": ["81", 0], "latent_image": ["80", 3]}},
        "83": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["80", 3]}},
        "84": {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["82", 0]}},
    }
    for i, (source, part, name) in enumerate([("83", 0, "given_video"), ("83", 1, "given_audio"),
                                              ("84", 0, "video"), ("84", 1, "audio")]):
        prompt[str(85 + i)] = {"class_type": "SaveLatent", "inputs": {
            "samples": [source, part], "filename_prefix": f"latents/extend_{name}"}}
    outputs = {}
    run_prompt(client, prompt, outputs)
    given_video, given_audio, video, audio = (saved_latent(base, outputs, str(85 + i)) for i in range(4))
    kept = (overlap - 1) // 4 + 1  # latent frames of the overlap
    assert given_video[:, :, :kept].abs().sum() > 0 and torch.all(given_video[:, :, kept:] == 0)
    assert torch.equal(video[:, :, :kept], given_video[:, :, :kept])
    assert video[:, :, kept:].abs().sum() > 0 and torch.isfinite(video).all()
    steps = (given_audio.abs().sum(dim=1) > 0)[0]  # audio latent steps MOVA Extend filled in (the rest is zero)
    keep = int(steps.long().cumprod(0).sum())
    assert keep > 0 and not steps[keep:].any()
    assert torch.equal(audio[..., :keep], given_audio[..., :keep]) and audio[..., keep:].abs().sum() > 0


@needs_native
def test_native_guider_follows_per_step_cfg(client):
    """The guider's cfg as core's per-step CFG overrides set it (a PREDICT_NOISE wrapper changing guider.cfg for the
    call, as CFG Override does on CFGGuider): MOVA Guider at cfg 1 with every step overridden to 4 gives the latents
    of MOVA Guider at cfg 4 (the negative prompt is used once an override turns CFG on); overriding only the first
    steps (sigma 0.9 and above) gives others."""
    prompt = _native(client, seed=37, sampler="dpmpp_2m")
    guider, sampler = node_key(prompt, "MovaGuider"), node_key(prompt, "SamplerCustomAdvanced")
    split = node_key(prompt, "MovaSeparateAVLatent")
    prompt = {key: node for key, node in prompt.items() if node["class_type"] not in
              ("SaveVideo", "CreateVideo", "VAEDecode", "MovaAudioDecode", "PreviewAudio")}
    prompt[guider]["inputs"]["cfg"] = 4.0
    prompt["90"] = {"class_type": "TestMovaLatentProbe", "inputs": {"video": [split, 0], "audio": [split, 1]}}
    for first, sigma_low in ((91, 0.0), (96, 0.9)):  # every step; the steps at sigma 0.9 and above
        keys = [str(first + i) for i in range(5)]
        prompt |= {
            keys[0]: {"class_type": "MovaGuider", "inputs": prompt[guider]["inputs"] | {"cfg": 1.0}},
            keys[1]: {"class_type": "TestGuiderCFGOverride", "inputs": {
                "guider": [keys[0], 0], "cfg": 4.0, "sigma_low": sigma_low, "sigma_high": 1000.0}},
            keys[2]: {"class_type": "SamplerCustomAdvanced", "inputs": prompt[sampler]["inputs"] | {
                "guider": [keys[1], 0]}},
            keys[3]: {"class_type": "MovaSeparateAVLatent", "inputs": {"av_latent": [keys[2], 0]}},
            keys[4]: {"class_type": "TestMovaLatentProbe", "inputs": {"video": [keys[3], 0], "audio": [keys[3], 1]}},
        }
    outputs = {}
    run_prompt(client, prompt, outputs)
    at_4, overridden, partly = (probed_latents(outputs, key) for key in ("90", "95", "100"))
    for ref, out in zip(at_4, overridden):
        assert torch.equal(ref, out)
    assert not torch.equal(at_4[0], partly[0])


@needs_native
def test_native_cancel_stops_the_guider(client):
    """Cancel during SamplerCustomAdvanced stops the MOVA Guider between model calls."""
    prompt = _native(client, seed=34)
    prompt[node_key(prompt, "MovaScheduler")]["inputs"]["steps"] = 1000
    cancel_during(client, prompt, lambda data: prompt.get(data.get("node"), {}).get("class_type") ==
                   "SamplerCustomAdvanced", "no progress from the sampler")


@pytest.mark.skipif(NATIVE, reason="this ComfyUI has nested latents: the native path runs")
def test_native_path_refused_with_what_to_do_before_0_8(client, tmp_path):
    """ComfyUI before 0.8: the native workflow is refused at queue time with what it needs; the MOVA Sampler runs,
    also on MOVA Conditioning's av_latent output (here the same latent)."""
    from comfyui_mova.nodes.av_latent import NATIVE_NEEDS
    prompt = api_prompt(client, "mova_i2va_native.json", seed=35, image_name="start.png")
    errors = refusal(client, prompt)
    assert any(NATIVE_NEEDS in detail for detail in errors[node_key(prompt, "MovaGuider")]), errors
    prompt = api_prompt(client, "mova_i2va.json", seed=35, image_name="start.png")
    prompt[node_key(prompt, "MovaSampler")]["inputs"]["latent"] = [node_key(prompt, "MovaConditioning"), 4]
    videos, _ = run_prompt(client, prompt)
    check_mp4(client.download(videos[0], tmp_path / "av_latent.mp4"))


def test_scheduler_choices_are_this_comfyuis(client):
    """MOVA Scheduler's stock schedulers are ComfyUI's own (BasicScheduler lists comfy.samplers.SCHEDULER_NAMES)."""
    from comfyui_mova.nodes.native.spec import STOCK_SCHEDULERS
    from workflow_api import combo_options
    stock = combo_options(*client.object_info()["BasicScheduler"]["input"]["required"]["scheduler"])
    assert set(STOCK_SCHEDULERS) <= set(stock), sorted(set(STOCK_SCHEDULERS) - set(stock))
