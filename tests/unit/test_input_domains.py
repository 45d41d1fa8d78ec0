"""Numbers outside their domain, at every MOVA node's boundary (nodes/input_values.py) and for the MOVA Guider's
SIGMAS (nodes/native/checks.py): NaN, infinities, bools, out-of-range values and other models' schedules are refused
with the input and the fix named; numpy and 0-d tensor numbers are accepted where Python ones are. The nodes
themselves run these checks in a real ComfyUI in test_comfyui_domains.py."""

import ast
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.lora.load import read_lora
from comfyui_mova.mova_model.weights.release import read_release_settings
from comfyui_mova.mova_model.sampling.scheduler import make_schedule
from comfyui_mova.nodes.catalog import ALL_NODES
from comfyui_mova.nodes.conditioning.spec import CONDITIONING, EXTEND
from comfyui_mova.nodes.native.spec import GUIDER, SCHEDULER
from comfyui_mova.nodes.prompts.spec import PROMPT_BUILDER
from comfyui_mova.nodes.sampling.spec import SAMPLER
from comfyui_mova.nodes.training.spec import DATASET_NODE, TRAIN_LORA
from comfyui_mova.nodes.input_values import checked_inputs, checked_values, plain_number
from comfyui_mova.nodes.lora.patches import plan_lora
from comfyui_mova.nodes.loaders.model_files import load_video_expert
from comfyui_mova.nodes.native.checks import check_native_sigmas, check_scheduler_sigmas

PACK = Path(__file__).resolve().parents[2]
NODE_FILES = sorted((PACK / "nodes").rglob("*node.py"))
NUMBER_WIDGETS = [(node, w) for node in ALL_NODES for w in node.widgets if w.kind in ("INT", "FLOAT")]


def _ids(case):
    return f"{case[0].node_id}.{case[1].name}" if isinstance(case, tuple) else None


# --- every node runs the check -----------------------------------------------------------------------------------

def test_every_node_checks_its_inputs_with_its_own_spec():
    """Each node class's execute is wrapped in checked_inputs with the spec its schema is built from."""
    seen = set()
    for path in NODE_FILES:
        for cls in (n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)):
            methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
            if "define_schema" not in methods:
                continue
            schema_spec = next(n.attr for n in ast.walk(methods["define_schema"])
                               if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "spec")
            decorators = [ast.unparse(d) for d in methods["execute"].decorator_list]
            assert decorators == ["classmethod", f"checked_inputs(spec.{schema_spec})"], (cls.name, decorators)
            seen.add(cls.name)
    assert seen == {node.node_id for node in ALL_NODES}


# --- the shared check ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", NUMBER_WIDGETS, ids=_ids)
def test_non_finite_and_bool_numbers_are_refused_naming_input_and_fix(case):
    node, widget = case
    for bad in (float("nan"), float("inf"), float("-inf"), np.float32("nan"), True):
        with pytest.raises(ValueError) as caught:
            checked_values(node, {widget.name: bad})
        message = str(caught.value)
        assert message.startswith(f"{node.display_name}: {widget.name} ") and "; set it to " in message, message
        if widget.min is not None and widget.max is not None:
            assert f"from {widget.min:g} to {widget.max:g}" in message


@pytest.mark.parametrize("case", NUMBER_WIDGETS, ids=_ids)
def test_numpy_and_tensor_numbers_are_accepted_as_python_ones(case):
    node, widget = case
    value = widget.default
    kind = int if widget.kind == "INT" else float
    for given in (value, np.float64(value), np.float32(value), torch.tensor(value), np.array(value)):
        if widget.kind == "INT":
            given = np.int64(value) if isinstance(given, np.floating) else given
        out = checked_values(node, {widget.name: given})[widget.name]
        assert type(out) is kind and math.isclose(out, value, rel_tol=1e-6), (given, out)


