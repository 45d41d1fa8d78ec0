"""Test-only pieces of the ComfyUI integration test: custom nodes written into the test server's
custom_nodes (a weight probe; the text nodes are in comfy_text_nodes.py), the tiny Wan VAE writer, and tiny MOVA
LoRA files."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

WAN_VAE = '''
import math, sys
OUT = sys.argv[1]
sys.argv = ["write_vae", "--cpu"]
sys.path.insert(0, ".")
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.ldm.wan.vae as wan_vae
from safetensors.torch import save_file
model = wan_vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                       temperal_downsample=[False, True, True], dropout=0.0)
gen = torch.Generator().manual_seed(0)
state = {}
for key, value in model.state_dict().items():
    if key.endswith("gamma"):
        state[key] = torch.ones(value.shape)
    elif value.dim() >= 2:
        fan_in = math.prod(value.shape[1:])
        state[key] = torch.randn(value.shape, generator=gen) * (0.5 / math.sqrt(fan_in))
    else:
        state[key] = torch.zeros(value.shape)
save_file({k: v.half().contiguous() for k, v in state.items()}, OUT)
'''


PROBE_NODE = '''
import json
import comfy.model_management as mm

class TestMovaWeightProbe:
    """Test only: weights of a MOVA expert and audio tower as they compute once ComfyUI loaded them
    (fp8 weights times their scale; ComfyUI's QuantizedTensor dequantised). keys: "expert:<key>" or
    "tower:<key>", comma separated. Reports the storage dtype and which fp8 layer kind holds the weight."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"expert": ("MOVA_VIDEO_EXPERT",), "audio_tower": ("MOVA_AUDIO_TOWER",),
                             "keys": ("STRING", {"default": ""})}}
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # run every time: the same inputs may hold other weights after another clone ran

    def probe(self, expert, audio_tower, keys):
        mm.load_models_gpu([expert.patcher, audio_tower.patcher])
        found = {}
        for entry in keys.split(","):
            part, key = entry.split(":")
            module = (expert if part == "expert" else audio_tower).model.get_submodule(key.rsplit(".", 1)[0])
            storage = getattr(module.weight, "storage_dtype", None)
            if storage is not None:  # comfy_quant layers (ComfyUI v0.8.0+): a QuantizedTensor with its own scale
                weight, layout = module.weight.dequantize().float(), "comfy_quant"
            else:
                weight, layout, storage = module.weight.float(), "scaled_fp8", module.weight.dtype
                scale = getattr(module, "scale_weight", None)
                if scale is not None:
                    weight = weight * scale.float()
            found[entry] = {"dtype": str(storage), "layout": layout, "values": weight.cpu().flatten().tolist()}
        return {"ui": {"weights": [json.dumps(found)]}}

