"""Writes a golden set laid out like tests/support/data/golden/tiny but with other sizes everywhere (head dims, layer
counts, channels, codec rate and hop, fps, frames, width, height, text length, seed, steps, shift, boundary),
for checking that the test suite takes every size from the data:

    python tests/support/tools/make_variant_golden.py /tmp/golden_variant
    MOVA_GOLDEN_DIR=/tmp/golden_variant python -m pytest

Its reference outputs come from THIS pack's implementation, not from the official code: the parity tests pass
on it by construction. It checks size independence, not parity (the official golden set does that). The
official-LoRA tests need references from the official code for it; with a MOVA checkout at hand:

    python tests/support/tools/make_official_lora_refs.py /path/to/MOVA --golden /tmp/golden_variant

(without them those tests skip and say so). The configs carry the official classes' constructor flags and the
release's model_index.json, so that the official code loads this set as it loads the release.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "support"))
import mova_pack  # noqa: E402,F401  (imports the pack as comfyui_mova)

from comfyui_mova.mova_model.sampling import joint, sampler, scheduler  # noqa: E402
from comfyui_mova.mova_model.networks.bridge import DualTowerBridge  # noqa: E402
from comfyui_mova.mova_model.configs import (BridgeConfig, DACConfig, DiTConfig, SchedulerConfig,  # noqa: E402
                                              config_to_dict)
from comfyui_mova.mova_model.networks.dac import DAC  # noqa: E402
from comfyui_mova.mova_model.networks.dit import WanDiT  # noqa: E402
from comfyui_mova.mova_model.sampling.sizes import audio_latent_length, audio_num_samples  # noqa: E402

DAC_CFG = DACConfig(encoder_dim=8, encoder_rates=(2, 2, 3), latent_dim=8, decoder_dim=24, decoder_rates=(3, 2, 2),
                    sample_rate=480)
VIDEO = DiTConfig(dim=96, num_heads=3, num_layers=4, ffn_dim=160, in_dim=36, out_dim=16, patch_size=(1, 2, 2))
AUDIO = DiTConfig(dim=64, num_heads=2, num_layers=3, ffn_dim=112, in_dim=DAC_CFG.latent_dim,
                  out_dim=DAC_CFG.latent_dim, patch_size=(1,))
BRIDGE = BridgeConfig(visual_layers=4, audio_layers=3, visual_hidden_dim=96, audio_hidden_dim=64, head_dim=32,
                      audio_fps=DAC_CFG.sample_rate / DAC_CFG.hop_length)
SCHEDULER = SchedulerConfig(shift=3.0)
CASE = dict(fps=25.0, num_frames=13, height=48, width=64, boundary_ratio=0.875, sample_steps=8, seed=3,
            text_tokens=20, real_tokens=15)
# constructor flags the official classes take and the release's config.json files carry (with the release's
# values), so that the official code loads this set too (tests/support/tools/make_official_lora_refs.py)
_DIT_FLAGS = {"has_image_input": False, "has_image_pos_emb": False, "has_ref_conv": False, "add_control_adapter": False,
              "in_dim_control_adapter": 24, "seperated_timestep": False, "fuse_vae_embedding_in_latents": False,
              "require_vae_embedding": True}
RELEASE_FLAGS = {"video_dit": _DIT_FLAGS | {"require_clip_embedding": False},
                 "video_dit_2": _DIT_FLAGS | {"require_clip_embedding": False},
                 "audio_dit": _DIT_FLAGS | {"require_clip_embedding": True, "vae_type": "dac"},
                 "dual_tower_bridge": {},
                 "audio_vae": {"n_codebooks": 9, "codebook_size": 1024, "codebook_dim": 8, "quantizer_dropout": False,
                               "use_weight_norm": False}}
MODEL_INDEX = {"_class_name": "MOVA", "audio_vae_type": "dac",
               "audio_dit": ["mova.diffusion.models.wan_audio_dit", "WanAudioModel"],
               "audio_vae": ["mova.diffusion.models.dac_vae", "DAC"],
               "dual_tower_bridge": ["mova.diffusion.models.interactionv2", "DualTowerConditionalBridge"],
               "scheduler": ["mova.diffusion.schedulers.flow_match_pair", "FlowMatchPairScheduler"],
               "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
               "video_dit": ["mova.diffusion.models.wan_video_dit", "WanModel"],
               "video_dit_2": ["mova.diffusion.models.wan_video_dit", "WanModel"],
               "video_vae": ["diffusers", "AutoencoderKLWan"]}
CLASS_NAMES = {"video_dit": "WanModel", "video_dit_2": "WanModel", "audio_dit": "WanAudioModel",
               "dual_tower_bridge": "DualTowerConditionalBridge", "audio_vae": "DAC"}


def _randomise(model: torch.nn.Module, gen: torch.Generator, gain: float = 1.0) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if "norm" in name else 0.0))
            else:
                fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(max(fan_in, 1)))


def _save_component(folder: Path, name: str, model, config, shards: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    (folder / "config.json").write_text(json.dumps(
        {"_class_name": CLASS_NAMES[name]} | RELEASE_FLAGS[name] | config_to_dict(config), indent=2))
    if shards == 1:
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
        return
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        part = keys[i::shards]
        shard = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(folder / shard))
        weight_map |= {k: shard for k in part}
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    out = parser.parse_args(argv).output
    ckpt = out / "checkpoint"
    gen = torch.Generator().manual_seed(CASE["seed"])
    models = {"video_dit": WanDiT(VIDEO), "video_dit_2": WanDiT(VIDEO), "audio_dit": WanDiT(AUDIO),
              "dual_tower_bridge": DualTowerBridge(BRIDGE), "audio_vae": DAC(DAC_CFG)}
    configs = {"video_dit": VIDEO, "video_dit_2": VIDEO, "audio_dit": AUDIO, "dual_tower_bridge": BRIDGE,
               "audio_vae": DAC_CFG}
    for name, model in models.items():
        _randomise(model, gen, gain=0.8 if name == "audio_vae" else 1.0)  # codec outputs well inside -1..1
        _save_component(ckpt / name, name, model, configs[name], shards=3 if name == "video_dit_2" else 1)
    (ckpt / "model_index.json").write_text(json.dumps(MODEL_INDEX | {"boundary_ratio": CASE["boundary_ratio"]}))
    (ckpt / "scheduler").mkdir(exist_ok=True)
    (ckpt / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchPairScheduler"} | config_to_dict(SCHEDULER)))

    fps, frames, h, w = CASE["fps"], CASE["num_frames"], CASE["height"], CASE["width"]
    t = (frames - 1) // 4 + 1
    samples = audio_num_samples(frames, fps, DAC_CFG.sample_rate)
    length = audio_latent_length(frames, fps, DAC_CFG)
    noise_gen = torch.Generator().manual_seed(CASE["seed"])
    tensors = {"noise_video": torch.randn(1, 16, t, h // 8, w // 8, generator=noise_gen),
               "noise_audio": torch.randn(1, DAC_CFG.latent_dim, length, generator=noise_gen)}
    mask = torch.zeros(1, 4, t, h // 8, w // 8)
    mask[:, :, 0] = 1.0
    tensors["condition"] = torch.cat([mask, torch.randn(1, 16, t, h // 8, w // 8, generator=gen)], dim=1)
    for name in ("context_pos", "context_neg"):
        ctx = torch.zeros(1, CASE["text_tokens"], VIDEO.text_dim)
        ctx[:, :CASE["real_tokens"]] = torch.randn(1, CASE["real_tokens"], VIDEO.text_dim, generator=gen)
        tensors[name] = ctx
    with torch.no_grad():
        x = torch.cat([tensors["noise_video"], tensors["condition"]], dim=1)
        for key, (expert, tv, ta, case_fps) in {"step_high": ("video_dit", 850, 850, fps),
                                                "step_low": ("video_dit_2", 850, 850, fps),
                                                "step_split_t": ("video_dit", 930, 610, fps),
                                                "step_fps25": ("video_dit_2", 400, 400, 25.0)}.items():
            o = joint.joint_forward(models[expert], models["audio_dit"], models["dual_tower_bridge"], x,
                                    tensors["noise_audio"], tensors["context_pos"], torch.tensor([float(tv)]),
                                    torch.tensor([float(ta)]), case_fps)
            tensors[f"{key}_video"], tensors[f"{key}_audio"] = o.video, o.audio
        for rope_fps in (24, 25):
            (vc, vs), (ac, asin) = models["dual_tower_bridge"].aligned_rope((t, h // 16, w // 16), length,
                                                                            float(rope_fps))
            tensors |= {f"rope_fps{rope_fps}_video_cos": vc[None], f"rope_fps{rope_fps}_video_sin": vs[None],
                        f"rope_fps{rope_fps}_audio_cos": ac[None], f"rope_fps{rope_fps}_audio_sin": asin[None]}
        for steps in (10, 20, 25, 50):
            sched = scheduler.make_schedule(steps, SCHEDULER.shift, SCHEDULER)
            tensors[f"schedule_{steps}_timesteps"] = sched.timesteps
            tensors[f"schedule_{steps}_sigmas"] = sched.step_sigmas[:-1]
        towers = sampler.MovaTowers([models["video_dit"], models["video_dit_2"]], models["audio_dit"],
                                    models["dual_tower_bridge"])
        used = {}
        for cfg in (5, 1):
            opts = sampler.SamplingOptions(steps=CASE["sample_steps"], cfg_scale=float(cfg), shift=SCHEDULER.shift,
                                           boundary_ratio=CASE["boundary_ratio"], fps=fps, scheduler=SCHEDULER)
            v, a = sampler.sample(towers, tensors["condition"], tensors["context_pos"], tensors["context_neg"],
                                  tensors["noise_video"], tensors["noise_audio"], opts)
            tensors[f"sample_cfg{cfg}_video"], tensors[f"sample_cfg{cfg}_audio"] = v, a
            sched = scheduler.make_schedule(CASE["sample_steps"], SCHEDULER.shift, SCHEDULER)
            used[f"cfg{cfg}"] = [sampler.expert_index(x, CASE["boundary_ratio"], SCHEDULER.num_train_timesteps)
                                 for x in sched.timesteps.tolist()]
        dac = models["audio_vae"]
        tensors["dac_latent"] = torch.randn(1, DAC_CFG.latent_dim, length, generator=gen)
        tensors["dac_decoded"] = dac.decode(tensors["dac_latent"])
        tensors["dac_waveform"] = torch.rand(1, 1, (length + 1) * DAC_CFG.hop_length, generator=gen) * 1.6 - 0.8
        tensors["dac_encoded_mean"] = dac.encode(tensors["dac_waveform"])
        wn = DAC(DAC_CFG)
        _randomise(wn, gen, gain=0.8)
        wn_state = {}
        for key, value in wn.state_dict().items():
            if key.endswith(".weight") and value.dim() == 3:
                norm = value.flatten(1).norm(dim=1).reshape(-1, 1, 1)
                wn_state[key[:-len("weight")] + "weight_g"] = norm.clone()
                wn_state[key[:-len("weight")] + "weight_v"] = value.clone()
            else:
                wn_state[key] = value.clone()
        save_file(wn_state, str(out / "dac_weightnorm.safetensors"))
        tensors["dac_weightnorm_decoded"] = wn.decode(tensors["dac_latent"])
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / "cases.safetensors"))
    cases = {"video_dit": config_to_dict(VIDEO), "audio_dit": config_to_dict(AUDIO),
             "dual_tower_bridge": config_to_dict(BRIDGE), "audio_vae": config_to_dict(DAC_CFG),
             "scheduler": config_to_dict(SCHEDULER), "fps": fps, "num_frames": frames, "height": h, "width": w,
             "audio_num_samples": samples, "audio_latent_length": length,
             "boundary_ratio": CASE["boundary_ratio"], "sample_steps": CASE["sample_steps"],
             "experts_used_per_step": used, "seed": CASE["seed"]}
    (out / "cases.json").write_text(json.dumps(cases, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
