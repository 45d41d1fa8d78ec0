"""The ComfyUI node layer. ``spec``, ``handles``, ``model_files``, ``condition``, ``sampling``, ``text``,
``audio_decode``, ``av_latent``, ``native_setup``, ``input_values``, ``media_values`` and ``captions`` are plain
Python (tested without ComfyUI); ``*_node.py``, ``loader_nodes``, ``native_guider``, ``expert_memory``, ``comfy_io``
and ``extension`` import ComfyUI and are loaded only inside it."""