NODE_CLASS_MAPPINGS = {"TestMovaWeightProbe": TestMovaWeightProbe}
'''

# Probed weights: "<part>:<key in that part's patcher>" -> (LoRA component, module)
PROBED = {
    "expert:blocks.0.self_attn.q.weight": ("video_dit", "blocks.0.self_attn.q"),
    "expert:blocks.1.ffn.0.weight": ("video_dit", "blocks.1.ffn.0"),
    "tower:audio_dit.blocks.0.self_attn.q.weight": ("audio_dit", "blocks.0.self_attn.q"),
    "tower:bridge.audio_to_video_conditioners.0.inner.k.weight": ("dual_tower_bridge",
                                                                   "audio_to_video_conditioners.0.inner.k"),
}
LORA_SHAPES = {  # (out, in) of the tiny release's weights (tests/support/tiny_release.py)
    ("video_dit", "blocks.0.self_attn.q"): (64, 64), ("video_dit", "blocks.1.ffn.0"): (128, 64),
    ("video_dit_2", "blocks.0.self_attn.q"): (64, 64), ("audio_dit", "blocks.0.self_attn.q"): (32, 32),
    ("dual_tower_bridge", "audio_to_video_conditioners.0.inner.k"): (64, 32),
}


def _factors(modules, rank, seed, std=0.2):
    gen = torch.Generator().manual_seed(seed)
    return {m: (torch.randn(rank, LORA_SHAPES[m][1], generator=gen) * std,
                torch.randn(LORA_SHAPES[m][0], rank, generator=gen) * std) for m in modules}


def _state(factors) -> dict:
    """LoRA keys as the official trainers name them: <component>.<module>.lora_A/B.weight."""
    return {f"{c}.{m}.lora_{part}.weight": t.contiguous()
            for (c, m), (a, b) in factors.items() for part, t in (("A", a), ("B", b))}


def write_test_loras(folder: Path) -> dict:
    """LoRA files in a loras folder; returns {file: {(component, module): (A, B, alpha / rank)}}."""
    folder.mkdir(parents=True, exist_ok=True)
    # the workflow's LoRA, the accelerate trainer's layout: lora_weights.pt + lora_config.pt, rank 4, alpha 2
    main = _factors(list(LORA_SHAPES), 4, 1)
    (folder / "my_mova_lora").mkdir()
    torch.save(_state(main), folder / "my_mova_lora" / "lora_weights.pt")
    torch.save({"rank": 4, "alpha": 2.0}, folder / "my_mova_lora" / "lora_config.pt")
    # a second one to stack: .safetensors, rank 2, alpha 4 in the metadata; overlaps the first on two weights
    second = _factors([("video_dit", "blocks.0.self_attn.q"),
                       ("dual_tower_bridge", "audio_to_video_conditioners.0.inner.k")], 2, 2)
    save_file(_state(second), str(folder / "second.safetensors"), metadata={"alpha": "4"})
    # partly wrong: one weight fits, one names a block the model lacks, one key is no MOVA LoRA weight
    (a, b), = _factors([("video_dit", "blocks.0.self_attn.q")], 2, 3).values()
    partial = _state({("video_dit", "blocks.0.self_attn.q"): (a, b),
                      ("video_dit", "blocks.9.self_attn.q"): (a.clone(), b.clone())})
    save_file(partial | {"vae.decoder.conv_in.lora_A.weight": a.clone()}, str(folder / "partial.safetensors"))
    # for another model size: fits nothing
    save_file(_state({("video_dit", "blocks.0.self_attn.q"): (torch.zeros(2, 5120), torch.zeros(5120, 2))}),
              str(folder / "mova_720p.safetensors"))
    return {"my_mova_lora/lora_weights.pt": {k: (a, b, 2.0 / 4) for k, (a, b) in main.items()},
            "second.safetensors": {k: (a, b, 4.0 / 2) for k, (a, b) in second.items()}}


# API-prompt pieces for the LoRA tests: node ids 1-3 are the loaders, sources are [node id, output slot].
STRENGTHS = ("strength_high_noise", "strength_low_noise", "strength_audio", "strength_bridge")
COMPONENT_STRENGTH = dict(zip(("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"), STRENGTHS))
RELEASE = "MOVA-360p"


def loaders(dtype: str = "default") -> dict:
    return {
        "1": {"class_type": "MovaVideoExpertLoader",
              "inputs": {"model_name": f"{RELEASE}/video_dit", "weight_dtype": dtype}},
        "2": {"class_type": "MovaVideoExpertLoader",
              "inputs": {"model_name": f"{RELEASE}/video_dit_2", "weight_dtype": dtype}},
        "3": {"class_type": "MovaAudioTowerLoader",
              "inputs": {"audio_dit_name": f"{RELEASE}/audio_dit", "bridge_name": f"{RELEASE}/dual_tower_bridge",
                         "weight_dtype": dtype}},
    }


def lora_node(source: str | None, name: str, strengths: dict) -> dict:
    """A MOVA LoRA Loader fed by node ``source`` (another LoRA Loader) or, for None, by the loaders."""
    parts = [[source, i] for i in range(3)] if source else [["1", 0], ["2", 0], ["3", 0]]
    inputs = dict(zip(("high_noise_expert", "low_noise_expert", "audio_tower"), parts))
    return {"class_type": "MovaLoraLoader", "inputs": inputs | {"lora_name": name} | strengths}


def probe_node(expert: list, tower: list) -> dict:
    return {"class_type": "TestMovaWeightProbe", "inputs": {"expert": expert, "audio_tower": tower,
                                                            "keys": ",".join(PROBED)}}


def probed(outputs: dict, node: str, layout: bool = False) -> dict[str, tuple]:
    """entry -> (stored dtype, float32 values) from a probe node's UI output; with ``layout`` the fp8 layer kind
    ("comfy_quant": a QuantizedTensor with its own scale, else "scaled_fp8") comes third."""
    import json
    found = json.loads(outputs[node]["weights"][0])
    return {k: (v["dtype"], torch.tensor(v["values"], dtype=torch.float32)) + ((v["layout"],) if layout else ())
            for k, v in found.items()}


def original(models: Path, entry: str, expert: str) -> torch.Tensor:
    """The file's float32 values of a probed weight (``expert``: video_dit or video_dit_2)."""
    from safetensors.torch import load_file
    part, key = entry.split(":")
    folder = expert if part == "expert" else {"audio_dit": "audio_dit", "bridge": "dual_tower_bridge"}[key.split(".")[0]]
    key = key if part == "expert" else key.split(".", 1)[1]
    state = load_file(str(models / "diffusion_models" / RELEASE / folder / "diffusion_pytorch_model.safetensors"))
    return state[key].float().flatten()


def lora_delta(factors: dict, applied: list[tuple[str, dict]], entry: str, expert: str) -> torch.Tensor:
    """Σ s · (alpha / rank) · B·A over the stacked LoRAs ``applied`` = [(file, strengths)] for one probed weight."""
    component, module = PROBED[entry]
    component = expert if entry.startswith("expert:") else component
    total = torch.zeros(())
    for name, strengths in applied:
        if (component, module) in factors[name]:
            a, b, scale = factors[name][(component, module)]
            total = total + strengths[COMPONENT_STRENGTH[component]] * scale * (b @ a)
    return total.flatten()


# --- beyond image-to-video: the Wan first+last-frame probe and the media the mode workflows load ---------------

CONCAT_PROBE_NODE = '''
import json
import torch
import comfy.supported_models as supported_models

