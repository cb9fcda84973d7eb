#!/usr/bin/env bash
# Train the bundled `cells` StyleGAN2 from scratch on a lent GPU machine in one call, and
# bring back what decides whether it ships (docs/cells-model.md, "Training on a GPU").
#
# Made for the `device` tool's run (one call, ~10 minutes at most, files back only from
# $OUT: at most 8, 16 MiB each), from the repository root:
#     run(command="bash tools/train-cells-on-gpu.sh", timeout_s=590)
# Dry run on this machine's CPU (checks everything but CUDA itself):
#     OUT=/tmp/gpu-out DEVICE=cpu MINUTES=0.3 DATASET_SIZE=300 PYTHON=.venv/bin/python \
#         bash tools/train-cells-on-gpu.sh
#
# Two runs side by side on the one GPU (a 1-M-parameter GAN at 64 px leaves it mostly
# idle): run 6's recipe at channel base 2048 (`narrow`) and at 4096 (`wide`, twice the
# channels at 32 and 64 px), both batch 64. Then every export's quality SMDs, the full
# evaluation (moves, sanity) of each run's last $EVAL_LAST exports, and one tarball, split
# into 15 MiB parts: cat $OUT/cells-gpu.tar.gz.part-* | tar xz
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT to the folder whose files come back}"
MINUTES="${MINUTES:-5}"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
DATASET_SIZE="${DATASET_SIZE:-20000}"
EVAL_LAST="${EVAL_LAST:-2}"
WORK="${WORK:-/tmp/cells-gpu}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rm -rf "$WORK" && mkdir -p "$WORK/narrow" "$WORK/wide" "$OUT"

"$PYTHON" -c "
import sys, torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))
sys.exit(None if sys.argv[1] == 'cpu' or torch.cuda.is_available() else 'no CUDA device: stop')
" "$DEVICE"
dataset="dataset-$DATASET_SIZE-64px-seed0.npy"
OMP_NUM_THREADS=4 "$PYTHON" -c "
import sys, time
from napari_freedrag.training.cells.dataset import cached_images
began = time.perf_counter()
cached_images(sys.argv[1], int(sys.argv[2]))
print(f'dataset: {sys.argv[2]} images in {time.perf_counter() - began:.0f} s')
" "$WORK/narrow/$dataset" "$DATASET_SIZE"
cp "$WORK/narrow/$dataset" "$WORK/wide/$dataset"

pids=()
for run in narrow:2048 wide:4096; do
  name="${run%%:*}"
  OMP_NUM_THREADS=4 "$PYTHON" -m napari_freedrag.training.cells.train --out "$WORK/$name" \
    --device "$DEVICE" --channel-base "${run#*:}" --batch 64 --style-mixing 0.9 --pl-weight 2 \
    --dataset-size "$DATASET_SIZE" --minutes "$MINUTES" --snapshot-minutes "$(
      "$PYTHON" -c "print(max(float('$MINUTES') / 5, 0.05))"
    )" --compact-out "$WORK/$name/compact.pt" >"$WORK/$name/train.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
for name in narrow wide; do
  echo "== $name: $(grep -c '^it ' "$WORK/$name/train.log") log lines"
  tail -n 3 "$WORK/$name/train.log"
done

# Every export's SMDs, then the full figures of the last ones, all on the CPU cores.
for name in narrow wide; do
  mapfile -t exports < <(ls "$WORK/$name"/cells-0*kimg.safetensors 2>/dev/null || true)
  ((${#exports[@]})) || continue
  OMP_NUM_THREADS=2 "$PYTHON" -m napari_freedrag.training.cells.evaluate --quality-only \
    "${exports[@]}" --json "$WORK/$name/quality.json" >"$WORK/$name/quality.log" 2>&1 &
  first=$((${#exports[@]} > EVAL_LAST ? ${#exports[@]} - EVAL_LAST : 0))
  for path in "${exports[@]:$first}"; do
    OMP_NUM_THREADS=2 "$PYTHON" -m napari_freedrag.training.cells.evaluate "$path" \
      --json "$path.evaluation.json" >"$path.evaluation.log" 2>&1 &
  done
done
wait || true
cat "$WORK"/*/quality.log "$WORK"/*/*.evaluation.log 2>/dev/null || true

# What comes back: logs, configs, export JSONs, SMD curves, evaluations, the last sample
# grid, each run's last exports and its compact snapshot (to resume on a CPU).
bundle=()
for name in narrow wide; do
  dir="$WORK/$name"
  bundle+=("$dir"/*.log "$dir"/config.json "$dir"/cells-0*kimg.json)
  bundle+=("$dir"/quality.json "$dir"/*.evaluation.json "$dir"/compact.pt)
  bundle+=($(ls "$dir"/samples-*.png 2>/dev/null | tail -n 1))
  bundle+=($(ls "$dir"/cells-0*kimg.safetensors 2>/dev/null | tail -n "$EVAL_LAST"))
done
existing=()
for path in "${bundle[@]}"; do [[ -f "$path" ]] && existing+=("${path#"$WORK"/}"); done
tar czf - -C "$WORK" "${existing[@]}" | split -b 15M - "$OUT/cells-gpu.tar.gz.part-"
ls -l "$OUT"
exit "$failed"
