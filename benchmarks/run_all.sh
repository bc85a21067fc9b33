#!/usr/bin/env bash
# Regenerate BENCHMARKS.md: the machine, every command, its table, its plot, and the targets of issue 5.
#
#   benchmarks/run_all.sh          CPU suite in fp32 (the targets are CPU ones; about an hour on 2 cores)
#   benchmarks/run_all.sh gpu      GPU suite in bf16, every attention backend, plus torch.compile
#   benchmarks/run_all.sh quick    preliminary: tiny models, few steps (minutes), replaced by the CPU suite
#   benchmarks/run_all.sh packing  CPU, packed vs padded vs one image at a time, the cases and targets of issue 15
#   benchmarks/run_all.sh recipe   CPU, training loader vs timm's, and the fine-tuning recipe vs timm's parts (issue 16)
#   benchmarks/run_all.sh embed    CPU, vitkit embed vs the bare forward, and kNN / probe of the digits model (issue 17)
#   benchmarks/run_all.sh rope     CPU, DINOv3 ViT-S/16 against timm's Eva, and RoPE's share of a block (issue 24)
#   benchmarks/run_all.sh naflex   CPU, SigLIP2 NaFlex packed against transformers' and timm's padded batches (issue 25)
#   benchmarks/run_all.sh tower    CPU, a Qwen2.5-VL vision tower packed against transformers' tower, same weights
#   benchmarks/run_all.sh startup  `vitkit --help` and the light commands, this tree against an earlier commit (issue 29)
#   benchmarks/run_all.sh precision  CPU, fp32 / bf16 / int8 inference: accuracy, speed against timm and onnxruntime
#
# Each suite writes benchmarks/results/<suite>/ (JSON, PNG, section.md); BENCHMARKS.md is then assembled
# from every suite that has results, so a CPU run keeps the last GPU section and the other way round.
# Run it on a quiet machine: other processes on the same cores make every number slower and noisier.
# Knobs: STEPS (timed steps per round), ROUNDS (candidates run in turn this many times, steps pooled),
# WARMUP (2), MEMORY_LEVELS (recomputed-block counts), MEMORY_STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${1:-cpu}
OUT=benchmarks/results/$SUITE
SECTION=$OUT/section.md
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" COLUMNS=170 NO_COLOR=1 TTY_COMPATIBLE=0
MODELS=(vit_small_patch16_224 vit_base_patch16_224)
SIMPLE=simple_vit_small_patch16_224
MEMORY_MODEL=vit_base_patch16_224
case "$SUITE" in
  cpu) TITLE="CPU suite (fp32)"; DEVICE=cpu; PRECISION=fp32; INFER_BATCH=16; TRAIN_BATCH=8; MEMORY_BATCH=32
       ATTENTION=auto; KERNELS=math,sdpa,flex; TOKENS=197,577,1025,4097; STEPS=${STEPS:-8}; ROUNDS=${ROUNDS:-3}
       MEMORY_LEVELS=${MEMORY_LEVELS:-0,6,12}; MEMORY_STEPS=${MEMORY_STEPS:-1}
       rm -rf benchmarks/results/quick ;;
  gpu) TITLE="GPU suite (bf16)"; DEVICE=cuda; PRECISION=bf16; INFER_BATCH=128; TRAIN_BATCH=64; MEMORY_BATCH=64
       ATTENTION=all; KERNELS=all; TOKENS=197,577,1025,4097,16385; STEPS=${STEPS:-10}; ROUNDS=${ROUNDS:-1}
       MEMORY_LEVELS=${MEMORY_LEVELS:-0-12}; MEMORY_STEPS=${MEMORY_STEPS:-3} ;;
  quick) TITLE="Preliminary: quick suite (tiny models, few steps; the CPU suite replaces it)"; DEVICE=cpu
       PRECISION=fp32; INFER_BATCH=4; TRAIN_BATCH=4; MEMORY_BATCH=8; ATTENTION=auto; KERNELS=math,sdpa
       TOKENS=197,577; STEPS=${STEPS:-3}; ROUNDS=${ROUNDS:-1}; MEMORY_LEVELS=${MEMORY_LEVELS:-0,6,12}
       MEMORY_STEPS=${MEMORY_STEPS:-3}; MODELS=(vit_tiny_patch16_224)
       SIMPLE=""; MEMORY_MODEL=vit_tiny_patch16_224 ;;
  packing) TITLE="Packed batches (NaViT), CPU (fp32)"; DEVICE=cpu; PRECISION=fp32; STEPS=${STEPS:-2}
       ROUNDS=${ROUNDS:-2} ;;
  recipe) TITLE="Fine-tuning: loader and recipe, CPU (fp32)"; DEVICE=cpu; PRECISION=fp32; STEPS=0; ROUNDS=${ROUNDS:-5}
       EPOCHS=${EPOCHS:-20} ;;
  embed) TITLE="Embeddings: throughput, kNN and linear probe, CPU (fp32)"; DEVICE=cpu; PRECISION=fp32; STEPS=0
       ROUNDS=${ROUNDS:-3} ;;
  rope) TITLE="RoPE towers: DINOv3 against timm, CPU (fp32)"; DEVICE=cpu; PRECISION=fp32; STEPS=${STEPS:-8}
       ROUNDS=${ROUNDS:-3} ;;
  naflex) TITLE="SigLIP2 NaFlex: packed vs padded, CPU (fp32)"; DEVICE=cpu; PRECISION=fp32; STEPS=${STEPS:-1}
       ROUNDS=${ROUNDS:-2} ;;
  tower) TITLE="Vision towers of VLMs (Qwen2.5-VL)"; DEVICE=cpu; PRECISION=fp32; STEPS=${STEPS:-2}
       ROUNDS=${ROUNDS:-3} ;;
  startup) TITLE="Start-up time: vitkit --help and the light commands"; DEVICE=cpu; PRECISION=fp32; STEPS=0
       ROUNDS=${ROUNDS:-5} ;;
  precision) TITLE="Precision: fp32, bf16 and int8 inference, CPU"; DEVICE=cpu; PRECISION=fp32; STEPS=${STEPS:-3}
       ROUNDS=${ROUNDS:-2} ;;
  *) echo "usage: $0 [cpu|gpu|quick|packing|recipe|embed|rope|naflex|tower|startup|precision]" >&2; exit 2 ;;
