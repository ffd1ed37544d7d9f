#include "core/threading_environment.h"

#include <ATen/Parallel.h>

#include "gtest/gtest.h"

namespace moelab {
namespace {

TEST(ThreadingEnvironmentTest, BoundsLibTorchAndRunsOpenBlasOnTheCaller) {
  for (int threads : {2, 1, 3}) {
    SetIntraOpThreads(threads);
    EXPECT_EQ(at::get_num_threads(), threads);
    // third_party/setup.sh makes libblas.so.3 OpenBLAS (libopenblas0-pthread).
    EXPECT_EQ(OpenBlasThreads(), 1);
  }
}

}  // namespace
}  // namespace moelab
