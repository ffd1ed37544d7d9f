#!/usr/bin/env bash
# The exit path of `run` and `reproduce` on bad input (issue 16): no
# exception escapes, every failure is one "error: ..." line on stderr (no
# backtrace) and a non-zero status, and a run that owned its directory
# leaves a result.json that says FAILED and why.
# Usage: bad_input_test.sh RUN_BINARY REPRODUCE_BINARY
set -uo pipefail
run="$1"
reproduce="$2"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error NAME EXPECTED_SUBSTRING COMMAND...: non-zero status, exactly
# one stderr line starting "error: ", containing the substring.
expect_error() {
  local name="$1" expected="$2"
  shift 2
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  local rc=$?
  local errors
  errors=$(grep -c '^error: ' "$tmp/$name.err")
  if [[ $rc -eq 0 ]]; then fail "$name: exit status 0"; fi
  if [[ $rc -ge 128 ]]; then fail "$name: killed by a signal (status $rc)"; fi
  if [[ "$errors" != 1 ]]; then fail "$name: $errors error lines"; fi
  if ! grep -qF -- "$expected" "$tmp/$name.err"; then fail "$name: no '$expected'"; fi
  if grep -q 'frame #' "$tmp/$name.err"; then fail "$name: a backtrace"; fi
  if grep -q 'terminate called' "$tmp/$name.err"; then fail "$name: terminate"; fi
  echo "ok: $name (status $rc): $(grep '^error: ' "$tmp/$name.err")"
}

cat >"$tmp/tiny.pbtxt" <<'SPEC'
name: "tiny"
seed: 3
dataset { name: "synthetic_lm" synthetic_lm { vocab_size: 64 sequence_length: 16 num_sequences: 48 } }
model { name: "moe_transformer_lm" preset: "cpu_tiny" moe { num_experts: 4 expert_hidden: 32 }
        transformer_lm { num_layers: 2 model_dim: 32 num_heads: 2 dense_hidden: 32 } }
router { name: "token_choice" top_k: 2 }
training { learning_rate: 0.003 epochs: 1 batch_size: 16 }
evaluation { probe_examples: 8 max_eval_batches: 1 generation_eval_sequences: 4 }
runtime { threads: 1 }
SPEC

: >"$tmp/empty.pbtxt"
expect_error empty_spec "dataset.name: required; one of: " "$run" --spec="$tmp/empty.pbtxt"
expect_error missing_spec "cannot open spec file" "$run" --spec="$tmp/no_such.pbtxt"

# 4 TB of embedding: refused by the allocator at model build.
sed -e 's/vocab_size: 64/vocab_size: 1000000/' -e 's/model_dim: 32/model_dim: 1048576/' \
  "$tmp/tiny.pbtxt" >"$tmp/huge.pbtxt"
expect_error out_of_memory "out of memory while building model 'moe_transformer_lm'" \
  "$run" --spec="$tmp/huge.pbtxt" --output_dir="$tmp/huge_runs"
grep -q '"status": "FAILED"' "$tmp/huge_runs/tiny/result.json" ||
  fail "out_of_memory: result.json is not FAILED"
grep -q '"status_reason": "out of memory while building model' "$tmp/huge_runs/tiny/result.json" ||
  fail "out_of_memory: result.json has no status_reason"

# Another spec's completed run in the same directory.
"$run" --spec="$tmp/tiny.pbtxt" --output_dir="$tmp/runs" >/dev/null 2>&1 || fail "tiny run failed"
sed 's/seed: 3/seed: 4/' "$tmp/tiny.pbtxt" >"$tmp/tiny_seed4.pbtxt"
expect_error overwrite "holds a COMPLETED run of a different spec" \
  "$run" --spec="$tmp/tiny_seed4.pbtxt" --output_dir="$tmp/runs"
"$run" --spec="$tmp/tiny_seed4.pbtxt" --output_dir="$tmp/runs" --overwrite >/dev/null 2>&1 ||
  fail "--overwrite did not replace the run"

expect_error unknown_table "tables/no_such_table.pbtxt" "$reproduce" --table=no_such_table

if [[ $failures -gt 0 ]]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all bad-input cases passed"
