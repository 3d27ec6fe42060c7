#!/usr/bin/env bash
# The one-GPU check, under 8 minutes on one H100-class GPU:
#   1. the CUDA tests;
#   2. extract on the GPU in fp32 and bf16, records compared with a CPU run on the same images;
#   3. a torchrun run with the nccl backend (world size = the GPUs here, 1 or 2), compared with one process;
#   4. the throughput benchmark (ViT-B/16, 224 px, fp32 and bf16, against the literal reference).
# It prints one summary table and writes everything under $OUT (default runs/gpu_check).
# Nothing is installed from the network: packages missing beyond torch, timm and transformers
# (captum, tabulate, scikit-learn ...) come from local wheels in .wheels/, made beforehand on a machine with
# the same Python: pip download --no-deps captum tabulate scikit-learn scipy joblib threadpoolctl -d .wheels
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
if ! $PY -c "import captum, seaborn, networkx, tabulate, sklearn" 2>/dev/null; then
    $PY -m pip install --quiet --no-deps --no-index .wheels/*.whl || { echo "missing packages and no usable .wheels/"; exit 1; }
fi
GPUS=$($PY -c "import torch; print(min(2, torch.cuda.device_count()))")
[ "$GPUS" -ge 1 ] || { echo "no CUDA device"; exit 1; }
status() { if [ "$1" -eq 0 ]; then echo ok; else echo "FAILED ($1)"; fi; }
START=$(date +%s)

echo "== 1. CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/test_joint_integrated_gradients.py tests/test_neuron_path.py -k cuda \
    2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
CUDA_TESTS=$(status "${PIPESTATUS[0]}")

echo "== 2. extract: CPU, GPU fp32, GPU bf16"
$PY -c "from captum_paths.demo import save_demo_image_folder as s; s('$OUT/data', limit_per_class=4)"
EXTRACT="-m captum_paths extract --model demo --data $OUT/data --method neuron-path random --quiet"
$PY $EXTRACT --out "$OUT/cpu" --device cpu --restart
$PY $EXTRACT --out "$OUT/gpu_fp32" --device cuda --restart
$PY $EXTRACT --out "$OUT/gpu_bf16" --device cuda --dtype bf16 --restart
GPU_EXTRACT=$(status $?)

echo "== 3. torchrun, nccl, $GPUS process(es)"
$PY -m torch.distributed.run --standalone --nproc_per_node "$GPUS" $EXTRACT --out "$OUT/torchrun" --device cuda \
    --restart
TORCHRUN=$(status $?)

echo "== 4. throughput"
$PY benchmarks/throughput.py --device cuda --images ${IMAGES:-512} --dtype fp32 bf16 --reference-images 2 \
    --out "$OUT/throughput"
THROUGHPUT=$(status $?)

$PY - "$OUT" "$CUDA_TESTS" "$GPU_EXTRACT" "$TORCHRUN" "$THROUGHPUT" "$(( $(date +%s) - START ))" <<'PY'
import sys
from pathlib import Path

import torch

from captum_paths.records import read_records

out, cuda_tests, extract, torchrun, throughput, seconds = sys.argv[1:]
out = Path(out)


def compare(a, b):
    ra = {(r["method"], r["image_id"]): r for r in read_records(out / a / "records.jsonl")}
    rb = {(r["method"], r["image_id"]): r for r in read_records(out / b / "records.jsonl")}
    keys = sorted(set(ra) & set(rb))
    if not keys:
        return "no common records"
    layers = [(x == y) for k in keys for x, y in zip(ra[k]["path"], rb[k]["path"])]
    err = max(abs(ra[k]["jas"] - rb[k]["jas"]) for k in keys)
    return f"{len(keys)} records, layer agreement {sum(layers) / len(layers):.3f}, max |JAS diff| {err:.2e}"


print("\n## GPU check on", torch.cuda.get_device_name(0), f"({torch.cuda.device_count()} GPU(s), torch {torch.__version__})")
print("| check | result |\n|---|---|")
print(f"| CUDA tests | {cuda_tests} |")
print(f"| extract on GPU | {extract} |")
print(f"| GPU fp32 vs CPU | {compare('cpu', 'gpu_fp32')} |")
print(f"| GPU bf16 vs GPU fp32 | {compare('gpu_fp32', 'gpu_bf16')} |")
print(f"| torchrun nccl | {torchrun}; vs one process: {compare('gpu_fp32', 'torchrun')} |")
table = out / "throughput" / "throughput_cuda.md"
print(f"| throughput | {throughput} |")
print(f"| total | {seconds} s |")
if table.exists():
    print("\n" + table.read_text())
PY
