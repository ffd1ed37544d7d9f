// What routing costs: forward and forward + backward time of every registered
// router over a grid of shapes, and the cost of the graph-of-tokens routers as
// the sequence grows (time and peak memory), against token choice.
//
//   bazel run //routers:router_benchmark                  # everything
//   bazel run //routers:router_benchmark -- --threads=1
//   bazel run //routers:router_benchmark -- --benchmark_list_tests
//   bazel run //routers:router_benchmark -- --benchmark_filter='^quadratic/'
//   bazel run //routers:router_benchmark --
//       --benchmark_filter='^route/similarity_aware/fwd/T:1024/'
//   bazel run //routers:router_benchmark -- --benchmark_filter='/E:8/D:128/k:2'
//       --benchmark_out=routers.json --benchmark_out_format=json
// (a command continued on an indented line is one command line).
//
// --benchmark_filter is a regular expression searched in the names below
// (the library appends "/real_time"). --benchmark_min_time defaults to 0.1 s
// here (the library's 0.5 s would make the full run five times longer); a
// value given on the command line wins. Other flags: --help.
//
// Benchmarks, registered from the router registry, so a new plugin linked
// into this binary (a dep in routers/BUILD.bazel) is measured without edits:
//   route/<router>/fwd/T:<T>/E:<E>/D:<D>/k:<k>      T 256 1024 4096, E 8 16 64,
//                                                  D 128 512, k 1 2
//     Inference: eval mode, context.training false, no autograd graph.
//   route/<router>/fwd_bwd/T:<T>/E:<E>/D:<D>/k:<k>  only routers with
//                                                  trainable parameters
//     Training: train mode, context.training true; the gradient of
//     sum(combine_weights * G) + the auxiliary losses (G a fixed random
//     [1, T, E], standing for what the experts' outputs send back) with
//     respect to the router's parameters and the hidden input.
//   quadratic/<router>/T:<T>   token_choice, similarity_aware, attention_aware;
//                              E 8, D 128, k 2, forward + backward as above,
//                              T 128 256 512 1024 2048 4096
//
// Numbers:
//   Time              wall-clock time of one call (LibTorch spreads an op over
//                     --threads threads, so the calling thread's CPU time,
//                     the CPU column, under-counts; iteration counts follow
//                     wall time too).
//   items_per_second  tokens routed per second (T tokens per call).
//   peak_extra_MiB    (quadratic/ only) how far one forward + backward raises
//                     the process's peak resident memory above what it held
//                     before the call (inputs included in the baseline, not
//                     in the number): VmHWM after the call minus VmRSS before,
//                     with VmHWM reset through /proc/self/clear_refs and free
//                     heap returned to the system (malloc_trim) first. "nan"
//                     when the kernel refuses the reset.
// Every benchmark makes one untimed warm-up call before its timed ones.
// After the runs a summary table of the quadratic curve is printed: ms per
// call of each of the three routers, the ratios to token_choice, and
// peak_extra_MiB of each. A case a router refuses (its validation, or an
// error thrown while routing) shows as "ERROR OCCURRED: <reason>"; the other
// cases go on.
//
// Inputs: hidden [1, T, D] ~ N(0, 1) is ONE sequence of T tokens, not B
// shorter ones: similarity_aware builds a [B, T, T] similarity and
// attention_aware a [B, H, T, T] posterior, both O(T^2) in the sequence
// length, so a long sequence is where they cost most, and every router gets
// the same layout so the rows compare. token_ids [1, T] uniform in
// [0, 10000). Routers with NeedsAttention() get attention_probs [1, H, T, T]
// (H = 8; a row-softmax of N(0, 1) scores, causal when --causal_model) and
// attention_values [1, H, T, D] ~ N(0, 1). Routers are built as an experiment
// builds them: RouterSpec {name, top_k k, load_balance_coef 0.01,
// z_loss_coef 0.001}, the registration's resolve, CheckTopK, CreateRouter;
// RouterDims {D, E, H 8, --causal_model}.
//
// The binary waits passively between OpenMP regions and keeps freed memory
// in the heap, as the trainer does (core/threading_environment.h), so the
// timings are those a training run sees.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <malloc.h>
#include <torch/csrc/autograd/autograd.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "benchmark/benchmark.h"
#include "core/router.h"
#include "core/threading_environment.h"
#include "proto/experiment.pb.h"

