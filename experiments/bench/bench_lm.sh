#!/usr/bin/env bash
# moelab beside PyTorch eager on the same model (experiments/specs/bench_lm.pbtxt
# and experiments/bench/pytorch_bench_lm.py), at fp32 and at bf16, in one
# invocation:
#
#   bazel run //experiments:bench_lm [-- --steps=30 --rounds=5 --precisions=fp32,bf16]
#
# bf16 is each side's own mixed precision: moelab's runtime.precision BF16
# (train_bench --precision=bf16: bf16 operands, fp32 accumulation, everything
# else fp32) and PyTorch's CPU autocast (torch.autocast("cpu",
# dtype=torch.bfloat16) around forward and loss; fp32 weights and Adam).
#
# Every run gets the same threads (the spec's, 2), the same warm-up and timed
# steps, and the same OMP_WAIT_POLICY (PASSIVE unless the caller sets it).
# Each of --rounds rounds (default 5) runs PyTorch fp32, moelab fp32, PyTorch
# bf16, moelab bf16; odd rounds in that order, even rounds in the reverse
# order. Reversing (ABBA) keeps each PyTorch/moelab pair back to back, so the
# pair's ratio sees one state of a shared machine, while a bias of position
# (drift in the background load, running first or second) falls on each side
# equally often instead of always on the same one. Per precision it reports
# the median, min and max of the per-round ratios moelab / PyTorch, and the
# median of moelab bf16 / PyTorch fp32 (the gain a user sees by switching
# from PyTorch fp32 to moelab bf16); best-of-rounds figures beside them.
#
# First comes the machine (CPU model; AVX-512, AVX512-BF16, AMX-BF16) and its
# GEMM peaks per library and precision (//experiments:gemm_peaks), then the
# runs (the first round's with moelab's per-phase profile at each precision),
# then the source revision moelab's runs name (core/provenance.h; "+hash"
# for a modified tree), then one roofline line per precision: moelab's useful
# GFLOP/s (step_gflops) against that precision's GEMM peak. The last line is
# moelab's best fp32 figure, `train_tokens_per_s: N` (its bf16 figure when
# only bf16 ran).
set -euo pipefail

steps=30
warmup_steps=5
rounds=5
precisions_flag=fp32,bf16
for arg in "$@"; do
  case "$arg" in
    --steps=*) steps="${arg#*=}" ;;
    --warmup_steps=*) warmup_steps="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    --precisions=*) precisions_flag="${arg#*=}" ;;
    *) echo "error: unknown flag '$arg' (expected --steps=N, --warmup_steps=N," \
         "--rounds=N, --precisions=fp32,bf16)" >&2
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
run_fp32=0
run_bf16=0
IFS=, read -r -a requested <<<"$precisions_flag"
for p in "${requested[@]}"; do
  case "$p" in
    fp32) run_fp32=1 ;;
    bf16) run_bf16=1 ;;
    *) echo "error: --precisions: expected fp32, bf16 or fp32,bf16, got '$precisions_flag'" >&2
       exit 2 ;;
  esac
