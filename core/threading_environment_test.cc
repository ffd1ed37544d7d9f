#include "core/threading_environment.h"

#include <ATen/Parallel.h>

#include "gtest/gtest.h"

namespace moelab {
namespace {

TEST(ThreadingEnvironmentTest, BoundsLibTorchAndOpenBlas) {
  for (int threads : {1, 2}) {
    SetIntraOpThreads(threads);
    EXPECT_EQ(at::get_num_threads(), threads);
    // third_party/setup.sh makes libblas.so.3 OpenBLAS (libopenblas0-pthread).
    EXPECT_EQ(OpenBlasThreads(), threads);
  }
}

}  // namespace
}  // namespace moelab