ABSL_FLAG(int32_t, threads, 2, "LibTorch intra-op threads (at::set_num_threads); >= 1.");
ABSL_FLAG(bool, causal_model, true,
          "Build and route as inside a causal LM (RouterDims.causal_model, "
          "RoutingContext.causal, causal attention_probs); false: full "
          "attention, as in a vision model.");

namespace moelab {
namespace {

// The grid of route/ benchmarks.
constexpr int64_t kGridTokens[] = {256, 1024, 4096};
constexpr int64_t kGridExperts[] = {8, 16, 64};
constexpr int64_t kGridDims[] = {128, 512};
constexpr int64_t kGridTopK[] = {1, 2};

// The quadratic/ curve.
constexpr int64_t kCurveTokens[] = {128, 256, 512, 1024, 2048, 4096};
const char* const kCurveRouters[] = {"token_choice", "similarity_aware", "attention_aware"};
constexpr int64_t kCurveExperts = 8, kCurveDim = 128, kCurveTopK = 2;

constexpr int64_t kHeads = 8;
constexpr int64_t kVocab = 10000;
// Typical coefficients (the experiment specs use 0.01 for load balance), so
// that the auxiliary losses are computed and differentiated as in training.
constexpr float kLoadBalanceCoef = 0.01f, kZLossCoef = 0.001f;
constexpr double kDefaultMinTimeSeconds = 0.1;

struct Shape {
  int64_t tokens = 0;   // T
  int64_t experts = 0;  // E
  int64_t dim = 0;      // D
  int64_t top_k = 0;    // k
};

enum class Pass { kForward, kForwardBackward };

std::string RouteName(const std::string& router, Pass pass, const Shape& s) {
  return absl::StrCat("route/", router, "/", pass == Pass::kForward ? "fwd" : "fwd_bwd",
                      "/T:", s.tokens, "/E:", s.experts, "/D:", s.dim, "/k:", s.top_k);
}

std::string CurveName(const std::string& router, int64_t tokens) {
  return absl::StrCat("quadratic/", router, "/T:", tokens);
}

// Builds `name` for `shape` the way an experiment does: the registration's
// resolve, the spec-level top_k check, then validate and create.
absl::StatusOr<std::shared_ptr<Router>> BuildRouter(const std::string& name, const Shape& shape,
                                                    bool causal_model) {
  absl::StatusOr<const RouterRegistration*> entry = RouterRegistry().Find(name);
  if (!entry.ok()) return entry.status();
  RouterSpec spec;
  spec.set_name(name);
  spec.set_top_k(static_cast<double>(shape.top_k));
  spec.set_load_balance_coef(kLoadBalanceCoef);
  spec.set_z_loss_coef(kZLossCoef);
  const RouterDims dims{.model_dim = shape.dim,
                        .num_experts = shape.experts,
                        .num_heads = kHeads,
                        .causal_model = causal_model};
  ResolveRouterSpec(**entry, &spec, dims);
  if (absl::Status s = CheckTopK(spec, **entry, dims); !s.ok()) return s;
  try {
    return CreateRouter(spec, dims);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("create threw: ", e.what_without_backtrace()));
  }
}

std::vector<at::Tensor> TrainableParameters(Router& router) {
  std::vector<at::Tensor> trainable;
  for (const at::Tensor& p : router.parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  return trainable;
}

// Inputs of one shape. Kept across the several calls the library makes of
// one benchmark function and across consecutive benchmarks of the same T and
// D (registration runs T, then D, outermost): drawing and softmaxing
// [1, 8, 4096, 4096] attention scores takes longer than many measured calls.
// Only the latest shape is kept, so at most one [1, H, T, T] is resident.
struct Inputs {
  int64_t tokens = 0;
  int64_t dim = 0;
  at::Tensor hidden;            // [1, T, D]
  at::Tensor token_ids;         // [1, T] int64
  at::Tensor attention_probs;   // [1, H, T, T], drawn on first need
  at::Tensor attention_values;  // [1, H, T, D], drawn on first need
};

const Inputs& InputsFor(int64_t tokens, int64_t dim, bool attention, bool causal) {
  static Inputs* cache = new Inputs;
  if (cache->tokens != tokens) {
    *cache = Inputs();  // frees the old tensors before drawing new ones
  } else if (cache->dim != dim) {
    cache->hidden = at::Tensor();
    cache->attention_values = at::Tensor();
  }
  cache->tokens = tokens;
  cache->dim = dim;
  // Seeded by the shape, so a benchmark sees the same inputs whatever else
  // ran before it (and whatever --benchmark_filter selected).
  if (!cache->hidden.defined()) {
    at::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(tokens * 1000 + dim));
    cache->hidden = at::randn({1, tokens, dim}, gen);
    cache->token_ids = at::randint(kVocab, {1, tokens}, gen, at::kLong);
  }
  if (attention && !cache->attention_probs.defined()) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(tokens));
    at::Tensor scores = at::randn({1, kHeads, tokens, tokens}, gen);
    if (causal) {
      scores.masked_fill_(at::ones({tokens, tokens}, at::kBool).triu(/*diagonal=*/1),
                          -std::numeric_limits<float>::infinity());
    }
    cache->attention_probs = at::softmax(scores, /*dim=*/-1);
  }
  if (attention && !cache->attention_values.defined()) {
    at::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(tokens * 1000 + dim + 1));
    cache->attention_values = at::randn({1, kHeads, tokens, dim}, gen);
  }
  return *cache;
}