esac
WARMUP=${WARMUP:-2}
rm -rf "$OUT"
mkdir -p "$OUT"

machine() {
  echo "### Machine"
  echo
  echo '```text'
  python - "$DEVICE" <<'PY'
import sys

import torch

from vitkit.bench.machine import machine_info

for key, value in machine_info(torch.device(sys.argv[1])).items():
    print(f"{key:15} {value}")
PY
  if command -v lscpu >/dev/null; then
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)|L2|L3)' || true
  fi
  if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), vitkit commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo '```'
  echo
  echo "<details><summary>torch build configuration</summary>"
  echo
  echo '```text'
  python -c 'import torch; print(torch.__config__.show().strip())'
  echo '```'
  echo "</details>"
  echo
}

# bench NAME TITLE ARGS...: run `vitkit ARGS --json --plot`, append its command, table and plot to the section.
bench() {
  local name=$1 title=$2
  shift 2
  local args=("$@" --json "$OUT/$name.json" --plot "$OUT/$name.png")
  echo ">> vitkit ${args[*]}" >&2
  {
    echo "#### $title"
    echo
    echo '```bash'
    echo "vitkit ${args[*]}"
    echo '```'
    echo
    echo '```text'
    python -m vitkit "${args[@]}"
    echo '```'
    echo
    echo "![$title]($OUT/$name.png)"
    echo
  } >>"$SECTION"
}

# loaded: more runnable processes than half the cores (1-minute load average).
loaded() { awk -v cores="$(nproc)" '{ exit !($1 > cores / 2) }' /proc/loadavg 2>/dev/null; }
# Give a just-finished job a minute to leave the load average (it would flag this run as loaded).
for _ in $(seq 12); do
  loaded || break
  sleep 5
done
{
  echo "## $TITLE"
  echo
  # More runnable processes than cores at the start: say so next to the numbers.
  if loaded; then
    echo "**Measured under load** (load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores): other processes"
    echo "shared these cores, so absolute numbers are low and noisy; ratios within a table are the figures to read."
    echo
  fi
  machine
} >"$SECTION"

# script NAME TITLE ARGS...: run `python benchmarks/NAME.py ARGS --json`, append its command and table to the section
# (the JSON goes to $OUT/NAME.json, or $OUT/$JSON_NAME.json when set).
script() {
  local name=$1 title=$2
  shift 2
  echo ">> python benchmarks/$name.py $*" >&2
  {
    echo "#### $title"
    echo
    echo '```bash'
    echo "python benchmarks/$name.py $*"
    echo '```'
    echo
    python "benchmarks/$name.py" "$@" --json "$OUT/${JSON_NAME:-$name}.json"
    echo
  } >>"$SECTION"
}

