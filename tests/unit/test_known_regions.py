"""Known regions in the core sampler (noise masks, 1 = generate, 0 = keep) on the golden tiny model: the kept
parts are re-noised at every step's model input, exact at the end, fed clean at timestep 0 on request, and this
holds with every guidance option and step caching."""

import pytest
import torch

from comfyui_mova.mova_model.sampling import sampler, scheduler
from comfyui_mova.mova_model.sampling.known_regions import KnownLatents
from comfyui_mova.mova_model.networks.layers import timestep_sinusoid
from mova_testing import load_golden_towers

STEPS = 4


@pytest.fixture(scope="module")
def towers(golden_dir):
    return load_golden_towers(golden_dir)


@pytest.fixture(scope="module")
def given(golden_tensors):
    """Clean latents to keep (seeded, other than the noise) in the golden latents' shapes."""
    gen = torch.Generator().manual_seed(11)
    video = torch.randn(golden_tensors["noise_video"].shape, generator=gen)
    audio = torch.randn(golden_tensors["noise_audio"].shape, generator=gen)
    return video, audio


def _masks(golden_tensors, video_keep=(0,), audio_keep=slice(0, 7)):
    """Noise masks: latent frames ``video_keep`` and audio steps ``audio_keep`` kept (0), the rest generated."""
    b, _, t = golden_tensors["noise_video"].shape[:3]
    video = torch.ones(b, 1, t, 1, 1)
    video[:, :, list(video_keep)] = 0
    audio = torch.ones(b, 1, golden_tensors["noise_audio"].shape[-1])
    audio[:, :, audio_keep] = 0
    return video, audio


class InputSpy:
    """Records what each tower really receives (forward pre-hooks on the patch and time embeddings), grouped
    by sampling step through the sampler's step callback."""

    def __init__(self, towers):
        self.steps, self._current = [], {"video": [], "audio": [], "t_video": [], "t_audio": []}
        self._hooks = []
        for dit in [*towers.video_experts, towers.audio_dit]:
            kind = "video" if dit is not towers.audio_dit else "audio"
            self._hooks.append(dit.patch_embedding.register_forward_pre_hook(self._record(kind)))
            self._hooks.append(dit.time_embedding[0].register_forward_pre_hook(self._record("t_" + kind)))

    def _record(self, key):
        def hook(module, args):
            self._current[key].append(args[0].detach().clone())
        return hook

    def callback(self, step, total, video, audio):
        self.steps.append(self._current)
        self._current = {k: [] for k in self._current}

    def close(self):
        for h in self._hooks:
            h.remove()


def _run(towers, g, fps, known_video=None, known_audio=None, spy=None, before_expert=None, **options):
    opts = sampler.SamplingOptions(steps=STEPS, fps=fps, **({"cfg_scale": 5.0} | options))
    return sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                          g["noise_audio"], opts, callback=spy.callback if spy else None,
                          before_expert=before_expert, known_video=known_video, known_audio=known_audio)


def _timesteps(shift, steps=STEPS):
    return scheduler.make_schedule(steps, shift, sampler.SamplingOptions().scheduler).timesteps.tolist()


def _sigmas(shift, steps=STEPS):
    """The sigma each step's model is told: timestep / 1000."""
    return [t / 1000 for t in _timesteps(shift, steps)]


