#include "experiments/gemm_peaks.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace moelab {
namespace {

// Every path computes the same product: a BLAS that picked the wrong
// kernels for this processor would show here first.
TEST(GemmPeaksTest, EveryPathComputesTheLinearLayersProduct) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({37, 64});
  const at::Tensor w = at::randn({23, 64});
  const at::Tensor expected = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
  for (GemmPath path : {GemmPath::kFp32Blas, GemmPath::kFp32OneDnn, GemmPath::kBf16}) {
    if (!GemmPathAvailable(path)) continue;
    const at::Tensor y = LinearThrough(path, x, w).to(at::kDouble);
    ASSERT_EQ(y.sizes(), expected.sizes()) << GemmPathName(path);
    // bf16 keeps 8 bits of mantissa: |error| ~ 2^-8 sqrt(K) per entry.
    const double tolerance = path == GemmPath::kBf16 ? 0.3 : 1e-3;
    EXPECT_LT((y - expected).abs().max().item<double>(), tolerance) << GemmPathName(path);
  }
}

TEST(GemmPeaksTest, MeasuresAPositiveRate) {
  EXPECT_GT(MeasureGemmGflops(GemmPath::kFp32Blas, {64, 64, 64}, 3), 0);
}

}  // namespace
}  // namespace moelab
