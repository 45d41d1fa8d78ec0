"""Inputs outside their domain in a real ComfyUI: NaN and infinite numbers (which ComfyUI's own range check lets
through) stop each MOVA node with the input and the fix named; 8-bit video frames and integer PCM sound from another
node (a test node hands them over as some video and audio nodes do, with numpy numbers) give what their float form
gives; other models' SIGMAS, negative, NaN or rising ones are refused by the MOVA Guider naming MOVA Scheduler; MOVA
Dataset reads Windows-1252 captions with a note and names a dangling clip link."""

from __future__ import annotations

import pytest
import torch

from comfy_fixtures import probed_latents
from comfy_integration import INTEGRATION, STEPS, api_prompt, needs_native, node_key, run_prompt, train_prompt

pytestmark = INTEGRATION

NAN, INF = float("nan"), float("inf")
OUTPUT_NODES = ("SaveVideo", "PreviewAudio", "PreviewImage", "SaveAudio", "MovaSaveLora", "SaveLatent")


def _without_outputs(prompt: dict) -> dict:
    """The prompt without its output nodes: only the nodes the test adds run (and what they need)."""
    return {k: n for k, n in prompt.items() if n["class_type"] not in OUTPUT_NODES}


def _probe(prompt: dict, latent: list) -> dict:
    """MOVA Separate AV Latent + the latent probe on ``latent`` (either form of MOVA's joint latent)."""
    return prompt | {"90": {"class_type": "MovaSeparateAVLatent", "inputs": {"av_latent": latent}},
                     "91": {"class_type": "TestMovaLatentProbe", "inputs": {"video": ["90", 0], "audio": ["90", 1]}}}


def _failure(client, prompt) -> str:
    from comfy_client import ServerError
    with pytest.raises(ServerError) as caught:
        run_prompt(client, prompt)
    return str(caught.value)


# (workflow, node, input, value, what the error says)
NON_FINITE = [
    ("mova_extend.json", "MovaExtend", "crossfade", NAN,
     "MOVA Extend: crossfade is nan, not a finite number; set it to a number from 0 to 10 (default 0.1)"),
    ("mova_extend.json", "MovaExtend", "fps", NAN, "MOVA Extend: fps is nan, not a finite number; set it to a number "
     "from 1 to 120 (default 24)"),
    ("mova_i2va_lora.json", "MovaLoraLoader", "strength_high_noise", NAN, "MOVA LoRA Loader: strength_high_noise is "
     "nan, not a finite number; set it to a number from -10 to 10 (default 1)"),
    ("mova_i2va.json", "MovaConditioning", "fps", NAN, "MOVA Conditioning: fps is nan"),
    ("mova_i2va.json", "MovaSampler", "cfg", NAN, "MOVA Sampler: cfg is nan"),
    ("mova_i2va_dual_cfg.json", "MovaSamplerOptions", "bridge_cfg", NAN, "MOVA Sampler Options: bridge_cfg is nan"),
    ("mova_i2va_enhanced.json", "MovaPromptEnhance", "temperature", NAN, "MOVA Prompt Enhance: temperature is nan"),
]


@pytest.mark.parametrize("workflow, node, name, value, message", NON_FINITE, ids=[f"{c[1]}.{c[2]}" for c in NON_FINITE])
def test_non_finite_numbers_stop_the_node_naming_input_and_fix(client, workflow, node, name, value, message):
    params = {"image_name": "start.png"}
    prompt = api_prompt(client, workflow, seed=40, **params)
    prompt[node_key(prompt, node)]["inputs"][name] = value
    failure = _failure(client, prompt)
    assert f"{node} failed: {message}" in failure, failure


@needs_native
def test_guider_cfg_out_of_range_is_refused_though_comfyui_skips_its_check(client):
    """The MOVA Guider's validate_inputs takes cfg, so ComfyUI does not check its range: the node does."""
    prompt = api_prompt(client, "mova_i2va_native.json", seed=41, image_name="start.png")
    for value, message in ((INF, "cfg is inf, not a finite number"), (-2.0, "cfg -2.0 is below the minimum 1.0")):
        prompt[node_key(prompt, "MovaGuider")]["inputs"]["cfg"] = value
        failure = _failure(client, prompt)
        assert f"MovaGuider failed: MOVA Guider: {message}; set it to a number from 1 to 30" in failure, failure


def test_training_numbers_and_dataset_domains(client, base):
    """MOVA Dataset: a caption in Windows-1252 is read (with a note on the node), a caption without a clip is listed,
    a clip link that leads nowhere stops the run naming it; MOVA Train LoRA refuses a NaN learning rate."""
    from clip_files import write_clip
    from comfy_integration import FPS, HEIGHT, RATE, TRAIN_FRAMES, WIDTH
    folder = base / "input" / "mova_domain_clips"
    write_clip(folder / "cafe.mp4", TRAIN_FRAMES + 3, FPS, WIDTH + 16, HEIGHT + 8, sample_rate=RATE, tone=330.0,
               caption=None)
    (folder / "cafe.txt").write_bytes("Un café. The audio shows a tone.".encode("cp1252"))
    (folder / "notes.txt").write_text("how these clips were made")
    (folder / "gone.mp4").symlink_to(folder / "moved" / "gone.mp4")
    (folder / "gone.txt").write_text("a clip that was moved")
    prompt = train_prompt(client, "domains", steps=1, filename="mova/domains_lora")
    dataset, train = node_key(prompt, "MovaDataset"), node_key(prompt, "MovaTrainLora")
    prompt[dataset]["inputs"]["folder"] = "mova_domain_clips"
    failure = _failure(client, prompt)
    assert "1 problem(s) with the clips" in failure and "gone.mp4: is a link to " in failure, failure
    (folder / "gone.mp4").unlink()
    (folder / "gone.txt").unlink()
    outputs = {}
    run_prompt(client, prompt, outputs)
    report = outputs[dataset]["text"][0]
    assert report.startswith("1 clips encoded to mova_domain_clips_") and "cafe.mp4: the caption cafe.txt is not " \
        "UTF-8 (byte 6 is 0xe9): read as Windows-1252 (cp1252): \"Un café." in report, report
    assert "notes.txt: no clip of that name" in report
    prompt[train]["inputs"]["learning_rate"] = NAN
    failure = _failure(client, prompt)
    assert "MOVA Train LoRA: learning_rate is nan, not a finite number" in failure, failure
    prompt[dataset]["inputs"]["fps"] = NAN
    assert "MovaDataset failed: MOVA Dataset: fps is nan" in _failure(client, prompt)