def test_out_of_range_values_are_refused_even_where_comfyui_skips_its_check():
    """ComfyUI does not check the range of an input that the node's validate_inputs takes (the MOVA Guider's cfg)
    nor of a connected value: the node does."""
    with pytest.raises(ValueError, match=r"MOVA Guider: cfg -3.0 is below the minimum 1.0; set it to a number from 1 to "
                                         r"30 \(default 5\)"):
        checked_values(GUIDER, {"cfg": -3.0})
    with pytest.raises(ValueError, match="MOVA Extend: crossfade 1e\\+300 is above the maximum 10.0"):
        checked_values(EXTEND, {"crossfade": 1e300})
    with pytest.raises(ValueError, match="MOVA Sampler: steps must be a whole number, got 2.5; set it to a whole number from 1 to 1000"):
        checked_values(SAMPLER, {"steps": 2.5})
    with pytest.raises(ValueError, match="MOVA Sampler: seed 10{30} is above the maximum"):
        checked_values(SAMPLER, {"seed": 10 ** 30})
    with pytest.raises(ValueError, match="MOVA Train LoRA: resume must be true or false, got 'no'"):
        checked_values(TRAIN_LORA, {"resume": "no"})


def test_float_sockets_and_optional_inputs():
    out = checked_values(CONDITIONING, {"video_fps": Fraction(24000, 1001), "video": None, "fps": 24})
    assert out["video_fps"] == pytest.approx(23.976, abs=1e-3) and type(out["fps"]) is float and out["video"] is None
    with pytest.raises(ValueError, match=r"MOVA Conditioning: video_fps is nan, not a finite number; connect a finite "
                                         r"number to it \(Optional: the video's frame rate"):
        checked_values(CONDITIONING, {"video_fps": np.float64("nan")})


def test_plain_number():
    assert plain_number(np.int64(7)) == 7 and type(plain_number(np.int64(7))) is int
    assert type(plain_number(np.bool_(True))) is bool and type(plain_number(torch.tensor(2.5))) is float
    assert plain_number("24") == "24" and isinstance(plain_number(torch.ones(2)), torch.Tensor)


def test_the_decorator_checks_before_the_body_runs():
    ran = []

    class Node:
        @classmethod
        @checked_inputs(EXTEND)
        def execute(cls, images, length: int, fps: float, crossfade: float = 0.1):
            ran.append((length, fps, crossfade))
            return type(length), type(fps)

        @classmethod
        @checked_inputs(PROMPT_BUILDER)
        def builder(cls, scene: str, **fields):
            return fields

    assert Node.execute(None, np.int64(17), fps=np.float32(24.0)) == (int, float) and ran == [(17, 24.0, 0.1)]
    with pytest.raises(ValueError, match="MOVA Extend: crossfade is nan"):
        Node.execute(None, 17, 24.0, crossfade=float("nan"))
    with pytest.raises(ValueError, match="MOVA Extend: fps is inf"):
        Node.execute(images=None, length=17, fps=float("inf"))
    assert len(ran) == 1  # nothing ran for the refused values
    assert Node.builder("a scene", music="rain") == {"music": "rain"}


# --- the same domains inside the plain functions ------------------------------------------------------------------

def test_lora_strength_nan_is_refused_before_the_weights(golden_dir, tmp_path):
    """A real .safetensors LoRA through the real reader: the plan takes finite strengths only."""
    expert = load_video_expert(golden_dir / "checkpoint" / "video_dit")
    weights = expert.model.state_dict()
    module = "blocks.0.self_attn.q"
    out_f, in_f = weights[module + ".weight"].shape
    save_file({f"video_dit.{module}.lora_A.weight": torch.ones(2, in_f),
               f"video_dit.{module}.lora_B.weight": torch.ones(out_f, 2)}, str(tmp_path / "lora.safetensors"),
              metadata={"rank": "2", "alpha": "2.0"})
    lora = read_lora(tmp_path / "lora.safetensors")
    shapes = {"high_noise_expert": {k: tuple(v.shape) for k, v in weights.items()}, "low_noise_expert": {},
              "audio_tower": {}}
    assert plan_lora(lora, shapes, {"video_dit": 1.0}).applied["video_dit"] == 1
    with pytest.raises(ValueError, match="high-noise expert's LoRA strength is nan, not a finite number: set it"):
        plan_lora(lora, shapes, {"video_dit": float("nan")})


