"""Every file the pack writes: atomic writes, names from users kept inside their folder, tensors to files,
safetensors streamed one tensor at a time."""
