"""Beyond image-to-video in a real ComfyUI: first + last frame (its condition equals ComfyUI's own Wan node's),
sound -> video, video -> audio and longer clips (MOVA Extend + MOVA Join), each to an MP4 of exact length.
"""

from __future__ import annotations

import json

import pytest
import torch

from comfy_fixtures import VIDEO_FRAMES, VIDEO_SIZE, fitted_speech, read_audio
from comfy_integration import (FPS, FRAMES, HEIGHT, INTEGRATION, RATE, STEPS, WIDTH, api_prompt, check_mp4, node_key,
                               run_prompt)

pytestmark = INTEGRATION


def test_first_last_frame_condition_equals_comfyui_wan_node(client):
    """The same VAE and pictures: MOVA Conditioning's condition equals what ComfyUI's WanFirstLastFrameToVideo
    makes for a Wan 2.2 I2V model (its concat_latent_image + concat_mask through the model's concat_cond)."""
    text = lambda words: {"class_type": "MovaTextEncode", "inputs": {"text": words, "clip": ["0", 0]}}  # noqa: E731
    size = {"width": WIDTH, "height": HEIGHT, "length": FRAMES}
    prompt = {
        "0": {"class_type": "TestTinyUMT5Loader", "inputs": {"kind": "umt5xxl"}},
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "2": {"class_type": "MovaAudioVAELoader", "inputs": {"vae_name": "MOVA-360p/audio_vae", "weight_dtype": "default"}},
        "3": text("a pier at dawn"), "4": text("blurry"),
        "5": {"class_type": "LoadImage", "inputs": {"image": "first32.png"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "last32.png"}},
        "7": {"class_type": "WanFirstLastFrameToVideo", "inputs": size | {
            "positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 0], "batch_size": 1, "start_image": ["5", 0],
            "end_image": ["6", 0]}},
        "8": {"class_type": "MovaConditioning", "inputs": size | {
            "positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 0], "audio_vae": ["2", 0], "fps": FPS,
            "start_image": ["5", 0], "end_image": ["6", 0]}},
        "9": {"class_type": "TestWanConcatProbe", "inputs": {"positive": ["7", 0], "latent": ["7", 2],
                                                              "mova": ["8", 0]}},
    }
    outputs = {}
    run_prompt(client, prompt, outputs)
    found = json.loads(outputs["9"]["condition"][0])
    comfy = torch.tensor(found["comfy"]).view(found["comfy_shape"])
    mova = torch.tensor(found["mova"]).view(found["mova_shape"])
    assert comfy.shape == mova.shape == (1, 20, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    assert torch.equal(mova[:, :4], comfy[:, :4])  # the mask: first frame in all 4 slots, the last in one
    assert mova[0, :4, -1, 0, 0].tolist() == [0, 0, 0, 1]
    assert torch.equal(mova[:, 4:], comfy[:, 4:]), (mova - comfy).abs().max()  # the latents, bit for bit


def test_first_last_frame_workflow_end_to_end(client, tmp_path):
    prompt = api_prompt(client, "mova_flf2va.json", seed=21, image_name="first32.png", end_image_name="last32.png")
    videos, _ = run_prompt(client, prompt)
    print("flf2va MP4 (frames, samples):", check_mp4(client.download(videos[0], tmp_path / "flf.mp4")))


def test_sound_to_video_workflow_end_to_end(client, base, tmp_path):
    """Load Audio (stereo 44.1 kHz, longer than the clip) -> the MP4's soundtrack is that sound, mono at the codec's
    rate and cut to the clip: Preview Audio's lossless copy equals it (to 16-bit rounding), no codec round trip."""
    prompt = api_prompt(client, "mova_a2v.json", seed=22, image_name="start.png", audio_name="speech.wav")
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    print("a2v MP4 (frames, samples):", check_mp4(client.download(videos[0], tmp_path / "a2v.mp4")))
    samples = int(RATE * FRAMES / FPS)
    report = outputs[node_key(prompt, "MovaConditioning")]["text"][0]
    assert f"cut at {samples / RATE:.3f} s (sample {samples} of" in report and "44100 Hz, 2 channels" in report
    (preview,) = outputs[node_key(prompt, "PreviewAudio")]["audio"]
    heard, rate = read_audio(client.download(preview, tmp_path / "a2v.flac"))
    expected = fitted_speech(base / "input" / "speech.wav", RATE, samples)
    import av
    with av.open(str(tmp_path / "a2v.flac")) as container:
        channels = container.streams.audio[0].codec_context.channels
    if channels == 2:
        # ComfyUI v0.3.64's Preview Audio opens its FLAC stream without a layout: FFmpeg's default stereo, into
        # which it mixes the mono sound at its centre level, -3 dB (1/sqrt(2)) on each channel; newer ComfyUI
        # keeps mono. The pack's sound is the same either way.
        expected = expected * 0.5 ** 0.5
    assert rate == RATE and heard.shape == expected.shape
    worst = int((heard - expected).abs().argmax())
    assert (heard - expected).abs().max() < 2 / 32768, \
        (worst, heard[worst].item(), expected[worst].item(), heard[:8].tolist(), expected[:8].tolist())


def test_video_to_audio_workflow_end_to_end(client, base, tmp_path):
    """Load Video (27 frames, 48x40) -> the first 25 frames kept, a new soundtrack; the MP4 has the video's own
    frames at their own size. A length the video cannot fill is refused with the length to use."""
    from comfy_client import ServerError
    prompt = api_prompt(client, "mova_v2a.json", seed=23, video_name="clip.mp4")
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    print("v2a MP4 (frames, samples):",
          check_mp4(client.download(videos[0], tmp_path / "v2a.mp4"), FRAMES, VIDEO_SIZE))
    report = outputs[node_key(prompt, "MovaConditioning")]["text"][0]
    assert f"video: {VIDEO_FRAMES} frames" in report and f"the last {VIDEO_FRAMES - FRAMES} are cut" in report
    prompt[node_key(prompt, "MovaConditioning")]["inputs"]["length"] = FRAMES + 4
    with pytest.raises(ServerError, match=f"the video has {VIDEO_FRAMES} frames but length is {FRAMES + 4}: "
                       f"set length to {FRAMES}"):
        run_prompt(client, prompt)


def test_extend_workflow_end_to_end(client, tmp_path):
    """Two prompts, two clips: 25 frames, then 25 more overlapping by 9 -> one MP4 of 41 frames whose sound
    lasts exactly as long."""
    prompt = api_prompt(client, "mova_extend.json", seed=24, image_name="start.png")
    extend = prompt[node_key(prompt, "MovaExtend")]["inputs"]
    extend.update(length=FRAMES, overlap=9, crossfade=0.05)
    outputs = {}
    videos, progress = run_prompt(client, prompt, outputs)
    assert [v for k, v in progress if k == "MovaSampler"].count(STEPS) == 2
    total = FRAMES + FRAMES - 9
    print("extend MP4 (frames, samples):", check_mp4(client.download(videos[0], tmp_path / "extend.mp4"), total))
    assert f"joined: {total} frames" in outputs[node_key(prompt, "MovaExtend")]["text"][0]
    (preview,) = outputs[node_key(prompt, "PreviewAudio")]["audio"]
    heard, _ = read_audio(client.download(preview, tmp_path / "extend.flac"))
    assert heard.shape[0] == int(RATE * total / FPS)  # the joined sound, sample-exact
