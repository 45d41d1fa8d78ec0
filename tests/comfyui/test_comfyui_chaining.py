"""The chaining examples end to end in a real ComfyUI (COMFYUI_PATH; run pytest with ComfyUI's Python):
mova_i2va_upscale (MOVA's frames through core's Load Upscale Model + Upscale Image (using Model), with a tiny
Real-ESRGAN Compact file the test writes) and mova_t2va_image_model (a tiny SD1.5-layout checkpoint through core's
Load Checkpoint, CLIP Text Encode, Empty Latent Image, KSampler and VAE Decode makes MOVA's first frame) and, where the
ComfyUI has core frame interpolation (v0.33.0), mova_i2va_interpolate (MOVA's frames through Load Frame Interpolation
Model + Run Frame Interpolation Model with a tiny RIFE file the test writes, at twice the fps). The files:
tests/support/chain_models.py; the server and helpers: tests/support/comfy_integration.py.
"""

from __future__ import annotations

import pytest
import torch

from chain_models import UPSCALE, write_image_checkpoint, write_rife, write_upscaler
from comfy_fixtures import probed_latents, read_audio
from comfy_integration import FPS, FRAMES, HEIGHT, INTEGRATION, RATE, WIDTH, api_prompt, check_mp4, node_key, run_prompt
from comfy_server import COMFYUI

pytestmark = INTEGRATION

