// Forward + backward of one MoE layer (token_choice router, dropless) as the
// achieved GFLOP/s of its expert matmuls, beside dense sgemm doing the same
// FLOPs and the router alone, all measured in the same run (issue 8).
//
//   bazel run //models:moe_layer_benchmark
//   bazel run //models:moe_layer_benchmark -- --benchmark_filter=Headline
//   bazel run //models:moe_layer_benchmark -- --threads=1 --benchmark_min_time=3
//
// Each iteration of a case times, back to back on the same inputs:
//   moe:    gradients cleared (set to none; --zero_fill_grads zero-fills
//           them as LibTorch 1.13's optimizers do), MoeLayer forward, backward
//           of the output (a fixed random upstream gradient) and of the
//           router's aux losses (load balance, --load_balance_coef);
//   dense:  the six sgemms of a dense FFN of width H on the P routed rows
//           (forward x w1, h w2; backward h^T gy, gy w2^T, x^T gh, gh w1^T),
//           at::mm_out into preallocated buffers: no routing, no bias, no
//           activation, no allocation. This is the GFLOP/s the expert matmuls
//           are held against;
//   ffn:    the same dense FFN through autograd with biases and the layer's
//           activation (addmm, GELU, addmm): what a dense layer with equal
//           FLOPs and the same element-wise work reaches, so that moe/ffn
//           isolates the cost of routing, dispatch and combine;
//   router: Route + backward of its combine weights (a fixed random upstream
//           gradient) and aux losses into the gate weight and the input.
// Interleaving the four inside every iteration, instead of one benchmark each,
// keeps their ratios honest on a shared machine: whatever else runs slows all
// of them alike. The benchmark's own time column is the MoE layer's.
//
// Expert FLOPs per forward + backward = 12 P D H, P the (token, expert) pairs
// actually routed (dropless token_choice: P = N k): forward two matmuls of
// 2 D H flops per pair, backward the input and weight gradients of both,
// twice the forward. GFLOP/s = expert FLOPs / time of the pass.
//
// Input is hidden [1, T, D], one sequence of T tokens: token_choice routes
// each token on its own (top-k of its softmax, no capacity), so [B, T/B, D]
// would cost exactly the same.
//
// After the runs a summary table per case and PASS/FAIL of the headline
// targets (T 4096, E 16, D 512, H 2048, k 2: expert matmuls >= 60% of dense
// sgemm GFLOP/s, router <= 10% of the layer's time), then, with --profile,
// the per-phase profile (core/step_profiler.h) of the headline layer's step.
// Defaults: 2 intra-op threads (--threads), --benchmark_min_time=1; the whole
// run takes 3-4 minutes on 2 cores.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "core/router.h"
#include "core/step_profiler.h"
#include "core/threading_environment.h"
#include "models/feed_forward.h"
#include "models/moe_layer.h"

ABSL_FLAG(int, threads, 2, "Intra-op threads (at::set_num_threads).");
ABSL_FLAG(bool, profile, true,
          "After the benchmarks, print the per-phase profile of the headline "
          "case's forward + backward (router, dispatch, expert matmuls, "
          "combine).");
ABSL_FLAG(bool, zero_fill_grads, false,
          "Zero-fill the layer's gradients between steps, as LibTorch 1.13's "
          "Optimizer::zero_grad() does (it has no set_to_none), instead of "
          "setting them to none: adds a fill and an accumulation pass over "
          "every [E, D, H] gradient to the layer's time.");
ABSL_FLAG(double, load_balance_coef, 0.01,
          "The router's load-balance loss coefficient (Switch's 0.01), so that "
          "the router's time includes its aux loss as in training.");

