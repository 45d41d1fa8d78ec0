"""Sampling: sizes and latent shapes, the flow-matching schedule, one joint forward, guidance, step caching,
known regions, the sampler and the denoiser ComfyUI's own samplers call, and the audio latents to a waveform."""
