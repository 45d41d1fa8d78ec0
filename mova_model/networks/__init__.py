"""The networks in plain PyTorch: the Wan-style DiT towers (video experts, audio DiT), the dual-tower bridge, the
DAC audio codec, and what they are built of (attention entry point, layers, RoPE, fused element-wise steps, the
``operations`` namespaces)."""
