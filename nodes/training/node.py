"""MOVA Train LoRA node: the training run with ComfyUI's memory manager, progress per step and Cancel."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ...mova_model.training.trainer import EXPERT_NAMES, StepRecord, TrainSettings
from .. import spec
from ..comfy_io import schema, show_text
from ..handles import LoadedPart
from ..input_values import checked_inputs
from .loss_plot import plot_losses
from .run import parts_from_switches, recipe_settings, report, run_folder, train_parts, training_memory

log = logging.getLogger(__name__)


class MovaTrainLora(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(spec.TRAIN_LORA, hidden=[io.Hidden.unique_id])

    @classmethod
    @checked_inputs(spec.TRAIN_LORA)
    def execute(cls, high_noise_expert: LoadedPart, low_noise_expert: LoadedPart, audio_tower: LoadedPart, dataset,
                run_name: str, steps: int, rank: int, alpha: float, learning_rate: float, batch_size: int,
                grad_accumulation: int, seed: int, train_high_noise: bool, train_low_noise: bool, train_audio: bool,
                train_bridge: bool, gradient_checkpointing: bool, checkpoint_every: int, resume: bool,
                offload_activations: bool = True, recipe: str = "custom") -> io.NodeOutput:
        parts = parts_from_switches(train_high_noise=train_high_noise, train_low_noise=train_low_noise,
                                    train_audio=train_audio, train_bridge=train_bridge)
        settings = TrainSettings(**recipe_settings(recipe, rank, alpha), learning_rate=learning_rate, steps=steps,
                                 batch_size=batch_size, grad_accumulation=grad_accumulation, seed=seed, parts=parts,
                                 gradient_checkpointing=gradient_checkpointing, checkpoint_every=checkpoint_every,
                                 offload_activations=offload_activations)
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        folder = run_folder(Path(folder_paths.get_output_directory()) / "mova_training", run_name)
        experts = (high_noise_expert, low_noise_expert)
        memory = training_memory(dataset, high_noise_expert, audio_tower, settings) if hasattr(dataset, "video") else 0

        def before_step(index: int) -> None:
            mm.throw_exception_if_processing_interrupted()
            mm.load_models_gpu([experts[index].patcher, audio_tower.patcher], memory_required=memory)

        progress = comfy.utils.ProgressBar(steps)

        def on_step(record: StepRecord, total: int) -> None:
            progress.update_absolute(record.step, total)
            show_text(cls.hidden.unique_id, f"step {record.step}/{total}: {EXPERT_NAMES[record.expert]} expert, "
                      f"loss {record.loss:.4g} (video {record.video_loss:.4g}, audio {record.audio_loss:.4g})")
            mm.throw_exception_if_processing_interrupted()

        lora, result = train_parts(high_noise_expert, low_noise_expert, audio_tower, dataset, settings, folder, resume,
                                   run_name, device=mm.get_torch_device(), before_step=before_step, on_step=on_step)
        text = report(result, settings)
        log.info("MOVA Train LoRA %s: %s", run_name, text.replace("\n", "; "))
        show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(lora, plot_losses(result.history), ui=ui.PreviewText(text))
