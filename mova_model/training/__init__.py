"""LoRA training: the latent dataset, the training loop (the official recipe), its checkpoints, and the guard that
stops a run before a NaN does harm."""