// ---- Peak memory (Linux /proc) ----

// The value in kB of a "Name:   123 kB" line of /proc/self/status; -1 when
// missing.
int64_t StatusKb(absl::string_view key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, key)) continue;
    absl::string_view rest = absl::string_view(line).substr(key.size());
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) {
      rest.remove_prefix(1);
    }
    const size_t end = rest.find(' ');
    int64_t kb = -1;
    if (absl::SimpleAtoi(rest.substr(0, end), &kb)) return kb;
    return -1;
  }
  return -1;
}

// Resets VmHWM to the current RSS ("5" to clear_refs, Linux >= 4.0).
bool ResetPeakRss() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.close();
  return !clear_refs.fail();
}

// MiB by which `call` raises the peak RSS over the RSS before it; NaN when the
// peak cannot be reset (it would then be the whole process's peak).
double PeakExtraMiB(const std::function<void()>& call) {
  // The heap keeps freed memory (core/threading_environment.cc); returning
  // it first means the call's allocations show as new resident pages instead
  // of reusing pages already counted in the baseline.
  malloc_trim(0);
  if (!ResetPeakRss()) {
    static bool warned = false;
    if (!warned) {
      warned = true;
      fprintf(stderr,
              "router_benchmark: cannot write /proc/self/clear_refs; "
              "peak_extra_MiB is reported as nan\n");
    }
    call();
    return std::numeric_limits<double>::quiet_NaN();
  }
  const int64_t baseline_kb = StatusKb("VmRSS:");
  call();
  const int64_t peak_kb = StatusKb("VmHWM:");
  if (baseline_kb < 0 || peak_kb < 0) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return static_cast<double>(peak_kb - baseline_kb) / 1024.0;
}

// ---- The benchmark body ----

