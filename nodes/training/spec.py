"""The training wing's specs: MOVA Dataset and MOVA Train LoRA (plain data; nodes in node.py). The choices come
from the logic that checks them."""

from __future__ import annotations

from ..spec_types import AUDIO_TOWER, AUDIO_VAE, DATASET, LORA, SEED_MAX, VIDEO_EXPERT, NodeSpec, Socket, Widget
from .dataset import FPS_MODES
from .run import RECIPE_CHOICES

# MOVA Train LoRA's recipes: custom (q, k, v, o with the rank / alpha widgets) and the two official trainers' recipes
LORA_RECIPES = tuple(RECIPE_CHOICES)

DATASET_NODE = NodeSpec(
    node_id="MovaDataset",
    display_name="MOVA Dataset",
    description="Turns a folder of clips (video files with sound, each with a same-name .txt caption) into MOVA "
    "training latents: every clip fitted to width x height x length at fps, encoded once (Wan 2.1 VAE, MOVA's "
    "audio VAE, the text encoder) and cached in output/mova_datasets; unchanged inputs reuse the cache.",
    inputs=(
        Socket("vae", "VAE", "The Wan 2.1 VAE (wan_2.1_vae.safetensors): encodes the clips and their first frames."),
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec: encodes the clips' sound (mixed to mono at its rate)."),
        Socket("clip", "CLIP", "The text encoder (umt5_xxl with Load CLIP, type wan): encodes each caption as CLIP "
               "Text Encode does."),
        Widget("folder", "STRING", default="mova_clips",
               tooltip="The clip folder: a folder inside ComfyUI/input (or a full path inside a folder listed in the "
               "environment variable MOVA_DATASET_FOLDERS). Each clip (mp4, mov, mkv, webm, "
               "avi) needs a sound track and a caption in a .txt file of the same name."),
        Widget("width", "INT", default=640, min=16, max=4096, step=16,
               tooltip="Training width in pixels, a multiple of 16: clips are centre-cropped and resized to it "
               "(640 for 360p)."),
        Widget("height", "INT", default=352, min=16, max=4096, step=16,
               tooltip="Training height in pixels, a multiple of 16 (352 for 360p)."),
        Widget("length", "INT", default=193, min=1, max=1025, step=4,
               tooltip="Frames per clip, 4k+1 (193 = about 8 s at 24 fps): the first frames of each clip; shorter "
               "clips are refused."),
        Widget("fps", "FLOAT", default=24.0, min=1.0, max=120.0, step=1.0, round=0.001,
               tooltip="Frame rate of the training clips; it also sets how much sound each clip gives."),
        Widget("fps_mode", "COMBO", default="refuse", options=FPS_MODES,
               tooltip="Clips at another frame rate: refuse stops with a list of them; resample picks the frame "
               "nearest each time step (reported on the node)."),
    ),
    outputs=(Socket("dataset", DATASET, "The encoded clips, for MOVA Train LoRA."),),
)


def _switch(name: str, what: str) -> Widget:
    return Widget(name, "BOOLEAN", default=True,
                  tooltip=f"Train a LoRA on {what} (the recipe's layers: q, k, v, o, or with 8-GPU also the FFN). "
                  "Off: it stays frozen.")