done
precisions=()
((run_fp32)) && precisions+=(fp32)
((run_bf16)) && precisions+=(bf16)
if ((${#precisions[@]} == 0)); then
  echo "error: --precisions: expected fp32, bf16 or fp32,bf16, got '$precisions_flag'" >&2
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
declare -A peak
peak[fp32]=$(echo "$peaks_out" | sed -n 's/^peak_fp32_gflops: *\([0-9.]*\).*/\1/p')
peak[bf16]=$(echo "$peaks_out" | sed -n 's/^peak_bf16_gflops: *\([0-9.]*\).*/\1/p')
echo

# One run of `side` (pytorch or moelab) at `precision`; prints its output and
# checks that it ran at that precision.
# In the first round moelab also prints its per-phase profile (recorded after
# the timed steps, so the timing is unaffected).
run_one() {
  local side="$1" precision="$2" profile="$3" out
  if [[ "$side" == pytorch ]]; then
    out=$("$python" "$script" --steps "$steps" --warmup_steps "$warmup_steps" \
      --threads "$threads" --precision "$precision")
  else
    out=$("$train_bench" --spec="$spec" --steps="$steps" --warmup_steps="$warmup_steps" \
      --precision="$precision" --profile="$profile")
  fi
  if ! grep -Eq "^precision: $precision( |$)" <<<"$out"; then
    echo "error: the $side run did not report 'precision: $precision':" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "$out"
}
last_value() { tail -n 1 | sed -n 's/^train_tokens_per_s: *//p'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# "median Mx, min Ax, max Bx" of the arguments.
spread() {
  printf '%s\n' "$@" | sort -g | awk '{ r[NR] = $1 }
    END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
          printf "median %.2fx, min %.2fx, max %.2fx", m, r[1], r[NR] }'
}

order=()
for p in "${precisions[@]}"; do order+=("pytorch $p" "moelab $p"); done
declare -A rate best best_step_gflops ratios
for p in "${precisions[@]}"; do
  best["pytorch $p"]=0
  best["moelab $p"]=0
  best_step_gflops[$p]=0
done
switch_ratios=()
for ((round = 1; round <= rounds; ++round)); do
  this_order=("${order[@]}")
  if ((round % 2 == 0)); then
    this_order=()
    for ((i = ${#order[@]} - 1; i >= 0; --i)); do this_order+=("${order[i]}"); done
  fi
  for run in "${this_order[@]}"; do
    read -r side p <<<"$run"
    out=$(run_one "$side" "$p" "$( ((round == 1)) && echo true || echo false)")
    if ((round == 1)); then
      if [[ "$side" == pytorch ]]; then
        echo "== PyTorch eager ($("$python" -c 'import torch; print(torch.__version__)')), $p"
      else
        echo "== moelab, $p"
      fi
      echo "$out" | head -n -1
      echo
    fi
    if [[ "$side" == moelab && -z "${moelab_source:-}" ]]; then
      moelab_source=$(sed -n 's/^source: *//p' <<<"$out")
    fi
    rate[$run]=$(echo "$out" | last_value)
    best[$run]=$(max "${best[$run]}" "${rate[$run]}")
    if [[ "$side" == moelab ]]; then
      gflops=$(echo "$out" | sed -n 's/^step_gflops: *\([0-9.]*\).*/\1/p')
      best_step_gflops[$p]=$(max "${best_step_gflops[$p]}" "${gflops:-0}")
    fi
  done
  line="round $round (${this_order[0]} first):"
  for p in "${precisions[@]}"; do
    r=$(ratio "${rate[moelab $p]}" "${rate[pytorch $p]}")
    ratios[$p]="${ratios[$p]:-} $r"
    line+=" $p pytorch ${rate[pytorch $p]}, moelab ${rate[moelab $p]} tokens/s, ${r}x;"
  done
  if ((run_fp32 && run_bf16)); then
    r=$(ratio "${rate[moelab bf16]}" "${rate[pytorch fp32]}")
    switch_ratios+=("$r")
    line+=" moelab bf16 / pytorch fp32 ${r}x"
  fi
  echo "${line%;}"
done

echo
echo "moelab source: ${moelab_source:-unknown}"
echo "OMP_WAIT_POLICY=$OMP_WAIT_POLICY, $threads threads, $steps timed steps," \
  "$rounds round$( ((rounds == 1)) || echo s)"
for p in "${precisions[@]}"; do
  echo "best of rounds, $p: pytorch eager ${best[pytorch $p]} tokens/s, moelab" \
    "${best[moelab $p]} tokens/s, ratio $(ratio "${best[moelab $p]}" "${best[pytorch $p]}")x"
done
for p in "${precisions[@]}"; do
  # shellcheck disable=SC2086  # the list is space-separated on purpose
  echo "ratio moelab / pytorch eager at $p, within rounds: $(spread ${ratios[$p]})"
done
if ((run_fp32 && run_bf16)); then
  echo "ratio moelab bf16 / pytorch eager fp32, within rounds (the gain a user sees by" \
    "switching): $(spread "${switch_ratios[@]}")"
fi
for p in "${precisions[@]}"; do
  awk -v p="$p" -v s="${best_step_gflops[$p]}" -v f="${peak[$p]:-0}" 'BEGIN {
    if (f > 0) {
      printf "roofline %s: moelab %s step %.1f GFLOP/s of useful work = %.0f%% of the %s GEMM peak (%.1f)\n",
        p, p, s, 100 * s / f, p, f
    } else {
      printf "roofline %s: moelab %s step %.1f GFLOP/s of useful work; no %s GEMM peak measured\n",
        p, p, s, p
    }
  }'
done
if ((run_fp32)); then
  echo "pytorch_eager_train_tokens_per_s: ${best[pytorch fp32]}"
  echo "train_tokens_per_s: ${best[moelab fp32]}"
else
  echo "pytorch_eager_train_tokens_per_s: ${best[pytorch bf16]}  (bf16; fp32 not run)"
  echo "train_tokens_per_s: ${best[moelab bf16]}"
fi