// One route/ or quadratic/ benchmark. Builds the router (the library calls
// this several times per benchmark; building is cheap), fetches the inputs,
// then times `Route` (and the backward pass).
void RouteBenchmark(benchmark::State& state, const std::string& name, const Shape& shape, Pass pass,
                    bool measure_memory, bool causal) {
  absl::StatusOr<std::shared_ptr<Router>> built = BuildRouter(name, shape, causal);
  if (!built.ok()) {
    state.SkipWithError(std::string(built.status().message()).c_str());
    return;
  }
  Router& router = **built;
  const bool training = pass == Pass::kForwardBackward;
  router.train(training);

  try {
    const Inputs& inputs = InputsFor(shape.tokens, shape.dim, router.NeedsAttention(), causal);
    RoutingContext context;
    context.token_ids = inputs.token_ids;
    context.training = training;
    context.causal = causal;
    if (router.NeedsAttention()) {
      context.attention_probs = inputs.attention_probs;
      context.attention_values = inputs.attention_values;
    }

    std::function<void()> call;
    at::Tensor hidden;            // [1, T, D]
    at::Tensor upstream;          // [1, T, E], G above
    std::vector<at::Tensor> wrt;  // parameters, then hidden
    bool differentiable = true;
    if (pass == Pass::kForward) {
      hidden = inputs.hidden;
      call = [&] {
        at::NoGradGuard no_grad;
        RoutingDecision d = router.Route(hidden, context);
        benchmark::DoNotOptimize(d.combine_weights.data_ptr());
      };
    } else {
      // A leaf of its own, sharing the cached storage.
      hidden = inputs.hidden.detach().requires_grad_(true);
      wrt = TrainableParameters(router);
      wrt.push_back(hidden);
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
          static_cast<uint64_t>(shape.tokens * 100 + shape.experts));
      upstream = at::randn({1, shape.tokens, shape.experts}, gen);
      call = [&] {
        RoutingDecision d = router.Route(hidden, context);
        at::Tensor loss = (d.combine_weights * upstream).sum();
        for (const auto& [aux_name, aux] : d.aux_losses) loss = loss + aux;
        if (!loss.requires_grad()) {
          differentiable = false;
          return;
        }
        // grad() rather than backward(): nothing accumulates in .grad, so
        // every call does the same work.
        std::vector<at::Tensor> grads =
            torch::autograd::grad({loss}, wrt, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                  /*create_graph=*/false, /*allow_unused=*/true);
        benchmark::DoNotOptimize(grads.data());
      };
    }

    // One untimed call first: the slow cases run a single timed iteration,
    // which would otherwise also pay for growing the heap and faulting in
    // its pages. With memory measured, the measured call is that warm-up.
    if (measure_memory) {
      state.counters["peak_extra_MiB"] = PeakExtraMiB(call);
    } else {
      call();
    }
    for (auto _ : state) {
      call();
      if (!differentiable) {
        state.SkipWithError("the loss does not depend on the router's parameters or input");
        break;
      }
    }
  } catch (const c10::Error& e) {
    state.SkipWithError(absl::StrCat("Route threw: ", e.what_without_backtrace()).c_str());
    return;
  } catch (const std::exception& e) {
    state.SkipWithError(absl::StrCat("Route threw: ", e.what()).c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations() * shape.tokens);
}

void RegisterGrid(bool causal) {
  // Registration order is run order: router, T, D outermost keeps the cached
  // inputs valid across consecutive benchmarks.
  for (const std::string& name : RouterRegistry().Names()) {
    for (int64_t tokens : kGridTokens) {
      for (int64_t dim : kGridDims) {
        for (int64_t experts : kGridExperts) {
          for (int64_t k : kGridTopK) {
            const Shape shape{tokens, experts, dim, k};
            // Built here only to learn whether the router has parameters
            // (then fwd_bwd is registered); a refused case is registered
            // anyway, to report the reason.
            absl::StatusOr<std::shared_ptr<Router>> probe = BuildRouter(name, shape, causal);
            std::vector<Pass> passes = {Pass::kForward};
            if (probe.ok() && !TrainableParameters(**probe).empty()) {
              passes.push_back(Pass::kForwardBackward);
            }
            for (Pass pass : passes) {
              benchmark::RegisterBenchmark(RouteName(name, pass, shape).c_str(),
                                           [name, shape, pass, causal](benchmark::State& state) {
                                             RouteBenchmark(state, name, shape, pass,
                                                            /*measure_memory=*/false, causal);
                                           })
                  ->Unit(benchmark::kMicrosecond)
                  ->UseRealTime();
            }
          }
        }
      }
    }
  }
}

