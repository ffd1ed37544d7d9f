#include "core/statistics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace moelab {
namespace {

TEST(StudentTQuantileTest, MatchesTheTables) {
  // Printed tables of t(0.975, df).
  EXPECT_NEAR(StudentTQuantile(0.975, 1), 12.7062, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 2), 4.3027, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 4), 2.7764, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 10), 2.2281, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 29), 2.0452, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 120), 1.9799, 1e-4);
  // df -> infinity: the normal quantile 1.959964.
  EXPECT_NEAR(StudentTQuantile(0.975, 1e7), 1.959964, 1e-6);
  EXPECT_NEAR(StudentTQuantile(0.995, 3), 5.8409, 1e-4);
  // Closed forms: df 1 is Cauchy, t = tan(pi (p - 1/2)); df 2 has
  // t = (2p - 1) / sqrt(2 p (1 - p)).
  for (double p : {0.6, 0.9, 0.975, 0.999}) {
    EXPECT_NEAR(StudentTQuantile(p, 1), std::tan(M_PI * (p - 0.5)), 1e-9 * (1 + p)) << p;
    EXPECT_NEAR(StudentTQuantile(p, 2), (2 * p - 1) / std::sqrt(2 * p * (1 - p)), 1e-9) << p;
  }
  // Symmetric about 0.
  EXPECT_EQ(StudentTQuantile(0.5, 7), 0);
  EXPECT_NEAR(StudentTQuantile(0.025, 4), -2.7764, 1e-4);
  EXPECT_TRUE(std::isnan(StudentTQuantile(1, 4)));
  EXPECT_TRUE(std::isnan(StudentTQuantile(0.975, 0)));
}

TEST(StudentTQuantileTest, BeyondTheTables) {
  // Published: 2.0395 at 31, 2.0211 at 40, 2.0086 at 50, 1.9840 at 100.
  EXPECT_NEAR(StudentTQuantile(0.975, 31), 2.0395, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 40), 2.0211, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 50), 2.0086, 1e-4);
  EXPECT_NEAR(StudentTQuantile(0.975, 100), 1.9840, 1e-4);
  for (int df = 1; df < 200; ++df) {
    EXPECT_GT(StudentTQuantile(0.975, df), StudentTQuantile(0.975, df + 1));
  }
}

TEST(MeanWithInterval95Test, HandComputed) {
  // Values 1, 2, 3, 4, 5: mean 3, s = sqrt(2.5), s/sqrt(5) = sqrt(0.5).
  const MeanInterval m = MeanWithInterval95({1, 2, 3, 4, 5});
  EXPECT_EQ(m.n, 5);
  EXPECT_DOUBLE_EQ(m.mean, 3);
  EXPECT_NEAR(m.half_width, 2.776445 * std::sqrt(0.5), 1e-5);  // t(0.975, 4) = 2.776445
  EXPECT_NEAR(m.low(), 3 - 1.963243, 1e-5);
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
