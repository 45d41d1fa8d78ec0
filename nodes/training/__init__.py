"""Training: MOVA Dataset (clips -> cached latents) and MOVA Train LoRA."""
