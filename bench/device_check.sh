#!/usr/bin/env bash
# The GPU measurements of docs/performance.md and "Retrieval quality", as one script for a
# short-lived GPU machine (DEVELOPERS.md): each step has its own time limit and writes its
# output to $OUT as it goes, so a step that overruns loses only itself.
# Needs .whl/ and devdata/ from bench/device_prepare.sh. Usage there:
#   bash bench/device_check.sh                          # every step (about 8 minutes on an H100)
#   PIPELINES=device COMPILE=no bash bench/device_check.sh scale256 galaxyzoo   # some steps, fewer figures
set -u
STEPS=" ${*:-batch_augment_gpu scale256 scale128 scale128_4cores mirabest galaxyzoo} "
PIPELINES=${PIPELINES:-decode,cache,device}    # bench/scale.py pipelines (scale128* measure decode and device)
COMPILE=${COMPILE:-auto}                       # bench/scale.py: also time torch.compile at 256 px
SPACESSL_BATCH=${SPACESSL_BATCH:-64}           # bench/scale.py: 0 = skip the SpaceSSL-style loop
GZ_EPOCHS=${GZ_EPOCHS:-30}
GZ_ROWS=${GZ_ROWS:-nocrop}                     # bench/ablation.py rows of the Galaxy Zoo step
OUT=${OUT:-checkpoints/device_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "error: installing .whl/ failed"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
GZ=devdata/shared/galaxyzoo1_small/smallGZ1/Imagenes
step() {  # step <name> <seconds> <command...>: output to $OUT/<name>.txt, and its last lines to stdout
  local name=$1 limit=$2; shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"; grep -v -i "warning\|^ *warnings.warn" "$OUT/$name.txt" | tail -n 25
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# The batch path on the GPU gives the CPU's output for the same parameters, 16-bit input included.
step batch_augment_gpu 40 python3 - <<'PY'
import numpy as np, torch
from collate import PRESETS
from collate import batch_augment as BatchAugment
from spacessl.images import unit_tensor
for preset in PRESETS:
    for channels, dtype in ((1, np.uint16), (3, np.uint8)):
        augment = BatchAugment(preset, 64, channels)
        stored = torch.from_numpy(np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (32, channels, 96, 96), dtype=dtype))
        params = augment.draw(32, 96, 96)
        cpu = augment.apply(unit_tensor(stored), params)
        gpu = augment.apply(unit_tensor(stored.pin_memory().cuda(non_blocking=True)), params).cpu()
        print(f"{preset:8s} {channels} {np.dtype(dtype).name:6s} max |gpu - cpu| = {float((gpu - cpu).abs().max()):.2e}")
x = torch.rand(256, 3, 288, 288, device="cuda")
augment = BatchAugment("astro", 256, 3)
# As in training: parameters drawn on the CPU and already on the GPU when apply runs.
params = {key: [v.cuda() for v in value] if isinstance(value, list) else value.cuda()
          for key, value in augment.draw(256, 288, 288).items()}
for _ in range(3):
    augment.apply(x, params)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(10):
    augment.apply(x, params)
end.record()
torch.cuda.synchronize()
print(f"BatchAugment.apply astro 256 x 288 px -> 256 px on the GPU: {start.elapsed_time(end) / 10:.1f} ms per view")
# Where that time goes, for the next step on the data path: the operations by GPU time.
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(3):
        augment.apply(x, params)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="device_time_total", row_limit=15, max_name_column_width=60))
PY
step scale256 160 python3 bench/scale.py --DATA_DIR=$GZ --INPUT_SIZE=256 --BATCH_SIZE=256 --STEPS=20 \
  --CACHE_SIZE=288 --SEARCH_SIZES= --EMBED_IMAGES=20000 --PIPELINES=$PIPELINES --COMPILE=$COMPILE --SPACESSL_BATCH=$SPACESSL_BATCH
step scale128 50 python3 bench/scale.py --DATA_DIR=$GZ --INPUT_SIZE=128 --BATCH_SIZE=256 --STEPS=20 \
  --CACHE_SIZE=144 --SEARCH_SIZES= --EMBED_IMAGES=0 --COMPILE=no --PIPELINES=${PIPELINES/cache,/} --SPACESSL_BATCH=$SPACESSL_BATCH
step scale128_4cores 50 taskset -c 0-3 python3 bench/scale.py --DATA_DIR=$GZ --INPUT_SIZE=128 --BATCH_SIZE=256 \
  --STEPS=20 --CACHE_SIZE=144 --SEARCH_SIZES= --EMBED_IMAGES=0 --COMPILE=no --PIPELINES=${PIPELINES/cache,/} --SPACESSL_BATCH=$SPACESSL_BATCH --NUM_WORKERS=4
step mirabest 140 python3 bench/ablation.py --SET=mirabest --ROWS=tuned --SEEDS=1 --EPOCHS=150 --NUM_WORKERS=8 \
  --SHARED=devdata/shared --FEATURES=pool --POSTPROCESS=none,whiten --RANDOM_BASELINE=False --OUT_DIR=checkpoints
cp checkpoints/bench_ablation_mirabest*/results.csv "$OUT/mirabest_results.csv" 2>/dev/null
# The whole 128 px copy is the central 256 px of the original, the field the CPU rows see; the kNN
# monitor prints the classes' trajectory per epoch. Scoring runs on the CPU (5-fold linear probes)
# and took over 4.5 min there on 2026-11-28, so the baselines, which need no GPU, are left to the
# CPU at home (same flags, --SHARED=devdata/shared --GALAXY_CROP=128).
step galaxyzoo ${GZ_LIMIT:-420} python3 bench/ablation.py --SET=galaxyzoo --ROWS=$GZ_ROWS --SEEDS=1 --EPOCHS=$GZ_EPOCHS \
  --NUM_WORKERS=8 --SHARED=devdata/shared --GALAXY_CROP=128 --FEATURES=pool --POSTPROCESS=none,whiten \
  --RANDOM_BASELINE=False --KNN_MONITOR=True --OUT_DIR=checkpoints
cp checkpoints/bench_ablation_galaxyzoo*/results.csv "$OUT/galaxyzoo_results.csv" 2>/dev/null
exit 0
