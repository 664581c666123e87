#!/usr/bin/env bash
# The GPU check, in one call on a CUDA machine (repository root; writes logs under $OUT,
# or ./gpu-out): the Triton backend's tests on CUDA (its own and the conformance suite,
# every feature × layout × dtype against float64), then the benchmark table (CUDA events)
# and a ResNet-18-shaped training step. A short summary comes last.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 BATCHNORM_NATIVE=0 BATCHNORM_CPP=0
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"
start=$(date +%s)
timeout ${TEST_TIMEOUT:-200} $PY -m pytest -q -p no:cacheprovider -x \
    tests/test_triton.py tests/test_triton_masks.py tests/test_triton_compile.py \
    tests/test_conformance.py -k "triton" 2>&1 | tee "$OUT/tests.txt" | tail -25
echo "tests: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout ${BENCH_TIMEOUT:-150} $PY -m batchnorm bench --device cuda --no-tf \
    --cases "${CASES:-E,F,G,C,A}" --variants "${VARIANTS:-plain,renorm,vbs=8,bfloat16}" \
    --rounds 3 --min-time 0.2 2>&1 | tee "$OUT/bench.txt" | tail -80
echo "bench: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout ${MODEL_TIMEOUT:-90} $PY -c "
from batchnorm.bench_model import model_rows
print('| step | nn.BatchNorm2d ms | ours ms | ours ÷ torch |')
for row in model_rows('cuda', compiled=${COMPILED:-False}):
    print(row, flush=True)
" 2>&1 | tee "$OUT/model.txt" | tail -8
echo "model: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout ${SWEEP_TIMEOUT:-90} $PY benchmarks/gpu_sweep.py 2>&1 | tee "$OUT/sweep.txt" | head -60
echo "sweep: $(( $(date +%s) - start )) s"
