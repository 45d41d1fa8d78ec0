"""Model behaviour beyond the golden keys: batching, bf16, CFG batching, sizes, callbacks, errors."""

import pytest
import torch

from comfyui_mova.mova_model.sampling import audio, joint, sampler, sizes
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.configs import DACConfig
from mova_testing import load_golden_towers, rel_l2


@pytest.fixture(scope="module")
def tiny(golden_dir):
    return load_golden_towers(golden_dir)

def _inputs(g, batch=1):
    x = torch.cat([g["noise_video"], g["condition"]], dim=1)
    return x.repeat(batch, 1, 1, 1, 1), g["noise_audio"].repeat(batch, 1, 1)


def test_batch_of_two_equals_two_runs(tiny, golden_tensors, golden_cases):
    g = golden_tensors
    x, a = _inputs(g)
    x2 = torch.cat([x, x + 0.1 * torch.randn_like(x)])
    a2 = torch.cat([a, a + 0.1 * torch.randn_like(a)])
    ctx = torch.cat([g["context_pos"], g["context_neg"]])
    t_video, t_audio = torch.tensor([900.0, 300.0]), torch.tensor([700.0, 50.0])
    both = joint.joint_forward(tiny.video_experts[0], tiny.audio_dit, tiny.bridge, x2, a2, ctx,
                               t_video, t_audio, golden_cases["fps"])
    for i in range(2):
        one = joint.joint_forward(tiny.video_experts[0], tiny.audio_dit, tiny.bridge, x2[i:i + 1], a2[i:i + 1],
                                  ctx[i:i + 1], t_video[i:i + 1], t_audio[i:i + 1], golden_cases["fps"])
        assert rel_l2(both.video[i:i + 1], one.video) < 1e-5
        assert rel_l2(both.audio[i:i + 1], one.audio) < 1e-5


def test_bf16_is_finite_and_close_to_float32(golden_dir, golden_tensors, golden_cases):
    g = golden_tensors
    ckpt = golden_dir / "checkpoint"
    models = {dt: [loading.load_component(ckpt, k, dtype=dt, component=c) for k, c in
                   (("video_dit", "video_dit"), ("audio_dit", "audio_dit"), ("dual_tower_bridge", "dual_tower_bridge"))]
              for dt in (torch.float32, torch.bfloat16)}
    x, a = _inputs(g)
    outs = {dt: joint.joint_forward(*m, x, a, g["context_pos"], torch.tensor([850.0]), torch.tensor([850.0]),
                                    golden_cases["fps"], dtype=dt) for dt, m in models.items()}
    bf, f32 = outs[torch.bfloat16], outs[torch.float32]
    assert torch.isfinite(bf.video).all() and torch.isfinite(bf.audio).all()
    assert rel_l2(bf.video, f32.video) < 0.05
    assert rel_l2(bf.audio, f32.audio) < 0.05


