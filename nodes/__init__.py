"""The ComfyUI node layer. ``spec``, ``handles``, ``model_files``, ``condition``, ``sampling``, ``text``,
``audio_decode``, ``av_latent`` and ``native_setup`` are plain Python (tested without ComfyUI); ``*_node.py``,
``loader_nodes``, ``native_guider``, ``expert_memory``, ``comfy_io`` and ``extension`` import ComfyUI and are loaded
only inside it."""