# --- SIGMAS for the MOVA Guider ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scheduler(golden_dir):
    return read_release_settings(golden_dir / "checkpoint").scheduler


def _karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al.'s schedule, as stock Karras Scheduler makes it for SD 1.5 (its default range), with a last 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(high + ramp * (low - high)) ** rho, torch.zeros(1, dtype=torch.float64)]).float()


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_mova_schedules_pass(scheduler, steps):
    sigmas = make_schedule(steps, scheduler.shift, scheduler, snap=True).step_sigmas
    assert check_native_sigmas(sigmas) == pytest.approx(sigmas.tolist())
    assert check_native_sigmas(sigmas[steps // 2:]) is not None  # a split schedule (the second half) too
    assert check_native_sigmas(sigmas[:-1]) is not None  # without its last 0
    check_native_sigmas(torch.tensor([1.0001, 0.5, 0.0]))  # float32 rounding of stock schedulers' first sigma


@pytest.mark.parametrize("sigmas, message", [
    (_karras(20, 0.0291675, 14.614642), r"the sigmas run from 14.6146 to 0, beyond MOVA's 0..1 .*another model's "
     r"schedule .*Karras Scheduler.*; connect MOVA Scheduler \(its guider input from this MOVA Guider\)"),
    (torch.tensor([1.0, 0.5, -0.25, 0.0]), r"sigma 3 of 4 is -0.25, below 0.*connect MOVA Scheduler"),
    (torch.tensor([1.0, float("nan"), 0.0]), r"sigma 2 of 3 is nan: the node that made the SIGMAS failed, not the "
     r"model; use more steps or another scheduler there .*, or connect MOVA Scheduler"),
    (torch.tensor([float("inf"), 0.5, 0.0]), r"sigma 1 of 3 is inf"),
    (torch.tensor([0.0, 0.5, 1.0]), r"sigma 2 of 3 \(0.5\) is not below the one before it \(0\).*remove Flip Sigmas"),
    (torch.tensor([1.0, 0.5, 0.5, 0.0]), r"sigma 3 of 4 \(0.5\) is not below the one before it \(0.5\)"),
    (torch.ones(2, 3), r"sigmas of shape \(2, 3\), expected a list \[N\]"),
    (None, r"sigmas of type NoneType, expected a list \[N\] of numbers; connect MOVA Scheduler"),
    (["1", "half"], r"sigmas of type list, expected a list \[N\] of numbers"),
])
def test_bad_sigmas_are_refused_naming_mova_scheduler(sigmas, message):
    with pytest.raises(ValueError, match="^MOVA Guider: " + message):
        check_native_sigmas(sigmas)


def test_scheduler_output_is_checked_naming_the_scheduler():
    with pytest.raises(ValueError, match=r"MOVA Scheduler: the kl_optimal scheduler gave unusable sigmas for 1 steps "
                                         r"\(sigma 1 of 2 is nan.*use more steps or another scheduler"):
        check_scheduler_sigmas(torch.tensor([float("nan"), 0.0]), "kl_optimal", 1)
    sigmas = torch.tensor([1.0, 0.4, 0.0])
    assert check_scheduler_sigmas(sigmas, "simple", 2) is sigmas


def test_release_scheduler_file_is_what_the_test_reads(golden_dir, scheduler):
    data = json.loads((golden_dir / "checkpoint" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler.shift == data["shift"] and scheduler.num_train_timesteps == data["num_train_timesteps"]


def test_text_and_choices_are_checked_too():
    with pytest.raises(ValueError, match=r"MOVA Scheduler: scheduler 'karras2' is not one of official, simple.*; pick "
                                         r"one of the widget's choices"):
        checked_values(SCHEDULER, {"scheduler": "karras2"})
    with pytest.raises(ValueError, match=r"MOVA Dataset: folder must be text, got 3; give it text"):
        checked_values(DATASET_NODE, {"folder": 3})
    assert checked_values(DATASET_NODE, {"folder": "clips"}) == {"folder": "clips"}