if [ "$SUITE" = recipe ]; then
  # issue 16: the training loader against timm's, and the recipe against the same recipe from timm's parts
  script loader_bench "Training loader throughput" --images 2000 --workers 2 --rounds "$ROUNDS"
  script recipe_bench "Fine-tuning recipe on the digits as a JPEG folder" --epochs "$EPOCHS" --workers 2
  JSON_NAME=recipe_finetune script recipe_bench "Fine-tuning a pretrained tower with and without the recipe" \
    --mode finetune --pretrain-epochs 10 --epochs 15 --workers 2
  JSON_NAME=recipe_digits script recipe_bench "Does the recipe help on 1,437 images? Long schedules from scratch" \
    --mode digits --model vit_tiny_patch16_224 --patch-size 8 --lr 1e-3 --aa rand-m7-mstd0.5-inc1 \
    --model-ema-decay 0.995 --scale 1 1 --epochs 60 --seeds 0 1 --workers 2
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)." >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi

# cli TITLE ARGS...: run `vitkit ARGS`, append the command and its output to the section.
cli() {
  local title=$1
  shift
  echo ">> vitkit $*" >&2
  {
    echo "#### $title"
    echo
    echo '```bash'
    echo "vitkit $*"
    echo '```'
    echo
    echo '```text'
    python -m vitkit "$@"
    echo '```'
    echo
  } >>"$SECTION"
}

if [ "$SUITE" = embed ]; then
  # issue 17: embed's throughput against the bare forward, and the default digits model judged by its features
  script embed_bench "vitkit embed vs the bare forward on the same batches" --images 512 --batch-size 64 \
    --workers 2 --rounds "$ROUNDS"
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  echo ">> vitkit train --out $WORK/digits" >&2
  python -m vitkit train --out "$WORK/digits" >"$WORK/train.log"
  {
    echo "#### The digits model: \`vitkit train\` with its defaults"
    echo
    echo '```text'
    tail -n 12 "$WORK/train.log"
    echo '```'
    echo
  } >>"$SECTION"
  for split in train val; do
    cli "Embed the $split split" embed --checkpoint "$WORK/digits" --data digits --split "$split" \
      --out "$WORK/emb_$split"
  done
  cli "Weighted kNN on the embeddings" knn --train "$WORK/emb_train" --val "$WORK/emb_val"
  cli "Linear probe on the embeddings" probe --train "$WORK/emb_train" --val "$WORK/emb_val"
  sed -i "s#$WORK#runs#g" "$SECTION"
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)." >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi

COMMON=(--device "$DEVICE" --precision "$PRECISION" --steps "$STEPS" --warmup "$WARMUP")
ROUNDS_ARG=(--rounds "$ROUNDS")
if [ "$SUITE" = naflex ]; then
  # issue 25: a NaFlex tower on images of many shapes at two patch budgets, packed vs two padded peers
  script naflex_bench "SigLIP2 NaFlex, 64 images of sides 64-512 px, budgets 256 and 1024" --images 64 \
    --min-side 64 --max-side 512 --budgets 256,1024 --depth 2 --steps "$STEPS" --rounds "$ROUNDS"
  { echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)."; echo
    python benchmarks/naflex_targets.py "$OUT/naflex_bench.json"; } >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi
