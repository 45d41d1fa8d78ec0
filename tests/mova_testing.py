"""Helpers shared by the tests (importable as a module: pytest puts tests/ on sys.path)."""

import torch


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 error ||out - ref|| / ||ref||, in float64."""
    out, ref = out.double(), ref.double()
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()


GOLDEN_TOL = 1e-4


def golden_scheduler(golden_cases):
    """The golden set's scheduler settings (those of its release's scheduler_config.json)."""
    from comfyui_mova.mova_model.configs import SchedulerConfig, config_from_dict
    return config_from_dict(SchedulerConfig, golden_cases["scheduler"])


def load_golden_towers(golden_dir, dtype=torch.float32, device="cpu"):
    """The golden tiny release as MovaTowers (high and low expert, audio DiT, bridge), freshly loaded."""
    from comfyui_mova.mova_model.weights import loading
    from comfyui_mova.mova_model.sampling import sampler
    ckpt = golden_dir / "checkpoint"
    load = lambda kind, folder: loading.load_component(ckpt, kind, dtype=dtype, device=device, component=folder)  # noqa: E731
    return sampler.MovaTowers([load("video_dit", "video_dit"), load("video_dit", "video_dit_2")],
                              load("audio_dit", "audio_dit"), load("dual_tower_bridge", "dual_tower_bridge"))