void RegisterCurve(bool causal) {
  for (int64_t tokens : kCurveTokens) {
    for (const char* router : kCurveRouters) {
      const std::string name = router;
      const Shape shape{tokens, kCurveExperts, kCurveDim, kCurveTopK};
      benchmark::RegisterBenchmark(CurveName(name, tokens).c_str(),
                                   [name, shape, causal](benchmark::State& state) {
                                     RouteBenchmark(state, name, shape, Pass::kForwardBackward,
                                                    /*measure_memory=*/true, causal);
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

// ---- Reporting ----

double ToMilliseconds(double value, benchmark::TimeUnit unit) {
  switch (unit) {
    case benchmark::kNanosecond:
      return value * 1e-6;
    case benchmark::kMicrosecond:
      return value * 1e-3;
    case benchmark::kMillisecond:
      return value;
    case benchmark::kSecond:
      return value * 1e3;
  }
  return value;
}

// The console output, plus the summary of the quadratic/ runs at the end.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  explicit SummaryReporter(OutputOptions options) : ConsoleReporter(options) {
    for (int64_t tokens : kCurveTokens) {
      for (const char* router : kCurveRouters) {
        curve_names_[CurveName(router, tokens)] = {router, tokens};
      }
    }
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      // Repetitions (--benchmark_repetitions) come as several iteration runs
      // plus aggregates; the summary averages the iteration runs.
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      auto point = curve_names_.find(run.run_name.function_name);
      if (point == curve_names_.end()) continue;
      Cell& cell = cells_[point->second];
      cell.ms_sum += ToMilliseconds(run.GetAdjustedRealTime(), run.time_unit);
      auto mib = run.counters.find("peak_extra_MiB");
      if (mib != run.counters.end()) cell.mib_sum += mib->second.value;
      ++cell.runs;
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    if (cells_.empty()) return;
    std::ostream& out = GetOutputStream();
    out << "\nQuadratic cost in the sequence length: one sequence of T tokens, "
        << "E " << kCurveExperts << ", D " << kCurveDim << ", k " << kCurveTopK
        << ", forward + backward\n"
        << "(ms: wall time per call; MiB: peak extra resident memory of one "
           "call)\n";
    out << absl::StrFormat("%6s %12s %12s %12s %9s %9s %10s %10s %10s\n", "T", "token ms",
                           "similar ms", "attention ms", "sim/tok", "att/tok", "token MiB",
                           "similar MiB", "attn MiB");
    for (int64_t tokens : kCurveTokens) {
      const std::optional<Cell> tok = Find("token_choice", tokens);
      const std::optional<Cell> sim = Find("similarity_aware", tokens);
      const std::optional<Cell> att = Find("attention_aware", tokens);
      if (!tok && !sim && !att) continue;
      auto ms = [](const std::optional<Cell>& c) {
        return c ? absl::StrFormat("%.3f", c->ms()) : std::string("-");
      };
      auto mib = [](const std::optional<Cell>& c) {
        return c ? absl::StrFormat("%.1f", c->mib()) : std::string("-");
      };
      auto ratio = [&](const std::optional<Cell>& c) {
        return c && tok && tok->ms() > 0 ? absl::StrFormat("%.1f", c->ms() / tok->ms())
                                         : std::string("-");
      };
      out << absl::StrFormat("%6d %12s %12s %12s %9s %9s %10s %10s %10s\n", tokens, ms(tok),
                             ms(sim), ms(att), ratio(sim), ratio(att), mib(tok), mib(sim),
                             mib(att));
    }
    out.flush();
  }

 private:
  struct Cell {
    double ms_sum = 0;
    double mib_sum = 0;
    int runs = 0;
    double ms() const { return ms_sum / runs; }
    double mib() const { return mib_sum / runs; }
  };
  using Point = std::pair<std::string, int64_t>;  // (router, T)

  std::optional<Cell> Find(const std::string& router, int64_t tokens) const {
    auto it = cells_.find({router, tokens});
    if (it == cells_.end()) return std::nullopt;
    return it->second;
  }

  std::map<std::string, Point> curve_names_;
  std::map<Point, Cell> cells_;
};

// ---- Flags ----

// The value of a Google Benchmark flag in argv ("--name=value", or "--name"
// meaning "true"), the last one winning as in the library's own parser.
std::optional<std::string> BenchmarkFlag(int argc, char** argv, absl::string_view name) {
  std::optional<std::string> value;
  const std::string bare = absl::StrCat("--", name);
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == bare) {
      value = "true";
    } else if (absl::StartsWith(arg, absl::StrCat(bare, "="))) {
      value = std::string(arg.substr(bare.size() + 1));
    }
  }
  return value;
}

bool IsFalse(const std::string& value) {
  const std::string v = absl::AsciiStrToLower(value);
  return v == "false" || v == "no" || v == "off" || v == "0";
}

void PrintHelp() {
  fprintf(stdout,
          "router_benchmark: time (and memory) of every registered router; "
          "how to run subsets and what the numbers mean: the top of "
          "routers/router_benchmark.cc.\n\n"
          "This binary's flags:\n"
          "  --threads=N          LibTorch intra-op threads (default 2)\n"
          "  --causal_model=BOOL  route as in a causal LM (default true)\n"
          "  --benchmark_min_time defaults to %g s here\n\n"
          "Google Benchmark's flags:\n",
          kDefaultMinTimeSeconds);
  benchmark::PrintDefaultHelp();
}

// Fails with a one-line message naming the flag.
int Usage(const std::string& message) {
  fprintf(stderr, "router_benchmark: %s\n", message.c_str());
  return 1;
}

int Main(int argc, char** argv) {
  ReexecWithPassiveOpenMpWaiting(argc, argv);
  absl::SetProgramUsageMessage(
      "Benchmarks every registered router; see routers/router_benchmark.cc.");

  // The console table and the summary both go to stdout, which a JSON or CSV
  // display format would garble; files take any format.
  if (std::optional<std::string> format = BenchmarkFlag(argc, argv, "benchmark_format");
      format && *format != "console") {
    return Usage(absl::StrCat("--benchmark_format=", *format,
                              ": this binary prints the console table and a summary; for JSON or "
                              "CSV add --benchmark_out=FILE --benchmark_out_format=",
                              *format));
  }
  if (std::optional<std::string> min_time = BenchmarkFlag(argc, argv, "benchmark_min_time")) {
    double seconds = 0;
    if (!absl::SimpleAtod(*min_time, &seconds) || !(seconds > 0)) {
      return Usage(absl::StrCat("--benchmark_min_time=", *min_time,
                                ": must be a number of seconds > 0 (Google Benchmark 1.7.1 takes "
                                "no unit suffix), e.g. 0.05"));
    }
  }
  const std::optional<std::string> color = BenchmarkFlag(argc, argv, "benchmark_color");
  const std::optional<std::string> tabular =
      BenchmarkFlag(argc, argv, "benchmark_counters_tabular");

  // argv plus the default min time, if none was given; the library edits
  // the array in place, leaving what it did not recognise.
  std::vector<std::string> storage(argv, argv + argc);
  if (!BenchmarkFlag(argc, argv, "benchmark_min_time")) {
    storage.push_back(absl::StrCat("--benchmark_min_time=", kDefaultMinTimeSeconds));
  }
  std::vector<char*> args;
  for (std::string& s : storage) args.push_back(s.data());
  args.push_back(nullptr);
  int count = static_cast<int>(storage.size());
  benchmark::Initialize(&count, args.data(), PrintHelp);
  for (int i = 1; i < count; ++i) {
    if (absl::StartsWith(args[i], "--benchmark_")) {
      return Usage(
          absl::StrCat("Google Benchmark did not take '", args[i],
                       "' (an unknown flag or a malformed value); --help lists its flags"));
    }
  }
  const std::vector<char*> positional = absl::ParseCommandLine(count, args.data());
  if (positional.size() > 1) {
    return Usage(absl::StrCat("unexpected argument '", positional[1], "'; flags are --name=value"));
  }
  const int32_t threads = absl::GetFlag(FLAGS_threads);
  if (threads < 1) {
    return Usage(absl::StrCat("--threads: must be >= 1, got ", threads));
  }
  at::set_num_threads(threads);

  const bool causal = absl::GetFlag(FLAGS_causal_model);
  RegisterGrid(causal);
  RegisterCurve(causal);

  int options = benchmark::ConsoleReporter::OO_None;
  const bool color_on = color ? (*color == "auto" ? isatty(STDOUT_FILENO) != 0 : !IsFalse(*color))
                              : isatty(STDOUT_FILENO) != 0;
  if (color_on) options |= benchmark::ConsoleReporter::OO_Color;
  if (tabular && !IsFalse(*tabular)) {
    options |= benchmark::ConsoleReporter::OO_Tabular;
  }
  SummaryReporter reporter(static_cast<benchmark::ConsoleReporter::OutputOptions>(options));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace
}  // namespace moelab

int main(int argc, char** argv) { return moelab::Main(argc, argv); }
