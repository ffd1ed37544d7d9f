#include "experiments/gemm_peaks.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "models/matmul.h"

namespace moelab {
namespace {

// Every path computes the same product: a BLAS that picked the wrong
// kernels for this processor would show here first.
TEST(GemmPeaksTest, EveryPathComputesTheLinearLayersProduct) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({37, 64});
  const at::Tensor w = at::randn({23, 64});
  const at::Tensor expected = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
  for (GemmPath path : AllGemmPaths()) {
    if (!GemmPathAvailable(path)) continue;
    const at::Tensor y = LinearThrough(path, x, w);
    ASSERT_EQ(y.scalar_type(), at::kFloat) << GemmPathName(path);
    ASSERT_EQ(y.sizes(), expected.sizes()) << GemmPathName(path);
    // bf16 keeps 8 bits of mantissa: |error| ~ 2^-8 sqrt(K) per entry.
    const double tolerance = GemmPathIsBf16(path) ? 0.3 : 1e-3;
    EXPECT_LT((y.to(at::kDouble) - expected).abs().max().item<double>(), tolerance)
        << GemmPathName(path);
  }
}

TEST(GemmPeaksTest, ListsEveryPathOnceWithItsPrecision) {
  const std::vector<GemmPath> paths = AllGemmPaths();
  EXPECT_EQ(paths.size(), 5u);
  int bf16 = 0;
  for (GemmPath path : paths) bf16 += GemmPathIsBf16(path);
  EXPECT_EQ(bf16, 2);
  EXPECT_FALSE(GemmPathIsBf16(GemmPath::kFp32Moelab));
  EXPECT_TRUE(GemmPathIsBf16(GemmPath::kBf16Moelab));
  EXPECT_STREQ(GemmPathName(GemmPath::kFp32Moelab), "fp32 moelab (oneDNN sgemm)");
  EXPECT_STREQ(GemmPathName(GemmPath::kBf16Moelab), "bf16 moelab (oneDNN bf16->fp32 gemm)");
  // moelab's fp32 path needs nothing beyond the oneDNN it links.
  EXPECT_TRUE(GemmPathAvailable(GemmPath::kFp32Moelab));
  EXPECT_EQ(GemmPathAvailable(GemmPath::kBf16Moelab), HasOneDnnBf16Matmul());
}

// moelab's paths are its layers' products: fp32 operands give fp32
// products; bf16 operands are rounded once and then accumulated in fp32,
// so the result matches the exact product of the rounded operands far more
// closely than bf16's own precision (ATen's bf16 path rounds its result to
// bf16 as well).
TEST(GemmPeaksTest, MoelabPathsAreMoelabsMatmul) {
  at::manual_seed(5);
  const at::Tensor x = at::randn({41, 96});
  const at::Tensor w = at::randn({29, 96});
  EXPECT_TRUE(
      at::allclose(LinearThrough(GemmPath::kFp32Moelab, x, w), Matmul(x, w.t()), 1e-5, 1e-5));
  const at::Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
  const at::Tensor rounded_product = at::matmul(xb.to(at::kDouble), wb.to(at::kDouble).t());
  const at::Tensor y = LinearThrough(GemmPath::kBf16Moelab, x, w).to(at::kDouble);
  // fp32 accumulation over K = 96 of |terms| ~ 1: error ~ 1e-5.
  EXPECT_LT((y - rounded_product).abs().max().item<double>(), 1e-3);
}

TEST(GemmPeaksTest, MeasuresAPositiveRate) {
  for (GemmPath path : AllGemmPaths()) {
    if (!GemmPathAvailable(path)) continue;
    EXPECT_GT(MeasureGemmGflops(path, {64, 64, 64}, 3), 0) << GemmPathName(path);
  }
}

}  // namespace
}  // namespace moelab