def _check_kept(towers, g, fps, given, masks, audio_shift=None, **options):
    """Run with both modalities partly kept and check every model input and the result."""
    known_v, known_a = KnownLatents(given[0], masks[0]), KnownLatents(given[1], masks[1])
    spy = InputSpy(towers)
    try:
        video, audio = _run(towers, g, fps, known_v, known_a, spy, audio_shift=audio_shift, **options)
    finally:
        spy.close()
    keep_v, keep_a = masks[0].expand_as(given[0]) == 0, masks[1].expand_as(given[1]) == 0
    # the result holds the given latents exactly where kept, generated values elsewhere
    assert torch.equal(video[keep_v], given[0][keep_v]) and torch.equal(audio[keep_a], given[1][keep_a])
    assert not torch.equal(video[~keep_v], given[0][~keep_v]) and not torch.equal(audio[~keep_a], given[1][~keep_a])
    sig_v, sig_a = _sigmas(5.0), _sigmas(audio_shift or 5.0)
    assert len(spy.steps) == STEPS
    calls = 0
    for i, step in enumerate(spy.steps):
        renoised_v = sig_v[i] * g["noise_video"] + (1 - sig_v[i]) * given[0]
        renoised_a = sig_a[i] * g["noise_audio"] + (1 - sig_a[i]) * given[1]
        for x in step["video"]:
            keep = keep_v.expand_as(x[:, :16])
            assert torch.equal(x[:, :16][keep], renoised_v.expand_as(keep)[keep]), f"step {i}: video not re-noised"
            assert torch.equal(x[:, 16:], g["condition"].expand(x.shape[0], -1, -1, -1, -1))
        for x in step["audio"]:
            assert torch.equal(x[keep_a.expand_as(x)], renoised_a.expand_as(x)[keep_a.expand_as(x)]), \
                f"step {i}: audio input not re-noised"
        calls += len(step["video"])
    return calls


def test_kept_regions_renoised_at_every_step_and_exact_at_the_end(towers, golden_tensors, golden_cases, given):
    calls = _check_kept(towers, golden_tensors, golden_cases["fps"], given, _masks(golden_tensors))
    assert calls >= STEPS


def test_mask_of_ones_changes_nothing(towers, golden_tensors, golden_cases, given):
    g, fps = golden_tensors, golden_cases["fps"]
    ones_v, ones_a = torch.ones_like(_masks(g)[0]), torch.ones_like(_masks(g)[1])
    plain = _run(towers, g, fps)
    masked = _run(towers, g, fps, KnownLatents(given[0], ones_v), KnownLatents(given[1], ones_a))
    assert torch.equal(plain[0], masked[0]) and torch.equal(plain[1], masked[1])


@pytest.mark.parametrize("options", [
    dict(bridge_cfg_scale=3.5),                                    # dual CFG (three passes)
    dict(bridge_cfg_scale=3.5, batch_cfg=True),                    # batched CFG passes
    dict(audio_cfg_scale=2.0, audio_shift=2.0),                    # audio CFG and its own schedule
    dict(cfg_cutoff=0.4),                                          # CFG cut-off
    dict(cache_threshold=10.0),                                    # step caching (skips every step it may)
    dict(bridge_cfg_scale=3.5, cache_threshold=10.0, audio_shift=3.0),
], ids=["dual_cfg", "batched", "audio_cfg_shift", "cutoff", "caching", "dual_cfg_caching_shift"])
def test_kept_regions_with_every_guidance_option(towers, golden_tensors, golden_cases, given, options):
    _check_kept(towers, golden_tensors, golden_cases["fps"], given, _masks(golden_tensors, (1,), slice(5, 12)),
                **options)


def test_caching_still_skips_with_kept_regions(towers, golden_tensors, golden_cases, given):
    g = golden_tensors
    masks = _masks(g)
    stats = {}
    opts = sampler.SamplingOptions(steps=10, fps=golden_cases["fps"], cache_threshold=10.0)
    video, _ = sampler.sample(towers, g["condition"], g["context_pos"], g["context_neg"], g["noise_video"],
                              g["noise_audio"], opts, stats=stats, known_video=KnownLatents(given[0], masks[0]),
                              known_audio=KnownLatents(given[1], masks[1]))
    assert stats["skipped_steps"] > 0
    keep = masks[0].expand_as(video) == 0
    assert torch.equal(video[keep], given[0][keep])


