#ifndef MOELAB_CORE_STEP_PROFILER_H_
#define MOELAB_CORE_STEP_PROFILER_H_

// Where the time of a training step goes, phase by phase (router, dispatch,
// expert matmuls, combine, attention, embeddings, output layer, loss,
// optimizer), forward and backward.
//
// Code marks a phase with a ScopedPhase on the stack. While a StepProfiler is
// recording, the scope times its forward part and remembers the range of
// autograd sequence numbers created inside it; the profiler then times every
// autograd node as the backward pass runs it (a RecordFunction callback) and
// charges it to the phase whose range holds the node's sequence number. So
// the backward of a phase is measured, not estimated, and custom autograd
// functions are covered as well as ATen ops. Time in no phase is "other".
//
// When no profiler is recording, a ScopedPhase costs one relaxed atomic load.
// Phases do not nest: an inner scope inside an outer one is ignored.
// On CUDA the recorded times are launch times unless the caller
// synchronises; the profiler is meant for CPU runs.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace moelab {

// The phase names used across moelab, so that profiles line up.
inline constexpr char kPhaseRouter[] = "router";
inline constexpr char kPhaseDispatch[] = "dispatch";
inline constexpr char kPhaseExpertMatmuls[] = "expert matmuls";
inline constexpr char kPhaseCombine[] = "combine";
inline constexpr char kPhaseAttention[] = "attention";
inline constexpr char kPhaseEmbedding[] = "embeddings";
inline constexpr char kPhaseOutput[] = "output layer";
inline constexpr char kPhaseLoss[] = "loss";
// The output layer and the loss computed as one fused operation.
inline constexpr char kPhaseOutputAndLoss[] = "output+loss";
inline constexpr char kPhaseOptimizer[] = "optimizer";

class ScopedPhase {
 public:
  // `name` must outlive the profile (use the constants above).
  explicit ScopedPhase(const char* name);
  ~ScopedPhase();
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  const char* name_ = nullptr;  // null when not recording
  uint64_t first_sequence_nr_ = 0;
  std::chrono::steady_clock::time_point start_;
};

struct PhaseTime {
  std::string name;
  double forward_ms = 0;   // summed over the recorded steps
  double backward_ms = 0;  // autograd nodes charged to this phase
};

struct StepProfile {
  int steps = 0;
  double step_ms = 0;  // summed wall time of the recorded steps
  // In order of first appearance; the last entry is "other": the step's time
  // in no phase (embeddings, norms, residuals, autograd bookkeeping ...).
  std::vector<PhaseTime> phases;
};

// Records the steps between BeginStep and EndStep. One profiler records at a
// time (it installs a global RecordFunction callback); steps run on one
// thread (intra-op parallelism inside ops is fine).
class StepProfiler {
 public:
  StepProfiler();
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  void BeginStep();
  void EndStep();
  StepProfile Profile() const;

  // One row per phase: forward, backward, total ms per step and share.
  static std::string Format(const StepProfile& profile);
};

}  // namespace moelab

#endif  // MOELAB_CORE_STEP_PROFILER_H_