namespace moelab {
namespace {

struct Case {
  int64_t tokens;                                   // T
  int64_t num_experts;                              // E
  int64_t model_dim;                                // D
  int64_t top_k;                                    // k
  int64_t hidden() const { return 4 * model_dim; }  // H
};

constexpr Case kHeadline = {4096, 16, 512, 2};
constexpr double kTargetRatio = 0.60;
constexpr double kTargetRouterShare = 0.10;

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

MoeLayer MakeLayer(const Case& c) {
  RouterSpec spec;
  spec.set_name("token_choice");
  spec.set_top_k(c.top_k);
  spec.set_load_balance_coef(absl::GetFlag(FLAGS_load_balance_coef));
  const RouterDims dims{.model_dim = c.model_dim,
                        .num_experts = c.num_experts,
                        .num_heads = 1,
                        .causal_model = false};
  absl::StatusOr<std::shared_ptr<Router>> router = CreateRouter(spec, dims);
  TORCH_CHECK(router.ok(), router.status().ToString());
  return MoeLayer(MoeLayerOptions(c.model_dim, c.num_experts, c.hidden()), *std::move(router));
}

// Backward from `output` (upstream gradient `grad_output`) and from the
// decision's aux losses (gradient one each).
void Backward(const at::Tensor& output, const at::Tensor& grad_output,
              const RoutingDecision& decision) {
  std::vector<at::Tensor> roots = {output}, grads = {grad_output};
  for (const auto& [name, loss] : decision.aux_losses) {
    roots.push_back(loss);
    grads.push_back(at::ones({}, loss.options()));
  }
  torch::autograd::backward(roots, grads);
}

// Gradients set to none by default, not zero-filled: a zero-filled
// [E, D, H] gradient adds a fill and an accumulation pass over the expert
// weights, which is the optimizer's policy, not the layer's cost
// (--zero_fill_grads measures it).
void ClearGradients(torch::nn::Module& module, const at::Tensor& hidden) {
  module.zero_grad(/*set_to_none=*/!absl::GetFlag(FLAGS_zero_fill_grads));
  hidden.mutable_grad().reset();
}

// One forward + backward of the layer as a training step runs it.
void MoeStep(MoeLayer& layer, const at::Tensor& hidden, const at::Tensor& grad_output) {
  ClearGradients(*layer, hidden);
  MoeLayerOutput out = layer->forward(hidden, RoutingContext());
  Backward(out.output, grad_output, out.decision);
}

// The six sgemms of a dense FFN's forward + backward on P rows.
struct DenseSgemm {
  DenseSgemm(int64_t rows, int64_t d, int64_t h)
      : x(at::randn({rows, d})),
        w1(at::randn({d, h})),
        w2(at::randn({h, d})),
        grad_y(at::randn({rows, d})),
        hidden(at::empty({rows, h})),
        y(at::empty({rows, d})),
        grad_hidden(at::empty({rows, h})),
        grad_x(at::empty({rows, d})),
        grad_w1(at::empty({d, h})),
        grad_w2(at::empty({h, d})) {}

  void Run() {
    at::mm_out(hidden, x, w1);                // [P, H]
    at::mm_out(y, hidden, w2);                // [P, D]
    at::mm_out(grad_w2, hidden.t(), grad_y);  // [H, D]
    at::mm_out(grad_hidden, grad_y, w2.t());  // [P, H]
    at::mm_out(grad_w1, x.t(), grad_hidden);  // [D, H]
    at::mm_out(grad_x, grad_hidden, w1.t());  // [P, D]
  }

  at::Tensor x, w1, w2, grad_y;
  at::Tensor hidden, y, grad_hidden, grad_x, grad_w1, grad_w2;
};

// A dense FFN with biases and the activation through autograd on P rows.
struct DenseFfn {
  DenseFfn(int64_t rows, int64_t d, int64_t h)
      : x(at::randn({rows, d}).requires_grad_(true)),
        w1((at::randn({d, h}) / std::sqrt(double(d))).requires_grad_(true)),
        b1(at::zeros({h}).requires_grad_(true)),
        w2((at::randn({h, d}) / std::sqrt(double(h))).requires_grad_(true)),
        b2(at::zeros({d}).requires_grad_(true)),
        grad_y(at::randn({rows, d})) {}

  void Run() {
    for (const at::Tensor* t : {&x, &w1, &b1, &w2, &b2}) {
      t->mutable_grad().reset();
    }
    const at::Tensor h = ApplyActivation(at::addmm(b1, x, w1), GELU);
    at::addmm(b2, h, w2).backward(grad_y);
  }

