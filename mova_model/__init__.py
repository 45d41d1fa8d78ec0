"""MOVA inference in plain PyTorch (no ComfyUI imports)."""
