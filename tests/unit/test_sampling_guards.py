"""Bad numbers stop early: non-finite options, sizes whose memory cannot fit (named with the largest that does),
and steps that produce NaN/inf (named with the step, the expert and the likely cause)."""

import json
import math
import re

import pytest
import torch

from comfyui_mova.mova_model.configs import AUDIO_DIT_1B, DAC_48K, VIDEO_DIT_A14B, DACConfig, config_from_dict
from comfyui_mova.mova_model.memory.estimate import GIB, amount, check_fits, condition_bytes, largest_fit, sampling_bytes
from comfyui_mova.mova_model.sampling.sampler import NonFiniteError, SamplingOptions, sample
from comfyui_mova.nodes.conditioning.condition import make_conditioning
from comfyui_mova.nodes.handles import MovaConditioning
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.conditioning.condition import empty_joint_latent
from comfyui_mova.nodes.sampling.run import sample_joint
from mova_testing import golden_scheduler, load_golden_towers

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field,value,message", [
    ("cfg_scale", NAN, "cfg nan must be a finite number"),
    ("cfg_scale", INF, "cfg inf must be a finite number"),
    ("shift", NAN, "shift nan must be a positive number"),
    ("shift", 0.0, "shift 0.0 must be a positive number"),
    ("boundary_ratio", NAN, "boundary_ratio nan must lie in 0..1"),
    ("boundary_ratio", 1.5, "boundary_ratio 1.5 must lie in 0..1"),
    ("fps", INF, "fps inf must be a positive number"),
    ("fps", -24.0, "fps -24.0 must be a positive number"),
    ("audio_cfg_scale", NAN, "audio_cfg nan must be a finite number"),
    ("audio_shift", -INF, "audio_shift -inf must be positive"),
    ("bridge_cfg_scale", INF, "bridge_cfg inf must be a finite number"),
    ("cfg_cutoff", NAN, "cfg_cutoff nan must lie in 0..1"),
    ("cache_threshold", NAN, r"cache_threshold nan must be 0 \(off\) or positive"),
    ("steps", 0, "steps 0 must be a whole number of at least 1"),
    ("steps", 2.5, "steps 2.5 must be a whole number"),
    ("steps", True, "steps True must be a whole number"),
])
def test_options_refuse_bad_numbers_when_built(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingOptions(**{field: value})


def test_options_changed_after_building_are_checked_again(golden_dir, golden_tensors, golden_cases):
    g = golden_tensors
    options = SamplingOptions(steps=1, fps=golden_cases["fps"])
    options.cfg_scale = NAN
    with pytest.raises(ValueError, match="cfg nan must be a finite number"):
        sample(load_golden_towers(golden_dir), g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
               g["noise_audio"], options)


@pytest.fixture(scope="module")
def golden_dac(golden_dir) -> DACConfig:
    return config_from_dict(DACConfig, json.loads((golden_dir / "checkpoint" / "audio_vae" / "config.json").read_text()))


def _conditioning(golden_cases, golden_dac, encoded: list, **kwargs):
    c = golden_cases
    text = [[torch.zeros(1, 8, 4096), {}]]
    args = dict(width=c["width"], height=c["height"], frames=c["num_frames"], fps=c["fps"]) | kwargs
    return make_conditioning(text, text, lambda frames: encoded.append(frames) or None, None,
                             args["width"], args["height"], args["frames"], args["fps"], golden_dac,
                             available_bytes=args.get("available_bytes"))


@pytest.mark.parametrize("fps", [NAN, INF, 0.0])
def test_conditioning_refuses_bad_fps_before_the_vae(golden_cases, golden_dac, fps):
    encoded = []
    with pytest.raises(ValueError, match="fps must be a positive number"):
        _conditioning(golden_cases, golden_dac, encoded, fps=fps)
    assert encoded == []


def test_conditioning_refuses_what_the_host_cannot_hold(golden_dac):
    width, height, frames = 640, 352, 193
    available = condition_bytes(width, height, 97)
    encoded = []
    with pytest.raises(ValueError) as error:
        _conditioning({"width": width, "height": height, "num_frames": frames, "fps": 24.0}, golden_dac, encoded,
                      available_bytes=available)
    message = str(error.value)
    assert encoded == []  # refused before the frames were built or encoded
    assert message.startswith(f"640x352 with 193 frames needs about {amount(condition_bytes(width, height, frames))} "
                              "of host memory (RAM) for the condition frames")
    assert "the largest that fits: 97 frames at 640x352 or " in message and "Lower width, height or length" in message
    w, h = map(int, re.search(r"or (\d+)x(\d+) at 193 frames", message).groups())
    assert w % 16 == 0 and h % 16 == 0 and condition_bytes(w, h, frames) <= available
    assert condition_bytes(w + 16, round((w + 16) * height / width / 16) * 16, frames) > available


def test_largest_fit_at_the_edges():
    need = lambda w, h, f: w * h * f  # noqa: E731
    assert largest_fit(need, 64, 32, 9, 64 * 32 * 9) == (9, (64, 32))
    assert largest_fit(need, 64, 32, 9, 64 * 32 * 5) == (5, (32, 16))  # 48x32 (the aspect kept) needs 13824
    assert largest_fit(need, 64, 32, 9, 10) == (None, None)
    with pytest.raises(ValueError, match="not even one frame at 16x16 fits"):
        check_fits(need, 64, 32, 9, 10, "memory", "")


def test_full_size_estimates():
    """MOVA-360p's recommended size fits an 80 GB GPU; the largest widget values do not, and the message says
    what would."""
    size = torch.empty((), dtype=torch.bfloat16).element_size()
    need = lambda w, h, f: sampling_bytes(w, h, f, 24.0, DAC_48K.sample_rate, DAC_48K.hop_length,  # noqa: E731
                                          DAC_48K.latent_dim, VIDEO_DIT_A14B, AUDIO_DIT_1B, size)
    gpu = 80 * GIB
    assert need(640, 352, 193) < 8 * GIB and need(1280, 720, 193) < 40 * GIB
    check_fits(need, 1280, 720, 193, gpu, "device memory", "")
    with pytest.raises(ValueError, match=r"4096x4096 with 1025 frames needs about \d+\.\d GiB of device memory, but "
                       r"only 80.0 GiB are there; the largest that fits: \d+ frames at 4096x4096 or \d+x\d+ at 1025"):
        check_fits(need, 4096, 4096, 1025, gpu, "device memory", "")


@pytest.fixture(scope="module")
def parts(golden_dir, golden_dac):
    ckpt = golden_dir / "checkpoint"
    return (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
            load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))


