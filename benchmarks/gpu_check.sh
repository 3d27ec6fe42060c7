#!/usr/bin/env bash
# The one-GPU check, about 6 minutes on one H100-class GPU (every step has a time limit; 9 min 30 s at most):
#   1. the throughput benchmark (ViT-B/16, 224 px, fp32 and bf16, refine 6 and 0, against the literal reference);
#   2. memory: ViT-L/16, batch 32, at the free memory of an 80 GB card; one image on too little memory;
#   3. extract on the GPU in fp32 and bf16, records compared with a CPU run on the same images;
#   4. a torchrun run with the nccl backend (world size = the GPUs here, 1 or 2), compared with one process;
#   5. the CUDA tests.
# It prints one summary table and writes it, with every step's log, under $GPU_CHECK_DIR (default
# runs/gpu_check); summary.md is the table.
#
# Nothing is installed from the network: packages missing beyond the usual GPU image (torch, timm,
# transformers, pandas, seaborn, networkx, scikit-learn, tabulate, pytest) come from local wheels in .wheels/, made
# beforehand on a machine with a package index: bash benchmarks/gpu_wheels.sh. They go to a folder of their
# own ($GPU_CHECK_DIR/site), not into the Python environment.
#
# DEVICE=cpu runs every step on the CPU with small models and sizes (and torchrun with 2 gloo processes): the dry run
# that checks the script itself on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DIR=${GPU_CHECK_DIR:-runs/gpu_check}
mkdir -p "$DIR"
SITE="$(cd "$DIR" && pwd)/site"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1
if ! $PY -c "import captum, seaborn, networkx, tabulate, sklearn, timm" 2>/dev/null; then
    ls .wheels/*.whl >/dev/null 2>&1 || { echo "missing packages and no .wheels/ (bash benchmarks/gpu_wheels.sh)"; exit 1; }
    $PY -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        .wheels/*.whl || { echo "the wheels in .wheels/ did not install"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:$SITE"
    $PY -c "import captum, seaborn, networkx, tabulate, sklearn, timm" || exit 1
fi
if [ "$DEVICE" = cpu ]; then
    PROCS=2 IMAGES=${IMAGES:-2} REF=1 TP="--model vit_tiny_patch16_224" MEM="--model vit_tiny_patch16_224 --images 2 --batch-size 2" PER_CLASS=1
else
    PROCS=$($PY -c "import torch; print(min(2, torch.cuda.device_count()))")
    [ "$PROCS" -ge 1 ] || { echo "no CUDA device (DEVICE=cpu for the dry run)"; exit 1; }
    IMAGES=${IMAGES:-256} REF=2 TP="" MEM="" PER_CLASS=4
fi
declare -A RESULT
step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, its log in $DIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most $limit s)"
    local begin=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > >(tee "$DIR/$name.log") 2>&1
    local rc=$? took=$(( $(date +%s) - begin ))
    case $rc in
        0) RESULT[$name]="ok, $took s" ;;
        124|137) RESULT[$name]="TIMED OUT after $took s" ;;
        *) RESULT[$name]="FAILED (exit $rc) after $took s; see $name.log" ;;
    esac
    echo "   ${RESULT[$name]}"
}
START=$(date +%s)

step throughput 200 $PY benchmarks/throughput.py --device "$DEVICE" $TP --images "$IMAGES" --dtype fp32 bf16 \
    --refine default 0 --reference-images "$REF" --out "$DIR/throughput"

step memory 90 $PY benchmarks/gpu_memory.py --device "$DEVICE" $MEM --out "$DIR/memory"

$PY -c "from captum_paths.demo import save_demo_image_folder as s; s('$DIR/data', limit_per_class=$PER_CLASS)"
EXTRACT="-m captum_paths extract --model demo --data $DIR/data --method neuron-path random --quiet --restart"
GPU=$DEVICE
step extract 100 bash -c "$PY $EXTRACT --out $DIR/cpu --device cpu && $PY $EXTRACT --out $DIR/gpu_fp32 --device $GPU \
    && $PY $EXTRACT --out $DIR/gpu_bf16 --device $GPU --dtype bf16"

step torchrun 90 $PY -m torch.distributed.run --standalone --nproc_per_node "$PROCS" $EXTRACT --out "$DIR/torchrun" \
    --device "$GPU"

step cuda_tests 90 $PY -m pytest -q -p no:cacheprovider tests/test_joint_integrated_gradients.py \
    tests/test_neuron_path.py tests/test_heads.py -k cuda

$PY - "$DIR" "$(( $(date +%s) - START ))" "$DEVICE" "$PROCS" "${RESULT[throughput]}" "${RESULT[memory]}" "${RESULT[extract]}" \
    "${RESULT[torchrun]}" "${RESULT[cuda_tests]}" <<'PY' | tee "$DIR/summary.md"
import platform
import sys
from pathlib import Path

import torch

from captum_paths.analysis import path_agreement
from captum_paths.records import read_records

folder, seconds, device, procs, *results = sys.argv[1:]
folder = Path(folder)
steps = dict(zip(["throughput", "memory", "extract", "torchrun", "cuda_tests"], results))


def compare(a, b):
    try:
        table = path_agreement(read_records(folder / a / "records.jsonl"), read_records(folder / b / "records.jsonl"))
    except (OSError, ValueError) as err:
        return f"not compared ({type(err).__name__}: {err})"
    return "; ".join(f"{r.method}: {r.images} images, units {r.same_units:.3f}, paths {r.same_paths:.3f}, "
                     f"max abs JAS diff {r.max_abs_jas_difference:.2e}" for r in table["summary"].itertuples())


def tail(name, lines=1):
    log = folder / f"{name}.log"
    text = [line for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    return " / ".join(text[-lines:]) if text else ""


name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.machine()}, dry run)"
count = torch.cuda.device_count() if device.startswith("cuda") else 0
print(f"## GPU check on {name} ({count} GPU(s), torch {torch.__version__}, CUDA {torch.version.cuda})\n")
print("| check | result |\n|---|---|")
print(f"| throughput | {steps['throughput']} |")
print(f"| memory | {steps['memory']} |")
print(f"| extract: CPU, {device} fp32, {device} bf16 | {steps['extract']} |")
print(f"| {device} fp32 vs CPU | {compare('cpu', 'gpu_fp32')} |")
print(f"| {device} bf16 vs {device} fp32 | {compare('gpu_fp32', 'gpu_bf16')} |")
group = ("a world of one: no process group, the nccl collectives need 2 GPUs" if procs == "1" else
         f"{procs} processes, {'nccl' if device.startswith('cuda') else 'gloo'}")
print(f"| torchrun ({group}) | {steps['torchrun']}; vs one process: {compare('gpu_fp32', 'torchrun')} |")
print(f"| CUDA tests | {steps['cuda_tests']}: {tail('cuda_tests')} |")
print(f"| total | {seconds} s |")
for name in ("throughput/throughput_" + device.replace(":", "") + ".md", "memory/gpu_memory.md"):
    table = folder / name
    if table.exists():
        print("\n" + table.read_text().strip())
PY
