"""MOVA as a denoiser for stock samplers (mova_model/sampling/denoiser.py), on the golden tiny model: Euler over the official
step sigmas is MOVA Sampler's run with every guidance option, kept regions and step caching; other sigma lists get
timestep = 1000·σ and the audio's own schedule through the shift map."""

import pytest
import torch

from comfyui_mova.mova_model.sampling import sampler, scheduler
from comfyui_mova.mova_model.sampling.denoiser import JointDenoiser
from comfyui_mova.mova_model.sampling.known_regions import KnownLatents
from mova_testing import golden_scheduler, load_golden_towers, rel_l2

STEPS = 6  # not a divisor of 1000: the official stepping snaps to the training grid
PARITY = 1e-5


@pytest.fixture(scope="module")
def towers(golden_dir):
    return load_golden_towers(golden_dir)


def _options(golden_cases, **options):
    config = golden_scheduler(golden_cases)
    return sampler.SamplingOptions(steps=options.pop("steps", STEPS), fps=golden_cases["fps"], shift=config.shift, scheduler=config,
                                   boundary_ratio=golden_cases["boundary_ratio"], **({"cfg_scale": 5.0} | options))


def _denoiser(towers, g, opts, sigmas, **kwargs):
    return JointDenoiser(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                         g["noise_audio"], opts, sigmas, dtype=torch.float32, device="cpu", **kwargs)


def euler(denoiser, video_noise, audio_noise, sigmas, video_latent=None, audio_latent=None):
    """ComfyUI's sample_euler (k-diffusion, no churn) after its flow noise scaling, on the two latents."""
    s0 = float(sigmas[0])
    video = s0 * video_noise + (1 - s0) * (torch.zeros_like(video_noise) if video_latent is None else video_latent)
    audio = s0 * audio_noise + (1 - s0) * (torch.zeros_like(audio_noise) if audio_latent is None else audio_latent)
    for i in range(len(sigmas) - 1):
        sigma, dt = sigmas[i], sigmas[i + 1] - sigmas[i]
        out = denoiser(video, audio, float(sigma))
        video = video + (video - out.video) / sigma * dt
        audio = audio + (audio - out.audio) / sigma * dt
    return video, audio


def _official(opts):
    return scheduler.make_schedule(opts.steps, opts.shift, opts.scheduler, snap=True).step_sigmas


def _both(towers, g, opts, known_video=None, known_audio=None, **kwargs):
    """(MOVA Sampler's result, Euler over the official sigmas through the denoiser, the denoiser)."""
    reference = sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                               g["noise_audio"], opts, known_video=known_video, known_audio=known_audio)
    sigmas = _official(opts)
    denoiser = _denoiser(towers, g, opts, sigmas, known_video=known_video, known_audio=known_audio, **kwargs)
    latents = [None if k is None else k.latents for k in (known_video, known_audio)]
    native = euler(denoiser, g["noise_video"], g["noise_audio"], sigmas, *latents)
    if denoiser.known is not None:  # as the guider does after the sampler: the kept parts exactly
        native = denoiser.known.finish(*native)
    return reference, native, denoiser


def _assert_parity(reference, native):
    for ref, out in zip(reference, native):
        assert rel_l2(out, ref) < PARITY, rel_l2(out, ref)


def test_euler_over_official_sigmas_is_mova_sampler(towers, golden_tensors, golden_cases):
    opts = _options(golden_cases)
    reference, native, denoiser = _both(towers, golden_tensors, opts)
    assert denoiser.official
    _assert_parity(reference, native)


@pytest.mark.parametrize("options", [
    {"audio_shift": 2.0, "audio_cfg_scale": 2.5},
    {"bridge_cfg_scale": 2.0, "cfg_cutoff": 0.5},
    {"cfg_scale": 1.0},
], ids=["audio_shift_cfg", "dual_cfg_cutoff", "no_cfg"])
def test_parity_with_every_guidance_option(towers, golden_tensors, golden_cases, options):
    opts = _options(golden_cases, **options)
    neg = None if opts.cfg_scale == 1.0 and opts.audio_cfg_scale is None else golden_tensors["context_neg"]
    g = dict(golden_tensors, context_neg=neg)
    reference, native, _ = _both(towers, g, opts)
    _assert_parity(reference, native)


