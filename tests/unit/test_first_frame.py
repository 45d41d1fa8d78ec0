"""The first frame is fitted exactly as the official pipeline fits it (crop_and_resize: integer crop,
PIL bicubic on 8-bit pixels): reference outputs made with the official code (tests/support/data/first_frame)."""

import pytest
import torch
from safetensors.torch import load_file

from comfyui_mova.nodes.conditioning.condition import condition_frames, fit_frame, official_crop
from mova_pack import DATA

REFERENCES = DATA / "first_frame" / "references.safetensors"


def _cases():
    data = load_file(str(REFERENCES))
    count = len([k for k in data if k.endswith("_official")])
    return [(data[f"case{i}_picture"], tuple(data[f"case{i}_target"].tolist()), data[f"case{i}_official"])
            for i in range(count)]


CASES = _cases()


@pytest.mark.parametrize("picture,target,official", CASES,
                         ids=[f"{p.shape[1]}x{p.shape[0]}-to-{t[0]}x{t[1]}" for p, t, _ in CASES])
def test_first_frame_equals_official(picture, target, official):
    width, height = target
    image = picture.float()[None] / 255  # what Load Image gives for an 8-bit picture: IMAGE [1,H,W,3]
    out = fit_frame(image, width, height)
    assert out.shape == (height, width, 3) and out.dtype == torch.float32
    assert torch.equal((out * 255).round().to(torch.uint8), official)


def test_references_cover_up_and_down_scaling_and_both_crops():
    kinds = set()
    for picture, (width, height), _ in CASES:
        h, w = picture.shape[:2]
        left, top, cw, ch = official_crop(w, h, width, height)
        kinds.add("sides" if cw < w else "top" if ch < h else "none")
        kinds.add("up" if cw < width else "down" if cw > width else "same")
    assert kinds >= {"sides", "top", "none", "up", "down", "same"}


def test_crop_size_truncates():
    # 37x23 into 64x48: the crop is 23/48*64 = 30.67 pixels wide -> 30 (rounding would take 31)
    assert official_crop(37, 23, 64, 48) == (3, 0, 30, 23)
    assert official_crop(23, 37, 48, 64) == (0, 3, 23, 30)


def test_picture_too_small_for_the_aspect_is_refused():
    with pytest.raises(ValueError, match="start_image is 100x1: too small.*larger picture"):
        fit_frame(torch.rand(1, 1, 100, 3), 16, 64)


def test_not_eight_bit_values_are_quantised_like_a_picture():
    image = torch.full((1, 32, 48, 3), 0.30001)
    out = fit_frame(image, 48, 32)
    assert torch.all(out == round(0.30001 * 255) / 255)
    grey = condition_frames(image, 48, 32, 5)
    assert torch.equal(grey[0], out) and torch.all(grey[1:] == 0.5)
