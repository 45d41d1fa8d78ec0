"""Weights: finding and validating safetensors files, telling which component and config a file holds, building a
component from it (bf16, fp16, fp32 or fp8), fp8 quantisation and ComfyUI's fp8 layouts, a release's sampling
settings."""
