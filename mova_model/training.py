"""LoRA training of MOVA, the official trainers' recipe on our own networks.

One optimizer step trains one video expert: with both experts in the rotation, even steps use the
high-noise expert with a timestep at or above the boundary (0.9 · 1000), odd steps the low-noise expert
below it. Timesteps are drawn uniformly from the scheduler's 1000-entry training grid (shifted sigmas);
the noisy latents are (1 − σ)·x + σ·ε, the target is ε − x for video and for audio, and the loss is the
sum of the two mean squared errors. Gradients of ``grad_accumulation`` micro-batches are averaged, clipped
to norm 1.0, then AdamW (lr 1e-4, weight decay 0.01) updates the float32 LoRA weights.

Every random draw (clip order, timestep, noise) comes from a generator seeded by (seed, step), so a run
resumed from a checkpoint continues exactly the loss curve of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .configs import SchedulerConfig
from .joint import check_towers, joint_forward
from .latent_dataset import LatentDataset
from .lora_train import COMPONENTS, LoraSet, attached, make_lora_set, release_inference_tensors
from .sampler import MovaTowers
from .scheduler import shifted_sigmas
from .training_checkpoint import TrainingCheckpoints
from .training_guard import StepGuard, check_dataset_finite

HIGH, LOW = 0, 1
EXPERT_NAMES = {HIGH: "high-noise", LOW: "low-noise"}


@dataclass(frozen=True)
class TrainSettings:
    """The official defaults: rank 8, alpha 8, lr 1e-4, AdamW weight decay 0.01, gradient clip 1.0."""

    rank: int = 8
    alpha: float = 8.0
    learning_rate: float = 1e-4
    steps: int = 100
    batch_size: int = 1
    grad_accumulation: int = 1
    seed: int = 0
    parts: tuple[str, ...] = COMPONENTS       # LoRA components that train
    gradient_checkpointing: bool = True
    offload_activations: bool = True          # keep what the backward pass needs in host memory
    checkpoint_every: int = 50
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    boundary_ratio: float = 0.9

    # What a checkpoint must share with the settings to be continued (the rest may change between runs).
    RESUME_KEYS = ("rank", "alpha", "learning_rate", "batch_size", "grad_accumulation", "seed", "parts",
                   "grad_clip", "weight_decay", "boundary_ratio")

    def problems(self) -> list[str]:
        """What is wrong with these settings, in words (empty when they are usable)."""
        out = []
        for name in ("rank", "steps", "batch_size", "grad_accumulation", "checkpoint_every"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            out.append(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.alpha > 0:
            out.append(f"alpha must be positive, got {self.alpha}")
        if not 0.0 < self.boundary_ratio < 1.0:
            out.append(f"boundary_ratio must lie between 0 and 1, got {self.boundary_ratio}")
        unknown = [p for p in self.parts if p not in COMPONENTS]
        if unknown:
            out.append(f"unknown parts {unknown}: choose from {', '.join(COMPONENTS)}")
        if not self.parts:
            out.append("no part is chosen to train: switch on at least one of the high-noise expert, the low-noise "
                       "expert, the audio DiT or the bridge")
        return out

    def resume_values(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if k in self.RESUME_KEYS}


@dataclass
class StepRecord:
    """One optimizer step (1-based): which expert trained, its mean losses and mean timestep."""

    step: int
    expert: int
    loss: float
    video_loss: float
    audio_loss: float
    timestep: float


@dataclass
class TrainResult:
    """The LoRA in the official key layout (float32, CPU), its rank/alpha, and the whole loss history."""

    state: dict[str, torch.Tensor]
    rank: int
    alpha: float
    history: list[StepRecord]
    resumed_from: int = 0          # the step the run continued from (0: started fresh)
    checkpoint: str | None = None  # the last checkpoint written or read
    notes: list[str] = field(default_factory=list)


def training_grid(config: SchedulerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The scheduler's training grid: sigmas [N] from 1 downwards and timesteps 1000·sigma [N] (N = 1000)."""
    sigmas = shifted_sigmas(config.num_train_timesteps, config.shift, config)
    return sigmas, sigmas * config.num_train_timesteps


def boundary_index(timesteps: torch.Tensor, boundary_ratio: float, num_train_timesteps: int) -> int:
    """How many grid entries lie at or above the boundary: indices [0, n) belong to the high-noise expert."""
    return int((timesteps >= boundary_ratio * num_train_timesteps).sum())


def rotation(parts: tuple[str, ...]) -> tuple[int, ...]:
    """The experts whose steps train something: both when the audio DiT or bridge train (official parity)."""
    shared = any(p in parts for p in ("audio_dit", "dual_tower_bridge"))
    return tuple(e for e, name in ((HIGH, "video_dit"), (LOW, "video_dit_2")) if shared or name in parts)


def expert_for_step(step: int, experts: tuple[int, ...]) -> int:
    """Step (0-based) -> expert: even steps the high-noise expert, odd steps the low-noise one when both train."""
    return experts[step % len(experts)]


