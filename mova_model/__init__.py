"""MOVA inference in plain PyTorch (no ComfyUI imports).

Main entry points: ``load_component`` (weights -> network), ``MovaTowers`` + ``sample``
(joint video/audio denoising), ``decode_audio`` (DAC -> waveform), configs in ``configs``.
"""

from .configs import MOVA_360P, MOVA_720P, BridgeConfig, DACConfig, DiTConfig, MovaConfig, SchedulerConfig
from .sampling.audio import decode_audio, trim_to_video
from .sampling.joint import joint_forward
from .sampling.sampler import MovaTowers, SamplingOptions, make_noise, sample
from .sampling.sizes import audio_latent_length, audio_num_samples, check_video_size, latent_shapes
from .weights.checkpoint import CheckpointError, open_checkpoint
from .weights.loading import load_component

__all__ = [
    "BridgeConfig", "CheckpointError", "DACConfig", "DiTConfig", "MOVA_360P", "MOVA_720P", "MovaConfig",
    "MovaTowers", "SamplingOptions", "SchedulerConfig", "audio_latent_length", "audio_num_samples",
    "check_video_size", "decode_audio", "joint_forward", "latent_shapes", "load_component", "make_noise",
    "open_checkpoint", "sample", "trim_to_video",
]