if [ "$SUITE" = startup ]; then
  # issue 29: the lazy imports of the command line, against the commit before them
  script startup_bench "Before and after the lazy imports" --before 5141f6f --runs "$ROUNDS"
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)." >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi
if [ "$SUITE" = precision ]; then
  # issue 28: each inference precision against fp32 (the digits model, a tower on photographs), then vitkit against
  # timm and onnxruntime at each precision on ViT-S/16, ViT-B/16 (bf16 with --compile: weights frozen and prepacked)
  # and SigLIP so400m, `vitkit embed` on one folder at each precision, and where a bf16 step's time goes
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  echo ">> vitkit train --out $WORK/digits" >&2
  python -m vitkit train --out "$WORK/digits" >"$WORK/train.log"
  script precision_accuracy "Accuracy and speed of each precision against fp32" --run "$WORK/digits" \
    --rounds "$ROUNDS"
  for model in vit_small_patch16_224 vit_base_patch16_224; do
    for precision in fp32 bf16-autocast bf16 int8; do
      bench "${model}_$precision" "$model, inference, batch 16, $precision" bench --model "$model" \
        --batch-size 16 --peers timm,onnxruntime --precision "$precision" --steps "$STEPS" --warmup 1 \
        "${ROUNDS_ARG[@]}" --device "$DEVICE"
    done
    bench "${model}_bf16_compiled" "$model, inference, batch 16, bf16, torch.compile with freezing" bench \
      --model "$model" --batch-size 16 --peers timm --precision bf16 --compile --steps "$STEPS" --warmup 1 \
      --device "$DEVICE"
  done
  # SigLIP so400m (27 blocks of width 1152) at batch 8: bf16 only where the CPU multiplies it natively, since
  # emulated it takes about 3 minutes a step on two cores
  SO400M_PRECISIONS="fp32 int8"
  NATIVE_BF16="import sys, torch; from vitkit.runtime import native_bf16; sys.exit(not native_bf16(torch.device('cpu'))[0])"
  if python -c "$NATIVE_BF16"; then
    SO400M_PRECISIONS="fp32 bf16-autocast bf16 int8"
  fi
  for precision in $SO400M_PRECISIONS; do
    bench "siglip_so400m_patch14_224_$precision" "siglip_so400m_patch14_224, inference, batch 8, $precision" \
      bench --model siglip_so400m_patch14_224 --batch-size 8 --peers timm,onnxruntime --precision "$precision" \
      --steps 2 --warmup 1 --device "$DEVICE"
  done
  script precision_summary "vitkit against timm and onnxruntime at each precision" "$OUT"
  script embed_bench "vitkit embed on one folder at each precision" --images 64 --batch-size 16 --workers 2 \
    --rounds "$ROUNDS" --precisions fp32,bf16,int8 --root "$WORK/embed"
  script profile_ops "Where a bf16 step's time goes (ViT-B/16, batch 16)" vit_base_patch16_224 timm \
    --batch-size 16 --precision bf16 --steps 2
  sed -i "s#$WORK#runs#g" "$SECTION"
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)." >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi
if [ "$SUITE" = tower ]; then
  # Qwen2.5-VL-7B's vision tower cut to 4 blocks (3 windowed, 1 full attention), packed vs transformers' tower
  bench tower "qwen2_5_vl_vision_7b at 4 blocks, 16 images of raw sides 112-448 px at their smart_resize sizes" \
    bench tower --model qwen2_5_vl_vision_7b --depth 4 --images 16 --min-side 112 --max-side 448 --warmup 1 \
    "${ROUNDS_ARG[@]}" --device "$DEVICE" --precision "$PRECISION" --steps "$STEPS"
  { echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)."; echo
    python benchmarks/tower_targets.py "$OUT/tower.json"; } >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi
if [ "$SUITE" = rope ]; then
  # issue 24: a RoPE tower against timm's Eva on the same weights, and what the rotation costs inside a block
  for run in "infer 16" "train 8"; do
    read -r mode batch <<<"$run"
    bench "dinov3_small_$mode" "vit_small_patch16_dinov3 (256 px), $mode, batch $batch" bench \
      --model vit_small_patch16_dinov3 --mode "$mode" --batch-size "$batch" --peers timm "${ROUNDS_ARG[@]}" \
      "${COMMON[@]}"
  done
  script rope_share "RoPE's share of a block's time" --model vit_small_patch16_dinov3 --batch-size 16 --steps 20
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)." >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi
if [ "$SUITE" = packing ]; then
  # issue 15: vit_small_patch16_224 on two image mixes, packed at each max_tokens, padded, one at a time
  for mix in "24 112 448" "64 64 512"; do
    read -r images low high <<<"$mix"
    for mode in infer train; do
      bench "packing_${images}_${mode}" "$images images, sides $low-$high px (step 16), $mode" bench packing \
        --model "${MODELS[0]}" --images "$images" --min-side "$low" --max-side "$high" --side-step 16 \
        --max-tokens 512,1024,2048,4096 --batch-size 8 --mode "$mode" --warmup 1 "${ROUNDS_ARG[@]}" \
        --device "$DEVICE" --precision "$PRECISION" --steps "$STEPS"
    done
  done
  {
    echo "#### GEMM rate by token rows"
    echo
    echo '```bash'
    echo "python benchmarks/profile_rows.py --model ${MODELS[0]}"
    echo '```'
    echo
    python benchmarks/profile_rows.py --model "${MODELS[0]}"
    echo
    for profiled in "--images 24 --min-side 112 --max-side 448 --max-tokens 1024 --mode infer --steps 2" \
                    "--images 64 --min-side 64 --max-side 512 --max-tokens 1024 --mode train --steps 1"; do
      echo "#### Where the time and memory go: padded vs packed"
      echo
      echo '```bash'
      echo "python benchmarks/profile_packing.py $profiled"
      echo '```'
      echo
      # shellcheck disable=SC2086  # the options are words
      python benchmarks/profile_packing.py $profiled 2>/dev/null
      echo
    done
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)."
    echo
    python benchmarks/packing_targets.py "$OUT"
  } >>"$SECTION"
  python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
  echo "wrote BENCHMARKS.md ($OUT)" >&2
  exit 0