def test_parity_with_kept_regions_and_given_modality_clean(towers, golden_tensors, golden_cases):
    g = golden_tensors
    gen = torch.Generator().manual_seed(5)
    given_video = torch.randn(g["noise_video"].shape, generator=gen)
    given_audio = torch.randn(g["noise_audio"].shape, generator=gen)
    video_mask = torch.ones(g["noise_video"].shape[0], 1, g["noise_video"].shape[2], 1, 1)
    video_mask[:, :, 0] = 0
    audio_mask = torch.ones(g["noise_audio"].shape[0], 1, g["noise_audio"].shape[-1])
    audio_mask[:, :, :3] = 0
    opts = _options(golden_cases)
    reference, native, _ = _both(towers, g, opts, KnownLatents(given_video, video_mask),
                                 KnownLatents(given_audio, audio_mask))
    _assert_parity(reference, native)
    assert torch.equal(native[0][:, :, 0], given_video[:, :, 0]) and torch.equal(native[1][..., :3], given_audio[..., :3])
    whole = KnownLatents(given_audio, torch.zeros_like(audio_mask))  # sound -> video, fed clean
    reference, native, _ = _both(towers, g, _options(golden_cases, clean_given=True), None, whole)
    _assert_parity(reference, native)
    assert torch.equal(native[1], given_audio)


def test_parity_with_step_caching(towers, golden_tensors, golden_cases):
    # the lowest threshold that skips a step with this golden set's random weights (they change a lot per step)
    for threshold in (0.3, 0.5, 1.0, 2.0, 4.0):
        opts = _options(golden_cases, cache_threshold=threshold, steps=8)
        stats = {}
        reference = sampler.sample(towers, golden_tensors["condition"], golden_tensors["context_pos"],
                                   golden_tensors["context_neg"], golden_tensors["noise_video"],
                                   golden_tensors["noise_audio"], opts, stats=stats)
        if stats["skipped_steps"] > 0:
            break
    sigmas = _official(opts)
    denoiser = _denoiser(towers, golden_tensors, opts, sigmas)
    native = euler(denoiser, golden_tensors["noise_video"], golden_tensors["noise_audio"], sigmas)
    _assert_parity(reference, native)
    assert denoiser.stats == {k: stats[k] for k in ("computed_steps", "skipped_steps")}
    assert stats["skipped_steps"] > 0


def test_other_sigmas_tell_the_towers_1000_sigma(towers, golden_tensors, golden_cases):
    """A stock schedule (here: the official sigmas unsnapped, what ComfyUI's simple scheduler gives) and a cut list:
    timestep 1000·σ; with an audio shift, the audio's sigma at the same point of its schedule and the derivative."""
    opts = _options(golden_cases, audio_shift=2.0)
    exact = scheduler.make_schedule(STEPS, opts.shift, opts.scheduler, snap=False).step_sigmas
    assert not torch.equal(exact, _official(opts))  # the official stepping differs: snapped sigmas
    denoiser = _denoiser(towers, golden_tensors, opts, exact)
    assert not denoiser.official
    sigma = float(exact[1])
    step, t_video, t_audio, rate = denoiser.timesteps(sigma)
    audio = scheduler.make_schedule(STEPS, 2.0, opts.scheduler, snap=False).timesteps
    assert step == 1 and t_video == pytest.approx(1000 * sigma) and t_audio == pytest.approx(float(audio[1]), rel=1e-5)
    h = 1e-4
    finite = (scheduler.reshift_sigma(sigma + h, opts.shift, 2.0)[0] - scheduler.reshift_sigma(sigma - h, opts.shift,
                                                                                               2.0)[0]) / (2 * h)
    assert rate == pytest.approx(finite, rel=1e-4)
    official = _official(opts)
    assert _denoiser(towers, golden_tensors, opts, official).official
    assert not _denoiser(towers, golden_tensors, opts, official[1:]).official  # a cut list: not recognised
    assert scheduler.reshift_sigma(0.3, 5.0, 5.0) == pytest.approx((0.3, 1.0))


def test_expert_hook_and_cfg_pp_parts(towers, golden_tensors, golden_cases):
    """before_expert runs at the switch; the prompt's and the negative prompt's predictions come with each call."""
    opts = _options(golden_cases)
    calls = []
    sigmas = _official(opts)
    denoiser = _denoiser(towers, golden_tensors, opts, sigmas, before_expert=calls.append)
    euler(denoiser, golden_tensors["noise_video"], golden_tensors["noise_audio"], sigmas)
    switch = [sampler.expert_index(t, opts.boundary_ratio, 1000) for t in
              scheduler.make_schedule(STEPS, opts.shift, opts.scheduler).timesteps.tolist()]
    assert calls == sorted(set(switch)) and calls[0] == 0
    out = denoiser(golden_tensors["noise_video"], golden_tensors["noise_audio"], float(sigmas[0]))
    guided = out.uncond[0] + 5.0 * (out.cond[0] - out.uncond[0])
    assert rel_l2(out.video, guided) < 1e-5 and rel_l2(out.cond[0], out.uncond[0]) > 1e-3