def test_sampler_refuses_what_the_device_cannot_hold(parts, golden_cases, golden_tensors, golden_dac):
    c, g = golden_cases, golden_tensors
    cond = MovaConditioning(g["context_pos"], g["context_neg"], g["condition"], c["width"], c["height"],
                            c["num_frames"], c["fps"])
    latent = empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], golden_dac)
    with pytest.raises(ValueError, match=f"{c['width']}x{c['height']} with {c['num_frames']} frames needs about .* "
                       "of device memory for the sampler's activations and latents, but only 1 KiB are there; "
                       "not even one frame .*Lower width, height or length on MOVA Conditioning"):
        sample_joint(*parts, cond, latent, 0, 1, 5.0, 5.0, 0.9, device_memory=1024)
    steps = []
    sample_joint(*parts, cond, latent, 0, 1, 5.0, 5.0, 0.9, device_memory=64 * GIB,
                 on_step=lambda *a: steps.append(a[0]))
    assert steps == [1]


def _break(model, value):
    with torch.no_grad():
        model.blocks[0].ffn[0].weight[0, 0] = value


@pytest.mark.parametrize("expert", [0, 1])
def test_nan_step_names_the_step_and_the_expert(golden_dir, golden_tensors, golden_cases, expert):
    g = golden_tensors
    towers = load_golden_towers(golden_dir)
    _break(towers.video_experts[expert], NAN)
    used = golden_cases["experts_used_per_step"]["cfg5"]
    step = used.index(expert) + 1
    names = ["the high-noise expert (video_dit)", "the low-noise expert (video_dit_2)"]
    scheduler = golden_scheduler(golden_cases)
    options = SamplingOptions(steps=len(used), cfg_scale=5.0, fps=golden_cases["fps"], shift=scheduler.shift,
                              boundary_ratio=golden_cases["boundary_ratio"], scheduler=scheduler)
    seen = []
    with pytest.raises(NonFiniteError, match=re.escape(f"step {step} of {len(used)} ({names[expert]}) produced NaN or "
                                                       "infinite values in the video and audio prediction") +
                       ".*a broken LoRA"):
        sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"], options,
               callback=lambda *a: seen.append(a[0]))
    assert seen == list(range(1, step))  # stopped at once, before the broken step was taken


def test_fp16_overflow_is_named(golden_dir, golden_tensors, golden_cases):
    g = golden_tensors
    towers = load_golden_towers(golden_dir, dtype=torch.float16)
    _break(towers.video_experts[0], INF)
    with pytest.raises(NonFiniteError, match=r"step 1 of 2 .*\(torch.float16\).*fp16 overflow .*weight_dtype bf16"):
        sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"],
               SamplingOptions(steps=2, fps=golden_cases["fps"]))


def test_non_finite_inputs_are_refused(golden_dir, golden_tensors, golden_cases):
    g = golden_tensors
    condition = g["condition"].clone()
    condition[0, -1, 0, 0, 0] = NAN
    with pytest.raises(NonFiniteError, match="the image condition hold NaN or infinite values"):
        sample(load_golden_towers(golden_dir), condition, g["context_pos"], g["context_neg"], g["noise_video"],
               g["noise_audio"], SamplingOptions(steps=1, fps=golden_cases["fps"]))
    assert not math.isnan(float(g["condition"].sum()))


def test_memory_amounts_read_as_people_write_them():
    assert amount(80 * GIB) == "80.0 GiB" and amount(GIB // 5) == "0.2 GiB"
    assert amount(90 * 2 ** 20) == "90 MiB" and amount(1024) == "1 KiB"
