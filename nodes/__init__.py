"""The ComfyUI node layer, in wings by feature: ``loaders``, ``conditioning``, ``sampling``, ``native``, ``prompts``,
``training``, ``lora``. In every wing ``node.py`` holds the ComfyUI nodes and needs ComfyUI; ``comfy_*.py`` is other
code that needs ComfyUI; every other module is plain Python, imported and tested without ComfyUI."""
