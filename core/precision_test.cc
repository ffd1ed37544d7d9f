#include "core/precision.h"

#include <thread>

#include "gtest/gtest.h"

namespace moelab {
namespace {

TEST(PrecisionTest, ScopesNestAndRestore) {
  EXPECT_EQ(CurrentPrecision(), FP32);
  {
    PrecisionScope bf16(BF16);
    EXPECT_EQ(CurrentPrecision(), BF16);
    {
      PrecisionScope fp32(PRECISION_UNSPECIFIED);
      EXPECT_EQ(CurrentPrecision(), FP32);
    }
    EXPECT_EQ(CurrentPrecision(), BF16);
  }
  EXPECT_EQ(CurrentPrecision(), FP32);
}

TEST(PrecisionTest, IsPerThread) {
  PrecisionScope bf16(BF16);
  Precision seen_elsewhere = BF16;
  std::thread([&] { seen_elsewhere = CurrentPrecision(); }).join();
  EXPECT_EQ(seen_elsewhere, FP32);
  EXPECT_EQ(CurrentPrecision(), BF16);
}

TEST(PrecisionTest, Names) {
  EXPECT_STREQ(PrecisionName(BF16), "bf16");
  EXPECT_STREQ(PrecisionName(FP32), "fp32");
}

}  // namespace
}  // namespace moelab
