"""LoRA: MOVA LoRA Loader and MOVA Save LoRA."""
