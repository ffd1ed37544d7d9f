#!/usr/bin/env bash
# moelab beside PyTorch eager on the same model (experiments/specs/bench_lm.pbtxt
# and experiments/bench/pytorch_bench_lm.py), in one invocation:
#
#   bazel run //experiments:bench_lm [-- --steps=30 --rounds=3]
#
# Both get the same threads (2), the same warm-up and timed steps, and the same
# OMP_WAIT_POLICY (PASSIVE unless the caller sets it). They run alternately,
# --rounds times each; each side's best round counts, and because a shared
# machine's speed drifts between rounds, the ratio within each round (the two
# ran back to back) is shown too, with its median. First comes the machine
# (CPU model, ISA flags) and its GEMM peaks per library and precision
# (//experiments:gemm_peaks), and before the last line a roofline: moelab's
# useful GFLOP/s against those peaks. The last line is moelab's figure:
# `train_tokens_per_s: N`.
set -euo pipefail

steps=30
warmup_steps=5
rounds=3
for arg in "$@"; do
  case "$arg" in
    --steps=*) steps="${arg#*=}" ;;
    --warmup_steps=*) warmup_steps="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    *) echo "error: unknown flag '$arg' (expected --steps=N, --warmup_steps=N, --rounds=N)" >&2
       exit 2 ;;
  esac
done
for value in "$steps" "$warmup_steps" "$rounds"; do
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then
    echo "error: --steps, --warmup_steps and --rounds take whole numbers, got '$value'" >&2
    exit 2
  fi
done
if ((steps < 1 || rounds < 1)); then
  echo "error: --steps and --rounds must be at least 1" >&2
  exit 2
fi

train_bench="$PWD/experiments/train_bench"
gemm_peaks="$PWD/experiments/gemm_peaks"
script="$PWD/experiments/bench/pytorch_bench_lm.py"
spec="$PWD/experiments/specs/bench_lm.pbtxt"
python=/usr/bin/python3
if ! "$python" -c 'import torch' 2>/dev/null; then
  echo "error: $python has no torch; install Debian's python3-torch (bash third_party/setup.sh)" >&2
  exit 1
fi
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
threads=$(sed -n 's/^ *runtime *{ *threads: *\([0-9]*\).*/\1/p' "$spec")
threads="${threads:-2}"

# The machine and its GEMM peaks first: every ratio below depends on them.
peaks_out=$("$gemm_peaks" --threads="$threads" --reps=5)
echo "$peaks_out"
peak_fp32=$(echo "$peaks_out" | sed -n 's/^peak_fp32_gflops: *\([0-9.]*\).*/\1/p')
peak_bf16=$(echo "$peaks_out" | sed -n 's/^peak_bf16_gflops: *\([0-9.]*\).*/\1/p')
echo

last_value() { tail -n 1 | sed -n 's/^train_tokens_per_s: *//p'; }
best_step_gflops=0
best_torch=0
best_moelab=0
round_ratios=()
for ((round = 1; round <= rounds; ++round)); do
  torch_out=$("$python" "$script" --steps "$steps" --warmup_steps "$warmup_steps" \
    --threads "$threads")
  moelab_out=$("$train_bench" --spec="$spec" --steps="$steps" \
    --warmup_steps="$warmup_steps")
  if ((round == 1)); then
    echo "== PyTorch eager ($("$python" -c 'import torch; print(torch.__version__)'))"
    echo "$torch_out" | head -n -1
    echo "== moelab"
    echo "$moelab_out" | head -n -1
    echo
  fi
  torch_rate=$(echo "$torch_out" | last_value)
  moelab_rate=$(echo "$moelab_out" | last_value)
  step_gflops=$(echo "$moelab_out" | sed -n 's/^step_gflops: *\([0-9.]*\).*/\1/p')
  best_step_gflops=$(awk -v a="$best_step_gflops" -v b="${step_gflops:-0}" \
    'BEGIN { print (b > a ? b : a) }')
  round_ratio=$(awk -v m="$moelab_rate" -v t="$torch_rate" 'BEGIN { printf "%.2f", m / t }')
  round_ratios+=("$round_ratio")
  echo "round $round: pytorch eager $torch_rate tokens/s, moelab $moelab_rate tokens/s," \
    "ratio ${round_ratio}x"
  best_torch=$(awk -v a="$best_torch" -v b="$torch_rate" 'BEGIN { print (b > a ? b : a) }')
  best_moelab=$(awk -v a="$best_moelab" -v b="$moelab_rate" 'BEGIN { print (b > a ? b : a) }')
done
echo "OMP_WAIT_POLICY=$OMP_WAIT_POLICY, $threads threads, $steps timed steps, best of $rounds"
echo "pytorch_eager_train_tokens_per_s: $best_torch"
awk -v m="$best_moelab" -v t="$best_torch" 'BEGIN { printf "ratio moelab / pytorch eager: %.2fx\n", m / t }'
printf '%s\n' "${round_ratios[@]}" | sort -g | awk '{ r[NR] = $1 }
  END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
        printf "ratio within rounds: median %.2fx, min %.2fx, max %.2fx\n", m, r[1], r[NR] }'
awk -v s="$best_step_gflops" -v f="$peak_fp32" -v b="$peak_bf16" 'BEGIN {
  printf "roofline: moelab fp32 step %.1f GFLOP/s of useful work = %.0f%% of the fp32 GEMM peak (%.1f), %.0f%% of the bf16 peak (%.1f)\n",
    s, 100 * s / f, f, 100 * s / b, b }'
echo "train_tokens_per_s: $best_moelab"
