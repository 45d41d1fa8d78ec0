#!/usr/bin/env bash
# Issue 23's GPU figures in one device call (under 9 minutes on one H100; see benchmarks/GPU_RUN.md):
#   1. benchmarks/vs_official.py: the official MOVA code and the pack side by side, full size, 360p / 193 frames;
#   2. benchmarks/comfyui_gpu.py: ComfyUI v0.8.0 on the GPU running mova_i2va.json and mova_i2va_native.json;
#   3. the GPU-only unit tests (attention kernels against SDPA, the fp8 GEMM against the CPU math), if time is left.
# Needs .gpu_carry/ (benchmarks/prepare_gpu_carry.sh). Writes at most 8 files to $OUT (the tool's limit).
# MOVA_GPU_DRY=1: the same plumbing on a CPU (vs_official --quick, ComfyUI --cpu at tiny size, the carried
# wheels left off the path: they are for CPython 3.12); MOVA_PYTHON: the Python to use (default python3).
set -u
T0=$(date +%s)
TOTAL=${MOVA_GPU_SECONDS:-530}      # the whole session, leaving the 600 s call limit some air
VS_BUDGET=${MOVA_VS_BUDGET:-330}    # vs_official.py's own guard
OUT=${OUT:-/tmp/mova_gpu_out}
mkdir -p "$OUT" /tmp/site /tmp/official
export PYTHONUNBUFFERED=1
tar -xJf .gpu_carry/site.tar.xz -C /tmp/site || exit 3
tar -xzf .gpu_carry/official-mova.tar.gz -C /tmp/official || exit 3
PY=${MOVA_PYTHON:-python3}
VS_ARGS=() COMFY_ARGS=()
if [ -n "${MOVA_GPU_DRY:-}" ]; then
  VS_ARGS=(--quick --no-fp8 --rounds 1) COMFY_ARGS=(--cpu --size tiny)
else
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
"$PY" -c "import torch, fa3_fwd_interface; print('torch', torch.__version__, torch.cuda.get_device_name(), 'fa3-fwd loads')" \
  || echo "fa3-fwd does not load here: FlashAttention-3 rows are skipped"
timeout $((VS_BUDGET + 60)) "$PY" benchmarks/vs_official.py --official /tmp/official --budget-s "$VS_BUDGET" \
  "${VS_ARGS[@]}" --json "$OUT/vs_official.json" > "$OUT/vs_official.log" 2>&1
echo "vs_official.py: exit $? after $(($(date +%s) - T0)) s"
grep -v "Warning\|warn(" "$OUT/vs_official.log" | tail -40
LEFT=$((TOTAL - ($(date +%s) - T0)))
if [ "$LEFT" -gt 90 ]; then
  timeout "$LEFT" "$PY" benchmarks/comfyui_gpu.py --comfyui-archive .gpu_carry/comfyui-v0.8.0.tar.gz \
    --work /tmp/mova_comfy --out "$OUT" --budget-s $((LEFT - 60)) "${COMFY_ARGS[@]}" \
    --json "$OUT/comfyui_gpu.json" > "$OUT/comfyui_gpu.log" 2>&1
  echo "comfyui_gpu.py: exit $? after $(($(date +%s) - T0)) s"
  grep "^{\|workflows made\|did not start\|Error" "$OUT/comfyui_gpu.log" | cut -c1-600 | tail -12
else
  echo "comfyui_gpu.py skipped: ${LEFT} s left"
fi
LEFT=$((TOTAL - ($(date +%s) - T0)))
if [ -z "${MOVA_GPU_DRY:-}" ] && [ "$LEFT" -gt 40 ]; then  # the GPU-only unit tests: FA3/Sage/cuDNN vs SDPA, fp8 GEMM
  timeout "$LEFT" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/unit/test_speed.py tests/unit/test_kernel_choice.py \
    tests/unit/test_offload.py 2>&1 | tail -8
fi
ls -l "$OUT"
