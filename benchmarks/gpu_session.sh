#!/usr/bin/env bash
# Everything BENCHMARKS.md records from a GPU, in one go (about 15 minutes on one H100):
#   bash benchmarks/gpu_session.sh [out dir]          # default: bench-gpu/
# 1. the CUDA tests (pytest -m gpu); 2. the throughput benchmark, eager and compiled; 3. evaluation
# throughput and peak memory of B4 at batch 128 and 256, and the largest phase-3 training batch; 4. one epoch
# of every phase of train.py on 4,096 synthetic 1600x1200 JPEGs through the default path (the cache), whose
# own log gives the per-epoch time and images/s to compare with the benchmark's end-to-end figure.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() { echo; echo "== $*"; }

step "GPU and versions"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', os.cpu_count())" \
    | tee -a "$out/gpu.txt"

step "pytest -m gpu"
python -m pytest -q -m gpu tests/test_gpu_path.py 2>&1 | tee "$out/pytest-gpu.txt"

step "throughput (eager, then torch.compile)"
python benchmarks/throughput.py --json "$out/throughput.json" 2>&1 | tee "$out/throughput.txt"
python benchmarks/throughput.py --compile --json "$out/throughput-compile.json" 2>&1 | tee "$out/throughput-compile.txt"

step "memory: eval at 128 and 256, largest phase-3 training batch"
python benchmarks/memory.py --eval-batches 128,256 --json "$out/memory.json" 2>&1 | tee "$out/memory.txt"

step "train.py phase=all, one epoch per phase, 4,096 synthetic full-size JPEGs, through the cache"
synth=${TMPDIR:-/tmp}/deepart-synth
python -c "from pathlib import Path; from benchmarks.cache_speed import make_images; \
make_images(Path('$synth'), 4096, (1600, 1200))"
python -m deepart.data.prepare data=imagefolder "data.root=$synth" data.cache_dir="$synth-cache" 2>&1 | tail -2
python train.py data=imagefolder "data.root=$synth" data.cache_dir="$synth-cache" phase=all phase.epochs=1 \
    backbone.pretrained=false logger=none trainer.progress_bar=false "hydra.run.dir=$out/train-run" 2>&1 \
    | grep -E "phase .: |\] epoch|final" | tee "$out/train-run.txt"
