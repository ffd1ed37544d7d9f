#include "core/statistics.h"

#include <cmath>

#include <gtest/gtest.h>

namespace moelab {
namespace {

TEST(StudentT975Test, KnownQuantiles) {
  EXPECT_NEAR(StudentT975(1), 12.706, 1e-3);
  EXPECT_NEAR(StudentT975(4), 2.776, 1e-3);
  EXPECT_NEAR(StudentT975(29), 2.045, 1e-3);
  // Published: 2.0395 at 31, 2.0211 at 40, 2.0086 at 50, 1.9840 at 100.
  EXPECT_NEAR(StudentT975(31), 2.0395, 1e-4);
  EXPECT_NEAR(StudentT975(40), 2.0211, 1e-4);
  EXPECT_NEAR(StudentT975(50), 2.0086, 1e-4);
  EXPECT_NEAR(StudentT975(100), 1.9840, 1e-4);
  EXPECT_NEAR(StudentT975(1000000), 1.95996, 1e-4);
  for (int df = 1; df < 200; ++df) EXPECT_GT(StudentT975(df), StudentT975(df + 1));
}

TEST(MeanWithInterval95Test, HandComputed) {
  // Values 1, 2, 3, 4, 5: mean 3, s = sqrt(2.5), s/sqrt(5) = sqrt(0.5).
  const MeanInterval m = MeanWithInterval95({1, 2, 3, 4, 5});
  EXPECT_EQ(m.n, 5);
  EXPECT_DOUBLE_EQ(m.mean, 3);
  EXPECT_NEAR(m.half_width, 2.7764 * std::sqrt(0.5), 1e-9);
  EXPECT_NEAR(m.low(), 3 - 1.96322, 1e-4);
}

TEST(MeanWithInterval95Test, FewerThanTwoValuesExcludeNothing) {
  EXPECT_TRUE(std::isinf(MeanWithInterval95({}).half_width));
  const MeanInterval one = MeanWithInterval95({2.5});
  EXPECT_DOUBLE_EQ(one.mean, 2.5);
  EXPECT_TRUE(std::isinf(one.half_width));
}

TEST(MeanWithInterval95Test, ConstantValuesHaveZeroWidth) {
  const MeanInterval m = MeanWithInterval95({0.5, 0.5, 0.5});
  EXPECT_DOUBLE_EQ(m.mean, 0.5);
  EXPECT_DOUBLE_EQ(m.half_width, 0);
}

}  // namespace
}  // namespace moelab
