#include "core/memory_usage.h"

#include <cstring>
#include <memory>

#include "gtest/gtest.h"

namespace moelab {
namespace {

TEST(MemoryUsageTest, TouchedMemoryRaisesResidentAndPeak) {
  const MemoryUsage before = ReadMemoryUsage();
  ASSERT_GT(before.resident_mb, 0);
  EXPECT_GE(before.peak_resident_mb, before.resident_mb);
  constexpr size_t kBytes = 256u << 20;
  std::unique_ptr<char[]> block(new char[kBytes]);
  std::memset(block.get(), 1, kBytes);  // resident only once written
  const MemoryUsage during = ReadMemoryUsage();
  EXPECT_GE(during.resident_mb, before.resident_mb + 200);
  EXPECT_GE(during.peak_resident_mb, during.resident_mb);
  EXPECT_EQ(block[kBytes - 1], 1);
  block.reset();
  const MemoryUsage after = ReadMemoryUsage();
  EXPECT_LT(after.resident_mb, during.resident_mb - 200);  // large blocks go back
  // The kernel syncs per-thread RSS counters in batches: allow a little slack.
  EXPECT_GE(after.peak_resident_mb, during.resident_mb - 2);
}

}  // namespace
}  // namespace moelab