def test_eight_bit_video_and_integer_sound_give_their_float_forms(client):
    """Video -> audio from 8-bit frames with a numpy frame rate gives MOVA Conditioning's latents of the same frames
    as ComfyUI's floats (value / 255; Load Video itself decodes to floats straight from YUV in v0.33, so its frames
    are not the 8-bit ones there), and sound -> video from int16 PCM with a numpy sample rate gives those of Load
    Audio's float form of the same file."""
    prompt = _without_outputs(api_prompt(client, "mova_v2a.json", seed=42, video_name="clip.mp4"))
    cond = node_key(prompt, "MovaConditioning")
    prompt = _probe(prompt, [cond, 1])
    prompt["92"] = {"class_type": "TestMovaIntegerMedia", "inputs": {"video": "clip.mp4", "audio": "speech.wav"}}
    floats, eight_bit = {}, {}
    prompt[cond]["inputs"].update(video=["92", 3], video_fps=["92", 1])
    run_prompt(client, prompt, floats)
    prompt[cond]["inputs"].update(video=["92", 0])
    run_prompt(client, prompt, eight_bit)
    (video, audio), (video8, audio8) = probed_latents(floats, "91"), probed_latents(eight_bit, "91")
    assert video.abs().sum() > 0 and torch.equal(video8, video) and audio8.shape == audio.shape

    prompt = _without_outputs(api_prompt(client, "mova_a2v.json", seed=43, image_name="start.png",
                                         audio_name="speech.wav"))
    cond = node_key(prompt, "MovaConditioning")
    prompt = _probe(prompt, [cond, 1])
    floats, integers = {}, {}
    run_prompt(client, prompt, floats)
    prompt["92"] = {"class_type": "TestMovaIntegerMedia", "inputs": {"video": "clip.mp4", "audio": "speech.wav"}}
    prompt[cond]["inputs"]["audio"] = ["92", 2]
    run_prompt(client, prompt, integers)
    (_, audio), (_, audio16) = probed_latents(floats, "91"), probed_latents(integers, "91")
    assert audio.abs().sum() > 0 and torch.allclose(audio16, audio, atol=1e-5), (audio16 - audio).abs().max()


# --- SIGMAS for the MOVA Guider (the native path: ComfyUI 0.8 and later) --------------------------------------------

SIGMAS = [
    ("karras", {"class_type": "KarrasScheduler", "inputs": {"steps": STEPS, "sigma_max": 14.614642,
                                                            "sigma_min": 0.0291675, "rho": 7.0}},
     r"the sigmas run from 14.6146 to 0, beyond MOVA's 0..1"),
    ("negative", {"class_type": "ManualSigmas", "inputs": {"sigmas": "1, 0.5, -0.5, 0"}}, "sigma 3 of 4 is -0.5, "
     "below 0"),
    ("rising", {"class_type": "ManualSigmas", "inputs": {"sigmas": "0.2, 0.6, 0.9"}}, "sigma 2 of 3 (0.6) is not "
     "below the one before it (0.2)"),
    ("nan", {"class_type": "SetFirstSigma", "inputs": {"sigmas": ["SCHEDULER", 0], "sigma": NAN}}, "sigma 1 of 5 is "
     "nan: the node that made the SIGMAS failed, not the model"),
]


@needs_native
@pytest.mark.parametrize("kind, node, message", SIGMAS, ids=[s[0] for s in SIGMAS])
def test_sigmas_outside_mova_range_are_refused_naming_mova_scheduler(client, base, kind, node, message):
    prompt = api_prompt(client, "mova_i2va_native.json", seed=44, image_name="start.png")
    scheduler, sampler = node_key(prompt, "MovaScheduler"), node_key(prompt, "SamplerCustomAdvanced")
    if node["inputs"].get("sigmas") == ["SCHEDULER", 0]:
        node = {**node, "inputs": {**node["inputs"], "sigmas": [scheduler, 0]}}
    prompt["95"] = node
    prompt[sampler]["inputs"]["sigmas"] = ["95", 0]
    start = len((base / "server.log").read_text())
    failure = _failure(client, prompt)
    assert f"SamplerCustomAdvanced failed: MOVA Guider: {message}" in failure, failure
    assert "connect MOVA Scheduler (its guider input from this MOVA Guider) to SamplerCustomAdvanced's sigmas" in failure
    assert "MOVA Guider: 4 steps" not in (base / "server.log").read_text()[start:]  # refused before the run


@needs_native
def test_mova_scheduler_names_a_stock_scheduler_that_fails(client):
    prompt = api_prompt(client, "mova_i2va_native.json", seed=45, image_name="start.png")
    prompt[node_key(prompt, "MovaScheduler")]["inputs"].update(scheduler="kl_optimal", steps=1)
    failure = _failure(client, prompt)
    assert "MOVA Scheduler: the kl_optimal scheduler gave unusable sigmas for 1 steps (sigma 1 of 2 is nan" in failure