def step_generator(seed: int, *key) -> torch.Generator:
    """A CPU generator seeded from (seed, *key): every step's draws are reproducible on their own."""
    digest = hashlib.sha256(repr((int(seed), *key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def sample_indices(seed: int, step: int, micro: int, settings: TrainSettings, num_clips: int) -> list[int]:
    """Clips of one micro-batch: the clips in a fresh random order each epoch, taken batch by batch."""
    out = []
    for j in range(settings.batch_size):
        position = (step * settings.grad_accumulation + micro) * settings.batch_size + j
        epoch, k = divmod(position, num_clips)
        order = torch.randperm(num_clips, generator=step_generator(seed, "order", epoch))
        out.append(int(order[k]))
    return out


def sample_timestep(expert: int, n_high: int, grid_size: int, generator: torch.Generator) -> int:
    """A training-grid index for ``expert``: uniform over [0, n_high) (high) or [n_high, grid_size) (low)."""
    low, high = (0, n_high) if expert == HIGH else (n_high, grid_size)
    if high <= low:
        raise ValueError(f"the {EXPERT_NAMES[expert]} expert has no timesteps on the training grid at this "
                         "boundary_ratio")
    return low + int(torch.randint(high - low, (1,), generator=generator))


def flow_matching_loss(expert, towers: MovaTowers, batch, sigma: float, timestep: float, noise_gen, fps: float,
                       dtype: torch.dtype, device, checkpoint: bool,
                       offload: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(video MSE, audio MSE) of one batch at one noise level: noisy = (1−σ)x + σε, target ε − x.
    ``offload`` keeps the tensors saved for the backward pass in (pinned) host memory."""
    device = torch.device(device)
    video, condition, audio, text = (t.to(device) for t in batch)
    video_noise = torch.randn(video.shape, generator=noise_gen).to(device)
    audio_noise = torch.randn(audio.shape, generator=noise_gen).to(device)
    noisy_video = (1 - sigma) * video + sigma * video_noise
    noisy_audio = (1 - sigma) * audio + sigma * audio_noise
    t = torch.tensor([timestep], device=device)
    keep = torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda") if offload else contextlib.nullcontext()
    with keep:
        out = joint_forward(expert, towers.audio_dit, towers.bridge, torch.cat([noisy_video, condition], dim=1),
                            noisy_audio, text, t, t, fps, dtype=dtype, checkpoint=checkpoint)
    return F.mse_loss(out.video, video_noise - video), F.mse_loss(out.audio, audio_noise - audio)


def check_dataset(dataset: LatentDataset, towers: MovaTowers) -> None:
    """Raise a ValueError saying what to change when the dataset was made for other networks."""
    video_dit, audio_dit, bridge = towers.video_experts[0], towers.audio_dit, towers.bridge
    if dataset.text.shape[-1] != video_dit.config.text_dim:
        raise ValueError(f"the dataset's captions have {dataset.text.shape[-1]} features per token, MOVA needs "
                         f"{video_dit.config.text_dim} (UMT5-XXL): build the dataset with the umt5_xxl CLIP, type wan.")
    if dataset.audio.shape[1] != audio_dit.config.in_dim:
        raise ValueError(f"the dataset's audio latents have {dataset.audio.shape[1]} channels, the audio DiT takes "
                         f"{audio_dit.config.in_dim}: build the dataset with the audio VAE of this MOVA release.")
    if not math.isclose(dataset.latent_rate, bridge.config.audio_fps, rel_tol=1e-6):
        raise ValueError(f"the dataset's audio runs at {dataset.latent_rate:g} latents/s, the audio tower was trained "
                         f"at {bridge.config.audio_fps:g}: build the dataset with the audio VAE of this MOVA release.")
    if dataset.condition.shape[1] + dataset.video.shape[1] != video_dit.config.in_dim:
        raise ValueError(f"the dataset's video latents and condition have {dataset.video.shape[1]} + "
                         f"{dataset.condition.shape[1]} channels, the video expert takes {video_dit.config.in_dim}: "
                         "build the dataset with the Wan 2.1 VAE.")


def _parts(towers: MovaTowers) -> dict:
    high, low = towers.video_experts
    return {"video_dit": high, "video_dit_2": low, "audio_dit": towers.audio_dit, "dual_tower_bridge": towers.bridge}


def prepare_networks(towers: MovaTowers, all_parameters: bool = True) -> None:
    """Freeze the networks and make their tensors usable by autograd (see ``release_inference_tensors``)."""
    for model in {id(m): m for m in _parts(towers).values()}.values():
        if "block_swap" in model.__dict__:
            raise ValueError("block swap is on for a network to train: training needs every block resident "
                             "(disable_block_swap first)")
        release_inference_tensors(model, all_parameters)


def train_lora(
    towers: MovaTowers,
    dataset: LatentDataset,
    settings: TrainSettings,
    checkpoints: TrainingCheckpoints | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    scheduler: SchedulerConfig | None = None,
    before_step: Callable[[int], None] | None = None,
    on_step: Callable[[StepRecord, int], None] | None = None,
) -> TrainResult:
    """Train a LoRA on ``towers`` (both video experts, audio DiT, bridge) with ``dataset``.

    ``checkpoints`` (optional) saves every ``settings.checkpoint_every`` steps and at the end, and continues
    from its latest checkpoint when there is one. ``before_step(expert)`` runs before each micro-batch (load
    the expert; raise inside to stop); ``on_step(record, total_steps)`` after each optimizer step (raise
    inside to stop: the last checkpoint stays).
    ``dtype`` is the compute dtype (default: the high-noise expert's weights' dtype, bf16 for fp8 weights)."""
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if len(towers.video_experts) != 2 or any(e is None for e in towers.video_experts):
        raise ValueError("training needs both video experts (high-noise and low-noise)")
    for expert in towers.video_experts:
        check_towers(expert, towers.audio_dit, towers.bridge)
    check_dataset(dataset, towers)
    check_dataset_finite(dataset)
    scheduler = scheduler or SchedulerConfig()
    parts = _parts(towers)
    first = next(parts["video_dit"].parameters())
    device = torch.device(device) if device is not None else first.device
    if dtype is None:
        dtype = torch.bfloat16 if first.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else first.dtype

    with torch.inference_mode(False):
        prepare_networks(towers)
        trained = {name: parts[name] for name in settings.parts}
        lora = make_lora_set(trained, settings.rank, settings.alpha, settings.seed).to(device)
        optimizer = torch.optim.AdamW(lora.parameters(), lr=settings.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=settings.weight_decay)
        history, start, last = [], 0, None
        if checkpoints is not None:
            resumed = checkpoints.resume(settings, dataset.fingerprint, lora, optimizer)
            if resumed is not None:
                start, history, last = resumed
        guard = StepGuard(dataset, settings, checkpoints)
        with torch.enable_grad(), attached(lora, trained):
            _loop(towers, dataset, settings, lora, optimizer, history, start, checkpoints, device, dtype,
                  scheduler, before_step, on_step, guard)
        if checkpoints is not None and history and history[-1].step > start:
            last = checkpoints.last_saved or last
        state = lora.state_dict()
        guard.weights(history[-1].step if history else 0, state, "handing the LoRA on")
        return TrainResult(state=state, rank=settings.rank, alpha=settings.alpha, history=history,
                           resumed_from=start, checkpoint=str(last) if last else None,
                           notes=list(checkpoints.notes) if checkpoints is not None else [])


def _loop(towers, dataset, settings, lora: LoraSet, optimizer, history, start, checkpoints, device, dtype,
          scheduler, before_step, on_step, guard: StepGuard):
    sigmas, timesteps = training_grid(scheduler)
    n_high = boundary_index(timesteps, settings.boundary_ratio, scheduler.num_train_timesteps)
    experts = rotation(settings.parts)
    params = lora.parameters()
    for step in range(start, settings.steps):
        expert = expert_for_step(step, experts)
        losses = torch.zeros(2)
        used, used_clips = [], []
        for micro in range(settings.grad_accumulation):
            if before_step is not None:
                before_step(expert)
                prepare_networks(towers, all_parameters=False)  # weights the host (re)loaded meanwhile
            gen = step_generator(settings.seed, "step", step, micro)
            index = sample_timestep(expert, n_high, len(timesteps), gen)
            indices = sample_indices(settings.seed, step, micro, settings, len(dataset))
            batch = dataset.batch(indices)
            video_loss, audio_loss = flow_matching_loss(
                towers.video_experts[expert], towers, batch, float(sigmas[index]), float(timesteps[index]), gen,
                dataset.fps, dtype, device, settings.gradient_checkpointing, settings.offload_activations)
            guard.loss(step + 1, EXPERT_NAMES[expert], indices, video_loss, audio_loss, float(timesteps[index]))
            ((video_loss + audio_loss) / settings.grad_accumulation).backward()
            used_clips += indices
            losses += torch.stack([video_loss.detach().cpu(), audio_loss.detach().cpu()])
            used.append(float(timesteps[index]))
        norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                              settings.grad_clip if settings.grad_clip > 0 else math.inf)
        guard.gradients(step + 1, EXPERT_NAMES[expert], used_clips, norm)  # before the update
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        video_loss, audio_loss = (losses / settings.grad_accumulation).tolist()
        record = StepRecord(step=step + 1, expert=expert, loss=video_loss + audio_loss, video_loss=video_loss,
                            audio_loss=audio_loss, timestep=sum(used) / len(used))
        history.append(record)
        if checkpoints is not None and ((step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps):
            checkpoints.save(step + 1, settings, dataset.fingerprint, lora, optimizer, history, guard)
        if on_step is not None:
            on_step(record, settings.steps)