  at::Tensor x, w1, b1, w2, b2, grad_y;
};

// Route, then backward of the combine weights and aux losses only.
void RouterStep(MoeLayer& layer, const at::Tensor& hidden, const at::Tensor& grad_combine) {
  // Only the router's own gradients: the experts' are not its cost.
  ClearGradients(*layer->router(), hidden);
  RoutingDecision d = layer->router()->Route(hidden, RoutingContext());
  Backward(d.combine_weights, grad_combine, d);
}

void BM_MoeLayer(benchmark::State& state) {
  const Case c{state.range(0), state.range(1), state.range(2), state.range(3)};
  torch::manual_seed(0);
  MoeLayer layer = MakeLayer(c);
  const at::Tensor hidden = at::randn({1, c.tokens, c.model_dim}).requires_grad_(true);
  const at::Tensor grad_output = at::randn({1, c.tokens, c.model_dim});
  const at::Tensor grad_combine = at::randn({1, c.tokens, c.num_experts});

  // The pairs actually routed, from a real decision.
  int64_t pairs = 0;
  {
    torch::NoGradGuard no_grad;
    pairs = layer->router()->Route(hidden, RoutingContext()).selected.sum().item<int64_t>();
  }
  if (pairs != c.tokens * c.top_k) {
    state.SkipWithError(absl::StrCat("routed ", pairs, " pairs, dropless top-", c.top_k,
                                     " should route ", c.tokens * c.top_k)
                            .c_str());
    return;
  }
  DenseSgemm sgemm(pairs, c.model_dim, c.hidden());
  DenseFfn ffn(pairs, c.model_dim, c.hidden());
  // Warm the allocator and the BLAS thread pool outside the timed loop.
  MoeStep(layer, hidden, grad_output);
  sgemm.Run();
  ffn.Run();
  RouterStep(layer, hidden, grad_combine);

  double moe_s = 0, sgemm_s = 0, ffn_s = 0, router_s = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    MoeStep(layer, hidden, grad_output);
    const Clock::time_point t1 = Clock::now();
    sgemm.Run();
    const Clock::time_point t2 = Clock::now();
    ffn.Run();
    const Clock::time_point t3 = Clock::now();
    RouterStep(layer, hidden, grad_combine);
    const Clock::time_point t4 = Clock::now();
    state.SetIterationTime(Seconds(t0, t1));
    moe_s += Seconds(t0, t1);
    sgemm_s += Seconds(t1, t2);
    ffn_s += Seconds(t2, t3);
    router_s += Seconds(t3, t4);
  }
  const double iters = static_cast<double>(state.iterations());
  const double gflop = 12.0 * pairs * c.model_dim * c.hidden() * 1e-9;
  state.counters["pairs"] = static_cast<double>(pairs);
  state.counters["moe_GFLOPs"] = gflop * iters / moe_s;
  state.counters["sgemm_GFLOPs"] = gflop * iters / sgemm_s;
  state.counters["ffn_GFLOPs"] = gflop * iters / ffn_s;
  state.counters["ratio"] = sgemm_s / moe_s;  // moe GFLOP/s / sgemm GFLOP/s
  state.counters["router_ms"] = 1e3 * router_s / iters;
  state.counters["router_share"] = router_s / moe_s;
}

std::string CaseArgs(const Case& c) {
  return absl::StrCat("T:", c.tokens, "/E:", c.num_experts, "/D:", c.model_dim, "/k:", c.top_k);
}

void Register(const char* name, const Case& c) {
  benchmark::RegisterBenchmark(name, BM_MoeLayer)
      ->Args({c.tokens, c.num_experts, c.model_dim, c.top_k})
      ->ArgNames({"T", "E", "D", "k"})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

void RegisterAll() {
  // The headline first, under its own name so that
  // --benchmark_filter=Headline runs just it; the grid skips it.
  Register("Headline", kHeadline);
  for (int64_t d : {128, 512}) {
    for (int64_t tokens : {256, 1024, 4096}) {
      for (int64_t e : {8, 16, 64}) {
        for (int64_t k : {1, 2}) {
          const Case c{tokens, e, d, k};
          if (CaseArgs(c) == CaseArgs(kHeadline)) continue;
          Register("MoeLayer", c);
        }
      }
    }
  }
}

// The console output, plus every final run kept for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  SummaryReporter() : ConsoleReporter(OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& reports) override {
    ConsoleReporter::ReportRuns(reports);
    for (const Run& run : reports) {
      // With --benchmark_repetitions the median aggregate stands for a case.
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") {
        continue;
      }
      Row& row = rows_[run.run_name.args];
      if (row.name.empty()) order_.push_back(run.run_name.args);
      if (row.from_median && run.run_type == Run::RT_Iteration) continue;
      row.name = run.run_name.function_name;
      row.from_median = run.run_type == Run::RT_Aggregate;
      row.error = run.error_occurred ? run.error_message : "";
      row.ms = run.GetAdjustedRealTime();  // the unit is ms
      row.counters = run.counters;
    }
  }

  // Prints the table and the headline's PASS/FAIL line.
  void PrintSummary() {
    std::printf(
        "\nSummary (%d threads): expert-matmul GFLOP/s of the MoE layer's "
        "forward + backward\nagainst dense sgemm of the same FLOPs; ffn = "
        "dense FFN with bias + GELU via autograd;\nratio = moe / sgemm; "
        "router share = router fwd+bwd / layer fwd+bwd.\n\n",
        absl::GetFlag(FLAGS_threads));
    std::printf("%-26s %6s %9s %9s %9s %9s %7s %9s %7s\n", "case", "pairs", "moe ms", "moe GF/s",
                "sgemm GF/s", "ffn GF/s", "ratio", "router ms", "router");
    std::string headline = "headline case not run (filtered out)";
    for (const std::string& args : order_) {
      const Row& row = rows_.at(args);
      if (!row.error.empty()) {
        std::printf("%-26s ERROR %s\n", args.c_str(), row.error.c_str());
        if (args == CaseArgs(kHeadline)) headline = "FAIL headline: error";
        continue;
      }
      auto counter = [&](const char* name) {
        auto it = row.counters.find(name);
        return it == row.counters.end() ? 0.0 : it->second.value;
      };
      std::printf("%-26s %6.0f %9.1f %9.1f %10.1f %9.1f %6.0f%% %9.2f %6.1f%%\n", args.c_str(),
                  counter("pairs"), row.ms, counter("moe_GFLOPs"), counter("sgemm_GFLOPs"),
                  counter("ffn_GFLOPs"), 100 * counter("ratio"), counter("router_ms"),
                  100 * counter("router_share"));
      if (args == CaseArgs(kHeadline)) {
        headline_seen_ = true;
        const double ratio = counter("ratio"), share = counter("router_share");
        const bool ratio_ok = ratio >= kTargetRatio;
        const bool share_ok = share <= kTargetRouterShare;
        const bool pass = ratio_ok && share_ok;
        headline = absl::StrFormat(
            "%s headline %s (H 2048): expert matmuls at %.0f%% of dense sgemm "
            "GFLOP/s (target >= %.0f%%: %s), router %.1f%% of the layer's "
            "time (target <= %.0f%%: %s)",
            pass ? "PASS" : "FAIL", args, 100 * ratio, 100 * kTargetRatio,
            ratio_ok ? "pass" : "FAIL", 100 * share, 100 * kTargetRouterShare,
            share_ok ? "pass" : "FAIL");
      }
    }
    std::printf("\n%s\n", headline.c_str());
  }

  bool headline_seen() const { return headline_seen_; }

 private:
  struct Row {
    std::string name;
    bool from_median = false;
    std::string error;
    double ms = 0;
    benchmark::UserCounters counters;
  };
  std::map<std::string, Row> rows_;
  std::vector<std::string> order_;
  bool headline_seen_ = false;
};