UPSCALER = "tiny_compact_x2.safetensors"
CHECKPOINT = "tiny_sd15.safetensors"
# The image model's picture: twice the video's width and 1.5 times its height, another aspect, so MOVA
# Conditioning crops it before resizing (multiples of 8: SD1.5's latent).
FRAME = (2 * WIDTH, 3 * HEIGHT // 2)
RIFE_FILE = "tiny_rife.safetensors"
# Core's RIFE pads each frame to a multiple of 64 by reflection, which needs every side above 32: the interpolation
# run is 16 pixels larger than the other tests' clips (multiples of 16, as MOVA Conditioning wants).
INTERP_SIZE = (WIDTH + 16, HEIGHT + 16)
INTERPOLATION_NODES = ("FrameInterpolationModelLoader", "FrameInterpolate", "ComfyMathExpression")


@pytest.fixture(scope="module")
def chain_files(base):
    """The tiny upscale model and image checkpoint in the server's model folders (ComfyUI lists new files)."""
    write_upscaler(base / "models" / "upscale_models" / UPSCALER)
    write_image_checkpoint(base / "models" / "checkpoints" / CHECKPOINT, COMFYUI)


def _input_source(prompt: dict, key: str, name: str) -> str:
    return prompt[key]["inputs"][name][0]


def test_upscale_workflow_end_to_end(client, base, chain_files, tmp_path):
    """MOVA's frames at twice the size, every one of them, at MOVA Conditioning's fps, with the whole soundtrack:
    the MP4's sound lasts frames / fps."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va_upscale.json", stock={"UpscaleModelLoader": {"model_name": UPSCALER}},
                        seed=21, image_name=name)
    create = node_key(prompt, "CreateVideo")
    upscaler = _input_source(prompt, create, "images")
    assert prompt[upscaler]["class_type"] == "ImageUpscaleWithModel"
    assert prompt[_input_source(prompt, create, "fps")]["class_type"] == "MovaConditioning"
    videos, _ = run_prompt(client, prompt)
    (video,) = videos
    frames, samples = check_mp4(client.download(video, tmp_path / "upscaled.mp4"),
                                size=(UPSCALE * WIDTH, UPSCALE * HEIGHT))
    assert frames == FRAMES and abs(samples / RATE - FRAMES / FPS) < 2048 / RATE


def _image_model_prompt(client, frame_seed: int) -> tuple[dict, str, str]:
    """mova_t2va_image_model at the test size with the tiny checkpoint (the image model's seed ``frame_seed``), a
    Preview Image of the first frame and a latent probe on the MOVA Sampler; (prompt, preview key, probe key)."""
    prompt = api_prompt(client, "mova_t2va_image_model.json", seed=22, stock={
        "CheckpointLoaderSimple": {"ckpt_name": CHECKPOINT},
        "EmptyLatentImage": {"width": FRAME[0], "height": FRAME[1]},
        "KSampler": {"steps": 2, "seed": frame_seed}})
    cond = node_key(prompt, "MovaConditioning")
    frame = _input_source(prompt, cond, "start_image")
    assert prompt[frame]["class_type"] == "VAEDecode"
    assert prompt[_input_source(prompt, frame, "samples")]["class_type"] == "KSampler"
    sampler = node_key(prompt, "MovaSampler")
    prompt["test_frame"] = {"class_type": "PreviewImage", "inputs": {"images": [frame, 0]}}
    prompt["test_probe"] = {"class_type": "TestMovaLatentProbe",
                            "inputs": {"video": [sampler, 0], "audio": [sampler, 1]}}
    return prompt, "test_frame", "test_probe"


def _picture(base, outputs: dict, key: str) -> torch.Tensor:
    from PIL import Image
    import numpy as np
    (entry,) = outputs[key]["images"]
    with Image.open(base / entry["type"] / entry["subfolder"] / entry["filename"]) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def test_image_model_workflow_end_to_end(client, base, chain_files, tmp_path):
    """Load Checkpoint's model, CLIP and VAE make a picture of the image model's own size; MOVA starts from it and
    writes the MP4 with its sound; another picture (the image model's seed) gives MOVA other latents from the same
    MOVA seed, so the picture is what MOVA starts from."""
    prompt, preview, probe = _image_model_prompt(client, frame_seed=7)
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    check_mp4(client.download(videos[0], tmp_path / "t2va_image_model.mp4"))
    first = _picture(base, outputs, preview)
    assert tuple(first.shape) == (FRAME[1], FRAME[0], 3) and first.std() > 0.05  # a picture, not one colour
    video, audio = probed_latents(outputs, probe)

    prompt, preview, probe = _image_model_prompt(client, frame_seed=8)
    outputs = {}
    run_prompt(client, prompt, outputs)
    other = _picture(base, outputs, preview)
    assert (other - first).abs().mean() > 0.01
    other_video, other_audio = probed_latents(outputs, probe)
    assert not torch.equal(other_video, video) and not torch.equal(other_audio, audio)


@pytest.fixture(scope="module")
def interpolation(client, base):
    """The tiny RIFE file in models/frame_interpolation, on a ComfyUI that has core frame interpolation (its server
    lists the nodes); skips the test elsewhere."""
    info = client.object_info()
    lacking = [name for name in INTERPOLATION_NODES if name not in info]
    if lacking:
        pytest.skip(f"the ComfyUI in COMFYUI_PATH ({COMFYUI}) has no {', '.join(lacking)} (core frame interpolation "
                    "and Math Expression nodes, ComfyUI v0.33.0 and later): mova_i2va_interpolate needs them")
    write_rife(base / "models" / "frame_interpolation" / RIFE_FILE, COMFYUI)


def test_interpolate_workflow_end_to_end(client, base, interpolation, tmp_path):
    """MOVA's N frames become 2N-1 (one new frame between each pair) at twice MOVA Conditioning's fps, computed by
    the Math Expression; the size stays. MOVA Audio Decode's whole soundtrack (frames / fps) reaches Create Video
    (Preview Audio's lossless copy), and Save Video keeps it up to the last frame: (2N-1) / (2 fps), 1/(2 fps)
    shorter than the sound."""
    assert min(INTERP_SIZE) > 32
    name = client.upload_image(base / "input" / "start.png")
    prompt = api_prompt(client, "mova_i2va_interpolate.json", seed=23, image_name=name, stock={
        "FrameInterpolationModelLoader": {"model_name": RIFE_FILE},
        "MovaConditioning": {"width": INTERP_SIZE[0], "height": INTERP_SIZE[1]}})
    create = node_key(prompt, "CreateVideo")
    interp = _input_source(prompt, create, "images")
    assert prompt[interp]["class_type"] == "FrameInterpolate" and prompt[interp]["inputs"]["multiplier"] == 2
    assert prompt[_input_source(prompt, interp, "images")]["class_type"] == "VAEDecode"
    math = _input_source(prompt, create, "fps")
    assert prompt[math]["class_type"] == "ComfyMathExpression" and prompt[create]["inputs"]["fps"][1] == 0  # FLOAT
    assert prompt[_input_source(prompt, math, "values.a")]["class_type"] == "MovaConditioning"
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    (video,) = videos
    frames, samples = check_mp4(client.download(video, tmp_path / "interpolated.mp4"), frames_wanted=2 * FRAMES - 1,
                                size=INTERP_SIZE, fps=2 * FPS)
    print("interpolated MP4 (frames, samples):", frames, samples)  # v0.33.0: 49 frames, 16384 samples (16 AAC frames)
    (preview,) = outputs[node_key(prompt, "PreviewAudio")]["audio"]
    heard, rate = read_audio(client.download(preview, tmp_path / "interpolated.flac"))
    assert rate == RATE and heard.shape[-1] == int(RATE * FRAMES / FPS)  # MOVA's whole sound, uncut