class TestWanConcatProbe:
    """Test only: the image condition ComfyUI's own Wan 2.x I2V model builds from a conditioning's
    concat_latent_image and concat_mask (model_base.WAN21.concat_cond of a tiny Wan I2V model, as in sampling),
    next to a MOVA_CONDITIONING's condition."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "latent": ("LATENT",), "mova": ("MOVA_CONDITIONING",)}}
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def probe(self, positive, latent, mova):
        extra = positive[0][1]
        config = supported_models.WAN21_I2V({"image_model": "wan2.1", "model_type": "i2v", "in_dim": 36, "dim": 32,
                                             "ffn_dim": 64, "freq_dim": 256, "text_dim": 4096, "out_dim": 16,
                                             "num_heads": 2, "num_layers": 1, "eps": 1e-6})
        config.set_inference_dtype(torch.float32, None)
        model = config.get_model({}, device="cpu")
        built = model.concat_cond(noise=torch.zeros_like(latent["samples"]), device=torch.device("cpu"),
                                  concat_latent_image=extra["concat_latent_image"], concat_mask=extra["concat_mask"])
        found = {"comfy": built.flatten().tolist(), "comfy_shape": list(built.shape),
                 "mova": mova.condition.flatten().tolist(), "mova_shape": list(mova.condition.shape)}
        return {"ui": {"condition": [json.dumps(found)]}}

NODE_CLASS_MAPPINGS = {"TestWanConcatProbe": TestWanConcatProbe}
'''

INTEGER_MEDIA_NODE = '''
import os
import wave

import av
import folder_paths
import numpy as np
import torch

class TestMovaIntegerMedia:
    """Test only: a video's frames as 8-bit pixels (uint8 [N,H,W,3]) with its frame rate as a numpy float, and a
    WAV's samples as stored (int16 [1,C,T]) with a numpy sample rate: what some video and audio nodes hand over; last,
    the same 8-bit frames as ComfyUI's float IMAGE (value / 255)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("STRING", {"default": "clip.mp4"}),
                             "audio": ("STRING", {"default": "speech.wav"})}}
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO", "IMAGE")
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, video, audio):
        root = folder_paths.get_input_directory()
        with av.open(os.path.join(root, video)) as container:
            stream = container.streams.video[0]
            fps = np.float32(stream.average_rate)
            frames = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(stream)])
        with wave.open(os.path.join(root, audio), "rb") as source:
            pcm = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2").reshape(-1, source.getnchannels())
            rate = np.int64(source.getframerate())
        return (frames, fps, {"waveform": torch.from_numpy(pcm.T.copy())[None], "sample_rate": rate},
                frames.float() / 255)

