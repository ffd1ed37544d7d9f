// fused_kernels against the ATen ops they replace, at bench_lm's shapes
// (experiments/specs/bench_lm.pbtxt): one expert layer's GELU (P = 4096
// routed rows of H = 512) and one block of its output layer's softmax
// cross-entropy (409 rows of a 10,000-word vocabulary), with the operands in
// fp32 and in bf16.
//
//   bazel run //models:fused_kernels_benchmark
//   bazel run //models:fused_kernels_benchmark -- --threads=1
//
// Every iteration runs both sides back to back on the same inputs (ATen
// first, then the kernel), so that whatever else runs on the machine slows
// both alike; the counters aten_ms and fused_ms are their mean times, and
// speedup their ratio. Inputs that a side overwrites are restored outside
// the timed stretches. The sides:
//   gelu_forward: at::gelu, then the cast to the operand type (bf16), against
//                 GeluOperand;
//   gelu_backward: at::gelu_backward, then the cast, against
//                 GeluBackwardInPlace;
//   softmax_xent: at::_softmax_out, the target's log-probability (gather,
//                 log), softmax - onehot (scatter_add) and the cast, as
//                 cross_entropy.cc ran them, against SoftmaxCrossEntropySum.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "benchmark/benchmark.h"
#include "core/threading_environment.h"
#include "models/fused_kernels.h"
#include "models/kernel_isa.h"
#include "models/matmul.h"

ABSL_FLAG(int, threads, 2, "Intra-op threads (at::set_num_threads).");

namespace moelab {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Times `aten` and `fused` once each per iteration; reports both.
template <typename Restore, typename Aten, typename Fused>
void Compare(benchmark::State& state, Restore restore, Aten aten, Fused fused) {
  double aten_s = 0, fused_s = 0;
  for (auto _ : state) {
    restore();
    auto start = std::chrono::steady_clock::now();
    aten();
    aten_s += SecondsSince(start);
    restore();
    start = std::chrono::steady_clock::now();
    fused();
    const double s = SecondsSince(start);
    fused_s += s;
    state.SetIterationTime(s);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["aten_ms"] = 1e3 * aten_s / n;
  state.counters["fused_ms"] = 1e3 * fused_s / n;
  state.counters["speedup"] = aten_s / fused_s;
  state.SetLabel(std::string(KernelIsaName(KernelIsaInUse())) + " build");
}

Precision PrecisionArg(const benchmark::State& state) { return state.range(0) ? BF16 : FP32; }

at::Tensor AtenOperand(const at::Tensor& t, Precision precision) {
  return MatmulOperand(t, precision);
}

void BM_GeluForward(benchmark::State& state) {
  const Precision precision = PrecisionArg(state);
  at::manual_seed(0);
  const at::Tensor pre = at::randn({4096, 512});
  Compare(
      state, [] {}, [&] { benchmark::DoNotOptimize(AtenOperand(at::gelu(pre), precision)); },
      [&] { benchmark::DoNotOptimize(GeluOperand(pre, precision)); });
}

void BM_GeluBackward(benchmark::State& state) {
  const Precision precision = PrecisionArg(state);
  at::manual_seed(0);
  const at::Tensor pre = at::randn({4096, 512});
  const at::Tensor source = at::randn({4096, 512}) * 0.01;
  at::Tensor grad = source.clone();
  Compare(
      state, [&] { grad.copy_(source); },
      [&] { benchmark::DoNotOptimize(AtenOperand(at::gelu_backward(grad, pre), precision)); },
      [&] { benchmark::DoNotOptimize(GeluBackwardInPlace(grad, pre, precision)); });
}

void BM_SoftmaxCrossEntropy(benchmark::State& state) {
  const Precision precision = PrecisionArg(state);
  const int64_t rows = 409, vocab = 10000;
  at::manual_seed(0);
  const at::Tensor source = at::randn({rows, vocab}) * 2;
  const at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  at::Tensor logits = source.clone();
  at::Tensor probs = at::empty({rows, vocab});
  at::Tensor grad_bf16 = at::empty({rows, vocab}, at::kBFloat16);
  const bool bf16 = OperandType(precision) == at::kBFloat16;
  Compare(
      state, [&] { logits.copy_(source); },
      [&] {
        at::_softmax_out(probs, logits, 1, /*half_to_float=*/false);
        const at::Tensor index = targets.unsqueeze(1);
        benchmark::DoNotOptimize(probs.gather(1, index).log().sum(at::kDouble).item<double>());
        probs.scatter_add_(1, index, at::full_like(index, -1, probs.options()));
        benchmark::DoNotOptimize(AtenOperand(probs, precision));
      },
      [&] {
        at::Tensor grad = bf16 ? grad_bf16 : logits;
        benchmark::DoNotOptimize(
            SoftmaxCrossEntropySum(logits, targets, &grad, precision == BF16 && !bf16));
      });
}

// Arg 0: fp32 operands, 1: bf16 (as this machine holds them).
BENCHMARK(BM_GeluForward)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GeluBackward)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SoftmaxCrossEntropy)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  benchmark::Initialize(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  moelab::SetIntraOpThreads(absl::GetFlag(FLAGS_threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
