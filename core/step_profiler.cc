#include "core/step_profiler.h"

#include <ATen/SequenceNumber.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "absl/strings/str_format.h"

namespace moelab {
namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Autograd nodes created while a phase ran have sequence numbers in
// [first, last]; the backward callback maps a node back to its phase.
struct SequenceRange {
  uint64_t first = 0;
  uint64_t last = 0;
  const char* phase = nullptr;
};

struct Recording {
  std::mutex mutex;
  // Phases in order of first appearance, keyed by name pointer contents.
  std::vector<PhaseTime> phases;
  std::map<std::string, size_t> index;
  std::vector<SequenceRange> ranges;  // this step's, sorted by construction
  double step_ms = 0;
  double other_backward_ms = 0;
  int steps = 0;

  PhaseTime& Phase(const char* name) {
    auto [it, inserted] = index.emplace(name, phases.size());
    if (inserted) phases.push_back(PhaseTime{name});
    return phases[it->second];
  }
};

std::atomic<Recording*> active_recording{nullptr};
// Phases do not nest; the outermost one on this thread owns the time.
thread_local bool inside_phase = false;

struct NodeTimer : at::ObserverContext {
  Clock::time_point start = Clock::now();
};

std::unique_ptr<at::ObserverContext> OnBackwardStart(const at::RecordFunction&) {
  return std::make_unique<NodeTimer>();
}

void OnBackwardEnd(const at::RecordFunction& fn, at::ObserverContext* context) {
  Recording* recording = active_recording.load(std::memory_order_acquire);
  if (recording == nullptr || context == nullptr) return;
  const double ms = MillisecondsSince(static_cast<NodeTimer*>(context)->start);
  const int64_t sequence_nr = fn.seqNr();
  std::lock_guard<std::mutex> lock(recording->mutex);
  const auto& ranges = recording->ranges;
  // First range whose last sequence number is >= the node's.
  auto it = std::lower_bound(
      ranges.begin(), ranges.end(), sequence_nr,
      [](const SequenceRange& r, int64_t nr) { return static_cast<int64_t>(r.last) < nr; });
  if (sequence_nr >= 0 && it != ranges.end() && static_cast<int64_t>(it->first) <= sequence_nr) {
    recording->Phase(it->phase).backward_ms += ms;
  } else {
    recording->other_backward_ms += ms;
  }
}

// Registered once per process and left disabled between profiles: RecordFunction
// callbacks may only be added while no other code runs, which holds at the
// first profiler's construction.
at::CallbackHandle BackwardCallback() {
  static const at::CallbackHandle handle = [] {
    at::CallbackHandle h =
        at::addGlobalCallback(at::RecordFunctionCallback(OnBackwardStart, OnBackwardEnd)
                                  .scopes({at::RecordScope::BACKWARD_FUNCTION}));
    at::disableCallback(h);
    return h;
  }();
  return handle;
}

Clock::time_point step_start;

}  // namespace

ScopedPhase::ScopedPhase(const char* name) {
  if (active_recording.load(std::memory_order_relaxed) == nullptr || inside_phase) return;
  inside_phase = true;
  name_ = name;
  first_sequence_nr_ = at::sequence_number::peek();
  start_ = Clock::now();
}

ScopedPhase::~ScopedPhase() {
  if (name_ == nullptr) return;
  inside_phase = false;
  Recording* recording = active_recording.load(std::memory_order_acquire);
  if (recording == nullptr) return;
  const double ms = MillisecondsSince(start_);
  const uint64_t next_sequence_nr = at::sequence_number::peek();
  std::lock_guard<std::mutex> lock(recording->mutex);
  recording->Phase(name_).forward_ms += ms;
  if (next_sequence_nr > first_sequence_nr_) {
    recording->ranges.push_back(SequenceRange{first_sequence_nr_, next_sequence_nr - 1, name_});
  }
}

StepProfiler::StepProfiler() {
  auto* recording = new Recording();
  Recording* expected = nullptr;
  TORCH_CHECK(active_recording.compare_exchange_strong(expected, recording),
              "only one StepProfiler may record at a time");
  at::reenableCallback(BackwardCallback());
}

StepProfiler::~StepProfiler() {
  at::disableCallback(BackwardCallback());
  delete active_recording.exchange(nullptr);
}

void StepProfiler::BeginStep() {
  Recording* recording = active_recording.load();
  std::lock_guard<std::mutex> lock(recording->mutex);
  recording->ranges.clear();
  step_start = Clock::now();
}

void StepProfiler::EndStep() {
  Recording* recording = active_recording.load();
  std::lock_guard<std::mutex> lock(recording->mutex);
  recording->step_ms += MillisecondsSince(step_start);
  ++recording->steps;
}

StepProfile StepProfiler::Profile() const {
  Recording* recording = active_recording.load();
  std::lock_guard<std::mutex> lock(recording->mutex);
  StepProfile profile;
  profile.steps = recording->steps;
  profile.step_ms = recording->step_ms;
  profile.phases = recording->phases;
  double in_phases = 0;
  for (const PhaseTime& p : profile.phases) in_phases += p.forward_ms + p.backward_ms;
  PhaseTime other{"other"};
  other.backward_ms = recording->other_backward_ms;
  other.forward_ms = std::max(0.0, profile.step_ms - in_phases - other.backward_ms);
  profile.phases.push_back(other);
  return profile;
}

std::string StepProfiler::Format(const StepProfile& profile) {
  const double steps = std::max(1, profile.steps);
  std::string out = absl::StrFormat("%-16s %10s %10s %10s %7s\n", "phase (ms/step)", "forward",
                                    "backward", "total", "share");
  for (const PhaseTime& p : profile.phases) {
    const double total = p.forward_ms + p.backward_ms;
    absl::StrAppendFormat(&out, "%-16s %10.2f %10.2f %10.2f %6.1f%%\n", p.name,
                          p.forward_ms / steps, p.backward_ms / steps, total / steps,
                          profile.step_ms > 0 ? 100 * total / profile.step_ms : 0.0);
  }
  absl::StrAppendFormat(&out, "%-16s %10s %10s %10.2f %6.1f%%   (%d steps)\n", "step", "", "",
                        profile.step_ms / steps, 100.0, profile.steps);
  return out;
}

}  // namespace moelab