TRAIN_LORA = NodeSpec(
    node_id="MovaTrainLora",
    display_name="MOVA Train LoRA",
    description="Trains a MOVA LoRA the way the official trainers do (even steps the high-noise expert, odd steps "
    "the low-noise one; flow-matching loss on video and sound). Saves a checkpoint every few steps in "
    "output/mova_training/<run_name> and continues from it when queued again.",
    inputs=(
        Socket("high_noise_expert", VIDEO_EXPERT, "The high-noise video expert (video_dit), bf16 or fp8: its weights "
               "stay frozen."),
        Socket("low_noise_expert", VIDEO_EXPERT, "The low-noise video expert (video_dit_2), bf16 or fp8."),
        Socket("audio_tower", AUDIO_TOWER, "Audio DiT + bridge from the MOVA Audio Tower Loader."),
        Socket("dataset", DATASET, "The encoded clips from MOVA Dataset."),
        Widget("run_name", "STRING", default="my_mova_lora",
               tooltip="Name of this training run: its checkpoints go to output/mova_training/<run_name>. Queue the "
               "same run again (more steps) to continue it."),
        Widget("steps", "INT", default=200, min=1, max=1000000,
               tooltip="Optimizer steps in all (a continued run counts the steps it already has). Each step trains "
               "one expert, alternating."),
        Widget("rank", "INT", default=8, min=1, max=256,
               tooltip="LoRA rank, used with recipe custom (the official recipes set their own: 8 in the low-resource "
               "trainer, 16 in the 8-GPU trainer)."),
        Widget("alpha", "FLOAT", default=8.0, min=0.01, max=1024.0, step=0.01,
               tooltip="LoRA alpha: the update is scaled by alpha / rank. Used with recipe custom (the official "
               "recipes set their own: 8 in the low-resource trainer, 16 in the 8-GPU trainer)."),
        Widget("learning_rate", "FLOAT", default=0.0001, min=0.000001, max=1.0, step=0.000001, round=0.000001,
               tooltip="AdamW learning rate (0.0001 official), constant; weight decay 0.01 and gradient clipping "
               "at 1.0 as in the official trainers."),
        Widget("batch_size", "INT", default=1, min=1, max=64, tooltip="Clips per micro-batch (1 official)."),
        Widget("grad_accumulation", "INT", default=1, min=1, max=1024,
               tooltip="Micro-batches whose gradients add up before each optimizer step (the official configs use 4)."),
        Widget("seed", "INT", default=0, min=0, max=SEED_MAX, control_after_generate=True,
               tooltip="Seed of the LoRA's initial weights and of every clip order, timestep and noise draw."),
        _switch("train_high_noise", "the high-noise expert"),
        _switch("train_low_noise", "the low-noise expert"),
        _switch("train_audio", "the audio DiT"),
        _switch("train_bridge", "the dual-tower bridge"),
        Widget("gradient_checkpointing", "BOOLEAN", default=True,
               tooltip="Recompute each block in the backward pass instead of keeping its activations: much less "
               "memory, about a third more time."),
        Widget("checkpoint_every", "INT", default=50, min=1, max=100000,
               tooltip="Save a checkpoint every this many steps (and at the end): a Cancel or crash loses at most "
               "this many steps."),
        Widget("resume", "BOOLEAN", default=True,
               tooltip="Continue from the run's latest checkpoint when there is one. Off refuses a run name that "
               "already has checkpoints (nothing is overwritten)."),
        Widget("offload_activations", "BOOLEAN", default=True,
               tooltip="Keep the activations saved for the backward pass in system RAM instead of VRAM (as the "
               "official low-resource trainer does): much less VRAM for long clips, some time for the copies."),
        Widget("recipe", "COMBO", default="custom", options=LORA_RECIPES,
               tooltip="Which layers get a LoRA, and its rank and alpha. Default custom: q, k, v, o of every "
               "attention (the low-resource trainer's layers) with the rank and alpha widgets; at their defaults "
               "(8, 8) this is exactly the official low-resource recipe. low-resource: the official one-GPU "
               "recipe (q, k, v, o; rank 8, alpha 8). 8-GPU: the official accelerate (8-GPU) recipe, also what "
               "MOVA's LoRA inference script loads: every Linear of the blocks, the FFN included, and of the bridge "
               "(rank 16, alpha 16). The official recipes ignore the rank and alpha widgets."),
    ),
    outputs=(
        Socket("lora", LORA, "The trained LoRA: for MOVA Save LoRA, or straight into a MOVA LoRA Loader's lora input."),
        Socket("loss_curve", "IMAGE", "The loss per step, one line per video expert."),
    ),
)