NODE_CLASS_MAPPINGS = {"TestMovaIntegerMedia": TestMovaIntegerMedia}
'''

SPEECH_RATE, SPEECH_SECONDS = 44100, 1.5
VIDEO_FRAMES, VIDEO_SIZE, VIDEO_FPS = 27, (48, 40), 24


def write_mode_media(folder: Path) -> None:
    """Inputs of the mode workflows: two 32x32 pictures (first and last frame), a stereo 44.1 kHz WAV sound
    (longer than the test clip) and a 27-frame 24 fps MP4 (two frames more than the test clip)."""
    import wave

    import av
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(0)
    for name in ("first32.png", "last32.png"):
        Image.fromarray(gen.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    t = np.arange(int(SPEECH_RATE * SPEECH_SECONDS)) / SPEECH_RATE
    left = 0.4 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    right = 0.3 * np.sin(2 * np.pi * 330 * t)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(folder / "speech.wav"), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SPEECH_RATE)
        out.writeframes(pcm.tobytes())
    with av.open(str(folder / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height = VIDEO_SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(VIDEO_FRAMES):
            pixels = np.zeros((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), dtype=np.uint8)
            pixels[..., 0] = 9 * i
            pixels[:, : 2 + i, 1] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def fitted_speech(path: Path, rate: int, samples: int) -> torch.Tensor:
    """What MOVA keeps of the WAV: mono, resampled to ``rate`` with torchaudio, the first ``samples``."""
    import wave

    import numpy as np
    import torchaudio.functional as AF

    with wave.open(str(path), "rb") as source:
        pcm = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2").reshape(-1, source.getnchannels())
        source_rate = source.getframerate()
    mono = torch.from_numpy(pcm.astype(np.float32) / 32768.0).T.mean(dim=0, keepdim=True)
    return AF.resample(mono, source_rate, rate)[0, :samples]


def read_audio(path: Path) -> tuple[torch.Tensor, int]:
    """(mono samples [T] float32, rate) of an audio file (e.g. Preview Audio's FLAC)."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        raw = np.concatenate([f.to_ndarray().T if f.format.is_planar else f.to_ndarray().reshape(-1, channels)
                              for f in container.decode(audio=0)])  # [T, channels]
    scale = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0 ** 31}.get(raw.dtype, 1.0)
    return torch.from_numpy((raw.astype(np.float32) / scale).mean(axis=1)), rate


LATENT_PROBE_NODE = '''
import json

class TestMovaLatentProbe:
    """Test only: a video LATENT and a MOVA audio latent as JSON (values and shapes), to compare two samplers."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("LATENT",), "audio": ("MOVA_AUDIO_LATENT",)}}
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def probe(self, video, audio):
        found = {"video": video["samples"].float().flatten().tolist(), "video_shape": list(video["samples"].shape),
                 "audio": audio.samples.float().flatten().tolist(), "audio_shape": list(audio.samples.shape)}
        return {"ui": {"latents": [json.dumps(found)]}}

NODE_CLASS_MAPPINGS = {"TestMovaLatentProbe": TestMovaLatentProbe}
'''


def probed_latents(outputs: dict, node: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(video, audio) latents a TestMovaLatentProbe node reported."""
    import json
    found = json.loads(outputs[node]["latents"][0])
    return (torch.tensor(found["video"]).view(found["video_shape"]),
            torch.tensor(found["audio"]).view(found["audio_shape"]))


GOLDEN_INPUTS_NODE = '''
import json, sys
from pathlib import Path
from safetensors.torch import load_file

def _pack(submodule):
    """A module of the MOVA pack as ComfyUI imported it (its folder name is the package name)."""
    return next(m for name, m in list(sys.modules.items()) if name.endswith("." + submodule) and "mova" in name.lower()
                and hasattr(m, "__file__") and "custom_nodes" in str(m.__file__))

class TestGoldenMovaInputs:
    """Test only: a golden set's text states and I2V condition as MOVA conditioning, with the empty joint latent of
    its size: what MOVA Conditioning would give with the golden text encoder and VAE."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"golden_dir": ("STRING", {"default": ""})}}
    RETURN_TYPES = ("MOVA_CONDITIONING", "LATENT")
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, golden_dir):
        handles, condition, configs = _pack("nodes.handles"), _pack("nodes.conditioning.condition"), _pack("mova_model.configs")
        golden = Path(golden_dir)
        c = json.loads((golden / "cases.json").read_text())
        t = load_file(str(golden / "cases.safetensors"))
        cond = handles.MovaConditioning(t["context_pos"], t["context_neg"], t["condition"], c["width"], c["height"],
                                        c["num_frames"], c["fps"])
        dac = configs.config_from_dict(configs.DACConfig, c["audio_vae"])
        return cond, condition.empty_joint_latent(c["width"], c["height"], c["num_frames"], c["fps"], dac)

NODE_CLASS_MAPPINGS = {"TestGoldenMovaInputs": TestGoldenMovaInputs}
'''