@pytest.mark.parametrize("options", [{}, dict(bridge_cfg_scale=3.5, cache_threshold=10.0)], ids=["cfg", "dual_cache"])
def test_whole_audio_fed_clean_at_timestep_zero(towers, golden_tensors, golden_cases, given, options):
    g, fps = golden_tensors, golden_cases["fps"]
    whole = torch.zeros(1, 1, g["noise_audio"].shape[-1])
    spy = InputSpy(towers)
    try:
        video, audio = _run(towers, g, fps, known_audio=KnownLatents(given[1], whole), spy=spy, clean_given=True,
                            **options)
    finally:
        spy.close()
    assert torch.equal(audio, given[1])
    zero = timestep_sinusoid(torch.zeros(1), towers.audio_dit.config.freq_dim)
    timesteps = _timesteps(5.0)
    for i, step in enumerate(spy.steps):
        assert step["audio"] and all(torch.equal(x, given[1].expand_as(x)) for x in step["audio"])
        assert all(torch.equal(t, zero.expand_as(t)) for t in step["t_audio"])
        video_t = timestep_sinusoid(torch.tensor([timesteps[i]]), towers.video_experts[0].config.freq_dim)
        assert all(torch.equal(t, video_t.expand_as(t)) for t in step["t_video"])  # the video keeps its schedule


def test_whole_video_fed_clean_uses_the_low_noise_expert_only(towers, golden_tensors, golden_cases, given):
    g, fps = golden_tensors, golden_cases["fps"]
    whole = torch.zeros(1, 1, g["noise_video"].shape[2], 1, 1)
    loaded, spy = [], InputSpy(towers)
    try:
        video, audio = _run(towers, g, fps, known_video=KnownLatents(given[0], whole), spy=spy,
                            before_expert=loaded.append, clean_given=True)
    finally:
        spy.close()
    assert torch.equal(video, given[0]) and loaded == [1]  # timestep 0 is the low-noise expert's range
    zero = timestep_sinusoid(torch.zeros(1), towers.video_experts[1].config.freq_dim)
    for step in spy.steps:
        assert all(torch.equal(x[:, :16], given[0].expand(x.shape[0], -1, -1, -1, -1)) for x in step["video"])
        assert all(torch.equal(t, zero.expand_as(t)) for t in step["t_video"])


def test_clean_option_leaves_partly_kept_modalities_renoised(towers, golden_tensors, golden_cases, given):
    """clean_given only applies to a modality given whole; partly kept ones are re-noised as usual."""
    _check_kept(towers, golden_tensors, golden_cases["fps"], given, _masks(golden_tensors), clean_given=True)


def test_whole_video_renoised_by_default(towers, golden_tensors, golden_cases, given):
    g, fps = golden_tensors, golden_cases["fps"]
    whole = torch.zeros(1, 1, g["noise_video"].shape[2], 1, 1)
    loaded = []
    video, _ = _run(towers, g, fps, known_video=KnownLatents(given[0], whole), before_expert=loaded.append)
    assert torch.equal(video, given[0]) and loaded == [0, 1]  # both experts, on the usual schedule


@pytest.mark.parametrize("make_mask, message", [
    (lambda frames: torch.zeros(1, 1, frames - 1, 1, 1), "video noise mask \\(1, 1, {short}, 1, 1\\) does not fit.*"
                                                         "one value per latent frame"),
    (lambda frames: torch.full((1, 1, frames, 1, 1), 2.0), "noise mask must lie in 0..1"),
], ids=["one frame short", "outside 0..1"])
def test_bad_video_masks(towers, golden_tensors, golden_cases, given, make_mask, message):
    frames = given[0].shape[2]  # latent frames of the golden case
    with pytest.raises(ValueError, match=message.format(short=frames - 1)):
        _run(towers, golden_tensors, golden_cases["fps"], known_video=KnownLatents(given[0], make_mask(frames)))


def test_given_latents_of_another_size(towers, golden_tensors, golden_cases, given):
    with pytest.raises(ValueError, match="given audio latents .* but the audio latent is"):
        _run(towers, golden_tensors, golden_cases["fps"],
             known_audio=KnownLatents(given[1][..., :-1], torch.zeros(1, 1, given[1].shape[-1] - 1)))