fi
for model in "${MODELS[@]}"; do
  # every peer on the first model; timm alone (the target's baseline) on the larger ones, to keep the CPU suite short
  peers=timm
  if [ "$model" = "${MODELS[0]}" ] || [ "$SUITE" = gpu ]; then peers=timm,vit-pytorch,hf; fi
  bench "${model}_infer" "$model, inference, batch $INFER_BATCH" bench --model "$model" --mode infer \
    --batch-size "$INFER_BATCH" --attention "$ATTENTION" --peers "$peers" "${ROUNDS_ARG[@]}" "${COMMON[@]}"
  bench "${model}_train" "$model, training, batch $TRAIN_BATCH" bench --model "$model" --mode train \
    --batch-size "$TRAIN_BATCH" --attention "$ATTENTION" --peers "$peers" "${ROUNDS_ARG[@]}" "${COMMON[@]}"
done
if [ -n "$SIMPLE" ]; then
  bench "${SIMPLE}_infer" "$SIMPLE, inference, batch $INFER_BATCH" bench --model "$SIMPLE" --mode infer \
    --batch-size "$INFER_BATCH" --peers vit-pytorch,vit-pytorch-flash "${ROUNDS_ARG[@]}" "${COMMON[@]}"
  bench "${SIMPLE}_train" "$SIMPLE, training, batch $TRAIN_BATCH" bench --model "$SIMPLE" --mode train \
    --batch-size "$TRAIN_BATCH" --peers vit-pytorch,vit-pytorch-flash "${ROUNDS_ARG[@]}" "${COMMON[@]}"
fi
if [ "$SUITE" = gpu ]; then
  bench vit_base_patch16_224_compiled "vit_base_patch16_224, torch.compile, both modes" bench \
    --model vit_base_patch16_224 --mode both --batch-size "$TRAIN_BATCH" --compile --peers timm "${COMMON[@]}"
fi
bench attention "attention kernels, 12 heads x 64, batch 1" bench attention --tokens "$TOKENS" --heads 12 \
  --head-dim 64 --backends "$KERNELS" "${COMMON[@]}"
bench memory "gradient checkpointing, $MEMORY_MODEL, training, batch $MEMORY_BATCH" bench memory \
  --model "$MEMORY_MODEL" --batch-size "$MEMORY_BATCH" --levels "$MEMORY_LEVELS" --device "$DEVICE" \
  --precision "$PRECISION" --steps "$MEMORY_STEPS" --warmup 1
# Packed batches have their own suite: benchmarks/run_all.sh packing.
if [ "$SUITE" = cpu ]; then
  # Where inference time goes, per aten operator (the evidence for the targets a kernel choice cannot reach).
  for pair in "$SIMPLE vit-pytorch" "${MODELS[0]} timm"; do
    read -r model peer <<<"$pair"
    echo ">> python benchmarks/profile_ops.py $model $peer --batch-size $INFER_BATCH" >&2
    {
      echo "#### Profile: $model vs $peer, inference, batch $INFER_BATCH"
      echo
      echo '```bash'
      echo "python benchmarks/profile_ops.py $model $peer --batch-size $INFER_BATCH"
      echo '```'
      echo
      python benchmarks/profile_ops.py "$model" "$peer" --batch-size "$INFER_BATCH" 2>/dev/null
      echo
    } >>"$SECTION"
  done
fi
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)." >>"$SECTION"
echo >>"$SECTION"
if [ "$SUITE" = cpu ]; then
  python benchmarks/targets.py "$OUT" >>"$SECTION"
fi

python benchmarks/assemble.py >BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
echo "wrote BENCHMARKS.md ($OUT)" >&2
