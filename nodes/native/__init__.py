"""The native path: MOVA Guider, MOVA Scheduler and MOVA Separate AV Latent, for ComfyUI's own samplers."""
