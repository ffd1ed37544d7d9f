#include "core/threading_environment.h"

#include <ATen/Parallel.h>

#include <chrono>
#include <mutex>
#include <set>
#include <thread>

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

// at::parallel_for is an inline template that runs in parallel only in code
// compiled with -fopenmp (.bazelrc); without it, moelab's own kernels (the
// attention kernel, fused Adam, ...) ran every range on the calling thread.
TEST(ThreadingEnvironmentTest, AtParallelForInMoelabCodeUsesThePool) {
  SetIntraOpThreads(2);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  at::parallel_for(0, 1000, 1, [&](int64_t begin, int64_t end) {
    // Long enough that the first chunk cannot finish before the second starts.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::lock_guard<std::mutex> lock(mutex);
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(threads.size(), 2u);
}

}  // namespace
}  // namespace moelab