def test_batched_cfg_equals_two_passes(tiny, golden_tensors, golden_cases):
    g = golden_tensors
    base = dict(steps=3, cfg_scale=5.0, fps=golden_cases["fps"])
    args = (g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"])
    v1, a1 = sampler.sample(tiny, *args, sampler.SamplingOptions(**base))
    v2, a2 = sampler.sample(tiny, *args, sampler.SamplingOptions(**base, batch_cfg=True))
    assert rel_l2(v2, v1) < 1e-5 and rel_l2(a2, a1) < 1e-5


def test_one_prompt_serves_a_batch_and_a_wrong_count_is_refused(tiny, golden_tensors, golden_cases):
    g = golden_tensors
    opts = sampler.SamplingOptions(steps=2, cfg_scale=1.0, fps=golden_cases["fps"])
    cond = g["condition"].repeat(2, 1, 1, 1, 1)
    v, a = sampler.sample(tiny, cond, g["context_pos"], None, g["noise_video"].repeat(2, 1, 1, 1, 1),
                          g["noise_audio"].repeat(2, 1, 1), opts)
    assert rel_l2(v[0], v[1]) < 1e-5
    three = g["context_pos"].repeat(3, 1, 1)
    with pytest.raises(ValueError, match=r"positive prompt batch is 3 but the latent batch is 2: give 1 or 2"):
        sampler.sample(tiny, cond, three, None, g["noise_video"].repeat(2, 1, 1, 1, 1),
                       g["noise_audio"].repeat(2, 1, 1), opts)


def test_cfg_without_negative_and_mismatched_condition_are_refused(tiny, golden_tensors):
    g = golden_tensors
    with pytest.raises(ValueError, match=r"needs a negative prompt"):
        sampler.sample(tiny, g["condition"], g["context_pos"], None, g["noise_video"], g["noise_audio"],
                       sampler.SamplingOptions(steps=1, cfg_scale=5.0))
    with pytest.raises(ValueError, match=r"image condition .* does not fit the video latent"):
        sampler.sample(tiny, g["condition"][:, :, :1], g["context_pos"], None, g["noise_video"], g["noise_audio"],
                       sampler.SamplingOptions(steps=1, cfg_scale=1.0))


def test_callback_reports_every_step_and_can_cancel(tiny, golden_tensors):
    g = golden_tensors
    seen, experts = [], []

    class Cancelled(Exception):
        pass

    def callback(step, total, video, audio_latent):
        seen.append((step, total, tuple(video.shape), tuple(audio_latent.shape)))
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        sampler.sample(tiny, g["condition"], g["context_pos"], None, g["noise_video"], g["noise_audio"],
                       sampler.SamplingOptions(steps=6, cfg_scale=1.0), callback=callback,
                       before_expert=experts.append)
    assert [s[:2] for s in seen] == [(1, 6), (2, 6)]
    assert seen[0][2] == tuple(g["noise_video"].shape) and seen[0][3] == tuple(g["noise_audio"].shape)
    assert experts == [0]


def test_seeded_noise_is_reproducible_video_first():
    v1, a1 = sampler.make_noise((1, 16, 2, 4, 4), (1, 8, 5), seed=7)
    v2, a2 = sampler.make_noise((1, 16, 2, 4, 4), (1, 8, 5), seed=7)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(v1, torch.randn(1, 16, 2, 4, 4, generator=gen))
    assert torch.equal(a1, torch.randn(1, 8, 5, generator=gen))


@pytest.mark.parametrize("h, w, frames, message", [
    (360, 640, 193, r"height 360 is not a multiple of 16: use 352 \(or 368\)"),
    (352, 630, 193, r"width 630 is not a multiple of 16: use 624 \(or 640\)"),
    (8, 640, 193, r"height 8 is not a multiple of 16: use 16$"),
    (352, 640, 192, r"frames 192 is not 4k\+1: use 193 \(or 189\)"),
    (352, 640, 0, r"frames 0 is not 4k\+1: use 1"),
    (352, 640, 195, r"frames 195 is not 4k\+1: use 193 \(or 197\)"),
])
def test_invalid_sizes_name_the_nearest_valid_value(h, w, frames, message):
    with pytest.raises(ValueError, match=message):
        sizes.check_video_size(h, w, frames)


@pytest.mark.parametrize("frames, fps, samples, latents", [(193, 24.0, 386000, 403), (97, 24.0, 194000, 203),
                                                            (121, 25.0, 232320, 242), (9, 16.0, 27000, 29)])
def test_audio_length_follows_fps_and_codec(frames, fps, samples, latents):
    dac = DACConfig()
    assert sizes.audio_num_samples(frames, fps, dac.sample_rate) == samples
    assert sizes.audio_latent_length(frames, fps, dac) == latents
    shapes = sizes.latent_shapes(2, 352, 640, frames, fps, dac, 128)
    assert shapes.video == (2, 16, (frames - 1) // 4 + 1, 44, 80) and shapes.audio == (2, 128, latents)


def test_trim_refuses_audio_shorter_than_the_video():
    wave = torch.zeros(1, 1, 100)
    assert audio.trim_to_video(wave, 9, 24.0, 240).shape[-1] == 90
    with pytest.raises(ValueError, match=r"has 100 samples but 9 frames at 24.0 fps need 112"):
        audio.trim_to_video(wave, 9, 24.0, 300)


def test_full_size_presets_have_the_published_parameter_counts():
    """Built on the meta device (no memory): 14.29B per video expert, 1.42B audio DiT, 2.66B bridge."""
    from comfyui_mova.mova_model.networks.bridge import DualTowerBridge
    from comfyui_mova.mova_model.configs import MOVA_360P, MOVA_720P
    from comfyui_mova.mova_model.networks.dit import WanDiT
    assert MOVA_360P == MOVA_720P  # same architecture, different weights
    with torch.device("meta"):
        parts = {"video": WanDiT(MOVA_360P.video), "audio": WanDiT(MOVA_360P.audio),
                 "bridge": DualTowerBridge(MOVA_360P.bridge)}
    billions = {k: round(sum(p.numel() for p in m.parameters()) / 1e9, 2) for k, m in parts.items()}
    assert billions == {"video": 14.29, "audio": 1.42, "bridge": 2.66}
