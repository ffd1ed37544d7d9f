#include "core/step_profiler.h"

#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Identity whose backward takes at least `kBackwardSleepMs`, so the profile
// has a known lower bound to find in the right phase.
constexpr int kBackwardSleepMs = 30;
struct SlowBackward : torch::autograd::Function<SlowBackward> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x) { return x.clone(); }
  static variable_list backward(AutogradContext*, variable_list grads) {
    SleepMs(kBackwardSleepMs);
    return grads;
  }
};

const PhaseTime* Find(const StepProfile& profile, const std::string& name) {
  for (const PhaseTime& p : profile.phases) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

TEST(StepProfilerTest, ChargesBackwardNodesToThePhaseThatCreatedThem) {
  const at::Tensor w = torch::randn({8, 8}, torch::requires_grad());
  StepProfiler profiler;
  for (int step = 0; step < 2; ++step) {
    profiler.BeginStep();
    at::Tensor h = torch::randn({4, 8});
    {
      ScopedPhase phase(kPhaseRouter);
      h = h.mm(w);
      SleepMs(10);
    }
    {
      ScopedPhase phase(kPhaseCombine);
      h = SlowBackward::apply(h);
    }
    h.sum().backward();
    profiler.EndStep();
  }
  const StepProfile profile = profiler.Profile();
  ASSERT_EQ(profile.steps, 2);
  ASSERT_EQ(profile.phases.size(), 3u);  // router, combine, other
  const PhaseTime* router = Find(profile, kPhaseRouter);
  const PhaseTime* combine = Find(profile, kPhaseCombine);
  ASSERT_NE(router, nullptr);
  ASSERT_NE(combine, nullptr);
  EXPECT_EQ(profile.phases.back().name, "other");
  EXPECT_GE(router->forward_ms, 2 * 10.0);
  EXPECT_LT(router->backward_ms, kBackwardSleepMs);
  EXPECT_GE(combine->backward_ms, 2 * kBackwardSleepMs);
  EXPECT_LT(combine->forward_ms, 10.0);
  double total = 0;
  for (const PhaseTime& p : profile.phases) total += p.forward_ms + p.backward_ms;
  EXPECT_NEAR(total, profile.step_ms, 1e-6 + 1e-9 * profile.step_ms);
  const std::string table = StepProfiler::Format(profile);
  EXPECT_NE(table.find("router"), std::string::npos);
  EXPECT_NE(table.find("(2 steps)"), std::string::npos);
}

TEST(StepProfilerTest, InnerPhasesAndUnprofiledCodeRecordNothing) {
  {
    ScopedPhase outside_any_profile(kPhaseLoss);  // no profiler: a no-op
  }
  StepProfiler profiler;
  profiler.BeginStep();
  {
    ScopedPhase outer(kPhaseAttention);
    ScopedPhase inner(kPhaseRouter);  // nested: ignored
    SleepMs(5);
  }
  profiler.EndStep();
  const StepProfile profile = profiler.Profile();
  EXPECT_EQ(Find(profile, kPhaseRouter), nullptr);
  EXPECT_EQ(Find(profile, kPhaseLoss), nullptr);
  ASSERT_NE(Find(profile, kPhaseAttention), nullptr);
  EXPECT_GE(Find(profile, kPhaseAttention)->forward_ms, 5.0);
}

TEST(StepProfilerTest, ASecondProfilerCanRecordAfterTheFirstEnds) {
  { StepProfiler first; }
  StepProfiler second;
  second.BeginStep();
  second.EndStep();
  EXPECT_EQ(second.Profile().steps, 1);
}

}  // namespace
}  // namespace moelab