// The headline layer's forward + backward, phase by phase.
void PrintHeadlineProfile() {
  torch::manual_seed(0);
  MoeLayer layer = MakeLayer(kHeadline);
  const at::Tensor hidden =
      at::randn({1, kHeadline.tokens, kHeadline.model_dim}).requires_grad_(true);
  const at::Tensor grad_output = at::randn({1, kHeadline.tokens, kHeadline.model_dim});
  MoeStep(layer, hidden, grad_output);  // warm-up
  StepProfiler profiler;
  for (int step = 0; step < 3; ++step) {
    profiler.BeginStep();
    MoeStep(layer, hidden, grad_output);
    profiler.EndStep();
  }
  std::printf("\nPer-phase profile of the headline layer (%s), 3 steps:\n%s\n",
              CaseArgs(kHeadline).c_str(), StepProfiler::Format(profiler.Profile()).c_str());
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) {
  moelab::ReexecWithPassiveOpenMpWaiting(argc, argv);
  // A default min_time of 1 s (Benchmark's is 0.5 s): the whole run then
  // takes a few minutes on 2 cores. Put first, a --benchmark_min_time given
  // on the command line still wins (the last one parsed counts).
  std::string default_min_time = "--benchmark_min_time=1";
  std::vector<char*> args(argv, argv + argc);
  args.insert(args.begin() + 1, default_min_time.data());
  int args_count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&args_count, args.data());
  absl::ParseCommandLine(args_count, args.data());
  at::set_num_threads(absl::GetFlag(FLAGS_threads));

  moelab::RegisterAll();
  moelab::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  if (absl::GetFlag(FLAGS_profile) && reporter.headline_seen()) {
    moelab::PrintHeadlineProfile();
  }
  benchmark::Shutdown();
  return 0;
}
