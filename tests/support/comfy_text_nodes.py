"""Test-only ComfyUI nodes (copied into the integration test server's custom_nodes; never imported by pytest):
a real ComfyUI CLIP at toy size in place of the 5.7B UMT5-XXL, and a probe of a CONDITIONING's states."""

import hashlib
import json

import comfy.sd
import comfy.sd1_clip
import comfy.text_encoders.t5
import folder_paths
import torch

# UMT5's layout at toy size: 4096 features like UMT5-XXL, 2 layers, 2 heads, a byte vocabulary.
CONFIG = {"d_ff": 32, "d_kv": 8, "d_model": 4096, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
          "layer_norm_epsilon": 1e-06, "model_type": "umt5", "num_heads": 2, "num_layers": 2,
          "relative_attention_num_buckets": 32, "vocab_size": 258, "eos_token_id": 1, "pad_token_id": 0}
WORD_MARK = "\u2581"  # SentencePiece's mark for a space


class ByteTokenizer:
    """A real tokenizer with a tiny vocabulary: UTF-8 bytes are tokens 2..257 (0 pad, 1 end)."""

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return cls()

    def __call__(self, text):
        return {"input_ids": [b + 2 for b in text.encode("utf-8")] + [1]}

    def get_vocab(self):
        vocab = {"<pad>": 0, "</s>": 1}
        vocab.update({(WORD_MARK if b == 32 else bytes([b]).decode("latin-1")): b + 2 for b in range(256)})
        return vocab


def _target(name):
    """ComfyUI's UMT5-XXL tokenizer and model settings (comfy/text_encoders/wan.py), under encoder ``name``."""

    class Tokenizer(comfy.sd1_clip.SDTokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(None, pad_with_end=False, embedding_directory=embedding_directory, embedding_size=4096,
                             embedding_key=name, tokenizer_class=ByteTokenizer, has_start_token=False,
                             pad_to_max_length=False, max_length=99999999, min_length=512, pad_token=0,
                             tokenizer_data=tokenizer_data)

    class Model(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options={}):
            super().__init__(device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=dict(CONFIG),
                             dtype=dtype, special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                             enable_attention_masks=True, zero_out_masked=True, model_options=model_options)

    class Encoder(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, name=name, clip_model=Model,
                             **kwargs)

    class Tokenizers(comfy.sd1_clip.SD1Tokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, clip_name=name,
                             tokenizer=Tokenizer)

    class Target:
        params = {}
        clip = Encoder
        tokenizer = Tokenizers

    return Target


class TestTinyUMT5Loader:
    """Test only: a real ComfyUI CLIP at toy size with seeded random weights. kind t5xxl names the encoder as
    SD3/Flux's T5 instead (another text encoder with 4096 features)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["umt5xxl", "t5xxl"],)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, kind):
        clip = comfy.sd.CLIP(_target(kind), embedding_directory=folder_paths.get_folder_paths("embeddings"))
        model = getattr(clip.cond_stage_model, kind).transformer
        gen = torch.Generator().manual_seed(0)
        state = {key: torch.ones(value.shape) if value.dim() == 1 else torch.randn(value.shape, generator=gen) * 0.05
                 for key, value in model.state_dict().items()}
        _, unexpected = clip.load_sd(state)
        assert not unexpected, unexpected
        return (clip,)


class TestConditioningProbe:
    """Test only: a fingerprint of a CONDITIONING's states (shape, rows that are not zero, sha256 of the values)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def probe(self, conditioning):
        states = conditioning[0][0].float().contiguous()
        found = {"shape": list(states.shape), "rows": int((states.abs().sum(-1) > 0).sum()),
                 "sha256": hashlib.sha256(states.numpy().tobytes()).hexdigest()}
        return {"ui": {"states": [json.dumps(found)]}}


NODE_CLASS_MAPPINGS = {"TestTinyUMT5Loader": TestTinyUMT5Loader, "TestConditioningProbe": TestConditioningProbe}
