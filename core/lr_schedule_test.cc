#include "core/lr_schedule.h"

#include <gtest/gtest.h>

namespace moelab {
namespace {

TrainingSpec Spec(LrSchedule schedule, int warmup) {
  TrainingSpec t;
  t.set_learning_rate(1.0);
  t.set_min_lr_ratio(0.1);
  t.set_warmup_steps(warmup);
  t.set_schedule(schedule);
  return t;
}

TEST(LrScheduleTest, WarmupRisesLinearlyToThePeak) {
  const TrainingSpec t = Spec(COSINE, 4);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 0, 100), 0.25);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 1, 100), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 3, 100), 1.0);
}

TEST(LrScheduleTest, CosineDecaysToTheFloorAtTheLastStep) {
  const TrainingSpec t = Spec(COSINE, 0);
  EXPECT_DOUBLE_EQ(LearningRateAt(t, 0, 11), 1.0);
  // Half way: floor + (peak - floor) / 2.
  EXPECT_NEAR(LearningRateAt(t, 5, 11), 0.55, 1e-7);
  EXPECT_NEAR(LearningRateAt(t, 10, 11), 0.1, 1e-7);
}

TEST(LrScheduleTest, LinearAndConstant) {
  EXPECT_NEAR(LearningRateAt(Spec(LINEAR, 0), 5, 11), 0.55, 1e-7);
  EXPECT_NEAR(LearningRateAt(Spec(LINEAR, 0), 10, 11), 0.1, 1e-7);
  EXPECT_DOUBLE_EQ(LearningRateAt(Spec(CONSTANT, 2), 50, 11), 1.0);
}

}  // namespace
}  // namespace moelab
