#!/usr/bin/env bash
# Fills .gpu_carry/ (ignored by git) with what benchmarks/gpu_session.sh needs on a GPU machine that reaches no
# network: the official MOVA package, ComfyUI v0.8.0's source, and the wheels the machine lacks, recompressed to
# fit the 64 MiB a device call carries (see benchmarks/GPU_RUN.md). Run it here, from the repository root:
#
#     bash benchmarks/prepare_gpu_carry.sh /path/to/OpenMOSS/MOVA /path/to/ComfyUI-v0.8.0
#
# Wheels (manylinux x86_64, CPython 3.12, what the GPU image lacks): av (MP4 in ComfyUI), torchsde + trampoline
# (ComfyUI's samplers import it), sageattention 1.0.6 (the only SageAttention on PyPI: version 1, triton),
# fa3-fwd 0.0.3 (a forward-only FlashAttention-3 build for torch 2.1x / CUDA 13; its module loads against
# torch 2.11 here). Not to be had as wheels: flash-attn (sdist only: a CUDA build of hours), FlashAttention-3's
# official 'hopper' build (not on PyPI), SageAttention 2 (not on PyPI; a CUDA build), flash-attn-4 (needs
# nvidia-cutlass-dsl-libs-cu13, 92 MB: over the carry limit).
set -euo pipefail
OFFICIAL=${1:?give the folder of an OpenMOSS/MOVA checkout}
COMFYUI=${2:?give the folder of a ComfyUI v0.8.0 checkout}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARRY="$ROOT/.gpu_carry"
PY=${PYTHON:-python3}
grep -qx '/.gpu_carry/' "$(git -C "$ROOT" rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
  || echo '/.gpu_carry/' >> "$(git -C "$ROOT" rev-parse --git-common-dir)/info/exclude"
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/site"
test -f "$OFFICIAL/mova/diffusion/models/wan_video_dit.py" || { echo "$OFFICIAL holds no mova/ package" >&2; exit 2; }
test -f "$COMFYUI/main.py" || { echo "$COMFYUI holds no main.py" >&2; exit 2; }
tar czf "$CARRY/official-mova.tar.gz" -C "$OFFICIAL" --exclude=__pycache__ mova
tar czf "$CARRY/comfyui-v0.8.0.tar.gz" -C "$COMFYUI" --exclude=./venv --exclude=./.git --exclude=./tests \
  --exclude=./tests-unit --exclude=./output --exclude=./models --exclude=./user --exclude=./custom_nodes \
  --exclude=__pycache__ --exclude=./pip.log .
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$CARRY/wheels" \
  av==19.0.2 torchsde==0.2.6 trampoline==0.1.2 sageattention==1.0.6 fa3-fwd==0.0.3
for wheel in "$CARRY"/wheels/*.whl; do "$PY" -m zipfile -e "$wheel" "$CARRY/site"; done
tar cf - -C "$CARRY/site" . | xz -6 -T0 > "$CARRY/site.tar.xz"   # ~35 MB instead of ~63 MB of wheels
rm -rf "$CARRY/wheels" "$CARRY/site"
tree=$(git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 du -cb 2>/dev/null) | tail -1 | cut -f1)
carry=$(du -cb "$CARRY"/* | tail -1 | cut -f1)
ls -l "$CARRY"
echo "working tree $((tree / 1048576)) MiB + .gpu_carry $((carry / 1048576)) MiB = $(((tree + carry) / 1048576)) MiB (limit 64)"
test $((tree + carry)) -lt $((64 * 1048576)) || { echo "over the 64 MiB a device call carries" >&2; exit 1; }
