#include "models/fused_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "models/kernel_isa.h"
#include "models/matmul.h"

namespace moelab {
namespace {

// Each test runs under each build of the kernels this CPU supports.
class FusedKernelsTest : public ::testing::TestWithParam<KernelIsa> {
 protected:
  void SetUp() override {
    if (KernelIsaInUse() < GetParam()) GTEST_SKIP() << "this CPU lacks the build";
  }
  ScopedKernelIsaLimit limit_{GetParam()};
};

// GELU and its derivative in double, Φ(x) as erfc(-x / √2) / 2 (no
// cancellation for negative x).
at::Tensor GeluReference(const at::Tensor& x) {
  const at::Tensor d = x.to(at::kDouble);
  return d * 0.5 * (-d * M_SQRT1_2).erfc();
}
at::Tensor GeluDerivativeReference(const at::Tensor& x) {
  const at::Tensor d = x.to(at::kDouble);
  return 0.5 * (-d * M_SQRT1_2).erfc() + d * (-0.5 * d * d).exp() / std::sqrt(2 * M_PI);
}

// Pre-activations over GELU's whole range, of a length that is no whole
// number of vectors (so the scalar tails run too).
at::Tensor PreActivations() {
  at::manual_seed(3);
  return at::cat({at::randn({1000}) * 3, at::linspace(-12, 12, 233), at::zeros({1})}).reshape({-1});
}

TEST_P(FusedKernelsTest, GeluAndItsBackwardMatchTheDoubleReference) {
  const at::Tensor x = PreActivations();
  at::manual_seed(4);
  const at::Tensor upstream = at::randn(x.sizes());
  const at::Tensor activation = GeluOperand(x, FP32);
  ASSERT_EQ(activation.scalar_type(), at::kFloat);
  at::Tensor grad = upstream.clone();
  const at::Tensor operand = GeluBackwardInPlace(grad, x, FP32);
  EXPECT_TRUE(operand.is_same(grad));
  const at::Tensor magnitude = x.to(at::kDouble).abs().clamp_min(1);
  // A&S 7.1.26's erf error (1.5e-7) scaled by |x| / 2, plus float rounding.
  EXPECT_LT(((activation - GeluReference(x)).abs() / magnitude).max().item<double>(), 2e-7);
  const at::Tensor expected_grad = upstream.to(at::kDouble) * GeluDerivativeReference(x);
  EXPECT_LT(((grad - expected_grad).abs() / (magnitude * upstream.abs().to(at::kDouble)))
                .max()
                .item<double>(),
            4e-7);
  // ATen's own GELU uses the same approximation of erf.
  EXPECT_LT(((activation - at::gelu(x)).abs() / magnitude).max().item<double>(), 2e-7);
  EXPECT_LT(((grad - at::gelu_backward(upstream, x)).abs() / magnitude).max().item<double>(),
            4e-7 * upstream.abs().max().item<double>());
}

TEST_P(FusedKernelsTest, GeluOfLargeNegativeInputsDoesNotCancel) {
  // x Φ(x) at x = -9 is -1e-18: 1 + erf(x / √2) would round to 0 in float.
  // A&S 7.1.26's relative error in erfc's tail is ~1.5% there.
  const at::Tensor x = at::linspace(-9, -4, 64);
  const at::Tensor activation = GeluOperand(x, FP32);
  const at::Tensor reference = GeluReference(x);
  EXPECT_LT(((activation - reference).abs() / reference.abs()).max().item<double>(), 0.02);
  EXPECT_TRUE((activation < 0).all().item<bool>());
}

TEST_P(FusedKernelsTest, GeluPropagatesNaN) {
  at::Tensor pre = at::full({37}, 0.5f);
  pre[3] = std::numeric_limits<float>::quiet_NaN();
  pre[36] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(GeluOperand(pre, FP32).isnan().sum().item<int64_t>(), 2);
  at::Tensor grad = at::ones({37});
  GeluBackwardInPlace(grad, pre, FP32);
  EXPECT_EQ(grad.isnan().sum().item<int64_t>(), 2);
}

// Under BF16 each operand is the fp32 result rounded, whichever way this
// machine holds bf16 operands; the fp32 gradient is unchanged.
TEST_P(FusedKernelsTest, Bf16OperandsAreTheFp32ValuesRounded) {
  const at::Tensor x = PreActivations();
  at::manual_seed(4);
  const at::Tensor upstream = at::randn(x.sizes());
  const at::Tensor activation_fp32 = GeluOperand(x, FP32);
  at::Tensor grad_fp32 = upstream.clone();
  GeluBackwardInPlace(grad_fp32, x, FP32);
  const Bf16Operands saved = CurrentBf16Operands();
  for (const Bf16Operands operands : {Bf16Operands::kBf16, Bf16Operands::kRoundedFp32}) {
    SetBf16Operands(operands);
    const at::Tensor activation = GeluOperand(x, BF16);
    EXPECT_EQ(activation.scalar_type(), OperandType(BF16));
    EXPECT_TRUE(
        at::equal(activation.to(at::kFloat), activation_fp32.to(at::kBFloat16).to(at::kFloat)));
    at::Tensor grad = upstream.clone();
    const at::Tensor operand = GeluBackwardInPlace(grad, x, BF16);
    EXPECT_TRUE(at::equal(grad, grad_fp32));
    if (operands == Bf16Operands::kBf16) {
      ASSERT_EQ(operand.scalar_type(), at::kBFloat16);
      EXPECT_TRUE(at::equal(operand, grad_fp32.to(at::kBFloat16)));
    } else {
      EXPECT_TRUE(operand.is_same(grad));  // rounded later by MatmulOperandInPlace
    }
  }
  SetBf16Operands(saved);
}

// Σ_r logsumexp(z_r) - z_r[t_r] and softmax - onehot, in double.
std::pair<double, at::Tensor> CrossEntropyReference(const at::Tensor& logits,
                                                    const at::Tensor& targets) {
  const at::Tensor z = logits.to(at::kDouble);
  const at::Tensor index = targets.unsqueeze(1);
  const double sum = (z.logsumexp(1) - z.gather(1, index).squeeze(1)).sum().item<double>();
  at::Tensor grad = z.softmax(1);
  grad.scatter_add_(1, index, at::full_like(index, -1, grad.options()));
  return {sum, grad};
}

// Vocabularies below one vector, of no whole number of vectors, and large.
class SoftmaxCrossEntropyTest : public ::testing::TestWithParam<std::tuple<KernelIsa, int64_t>> {
 protected:
  void SetUp() override {
    if (KernelIsaInUse() < std::get<0>(GetParam())) GTEST_SKIP() << "this CPU lacks the build";
  }
  ScopedKernelIsaLimit limit_{std::get<0>(GetParam())};
};

TEST_P(SoftmaxCrossEntropyTest, LossAndGradientMatchTheDoubleReference) {
  const int64_t vocab = std::get<1>(GetParam());
  at::manual_seed(5);
  const at::Tensor logits = at::randn({9, vocab}) * 4;
  const at::Tensor targets = at::randint(vocab, {9}, at::kLong);
  const auto [expected_sum, expected_grad] = CrossEntropyReference(logits, targets);
  at::Tensor z = logits.clone();
  EXPECT_NEAR(SoftmaxCrossEntropySum(z, targets, nullptr), expected_sum,
              1e-6 * std::abs(expected_sum));
  EXPECT_TRUE(at::equal(z, logits));  // untouched without a gradient
  at::Tensor grad = z;                // in place
  EXPECT_NEAR(SoftmaxCrossEntropySum(z, targets, &grad), expected_sum,
              1e-6 * std::abs(expected_sum));
  EXPECT_LT((grad - expected_grad).abs().max().item<double>(), 1e-6);
}

TEST_P(SoftmaxCrossEntropyTest, Bf16GradientsAreTheFp32OnesRounded) {
  const int64_t vocab = std::get<1>(GetParam());
  at::manual_seed(6);
  const at::Tensor logits = at::randn({7, vocab}) * 4;
  const at::Tensor targets = at::randint(vocab, {7}, at::kLong);
  at::Tensor fp32 = logits.clone();
  const double sum = SoftmaxCrossEntropySum(fp32, targets, &fp32);
  at::Tensor z = logits.clone();
  at::Tensor bf16 = at::empty({7, vocab}, at::kBFloat16);
  EXPECT_EQ(SoftmaxCrossEntropySum(z, targets, &bf16), sum);
  EXPECT_TRUE(at::equal(bf16, fp32.to(at::kBFloat16)));
  z = logits.clone();
  EXPECT_EQ(SoftmaxCrossEntropySum(z, targets, &z, /*round_to_bf16=*/true), sum);
  EXPECT_TRUE(at::equal(z, fp32.to(at::kBFloat16).to(at::kFloat)));
}

INSTANTIATE_TEST_SUITE_P(BuildsAndVocabularies, SoftmaxCrossEntropyTest,
                         ::testing::Combine(::testing::Values(KernelIsa::kBaseline,
                                                              KernelIsa::kAvx2, KernelIsa::kAvx512),
                                            ::testing::Values(5, 1003, 10000)));

TEST_P(FusedKernelsTest, AnUnderflowedTargetStillCountsExactly) {
  // The target sits 200 nats below the row's maximum: its float probability
  // is 0, its loss 200 + log(1 + 2 e^-200 + ...) = 200.
  at::Tensor z = at::zeros({1, 40});
  z[0][7] = 200;
  const at::Tensor targets = at::full({1}, 3, at::kLong);
  at::Tensor grad = at::empty({1, 40});
  EXPECT_NEAR(SoftmaxCrossEntropySum(z, targets, &grad), 200.0, 1e-9);
  EXPECT_FLOAT_EQ(grad[0][3].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(grad[0][7].item<float>(), 1.0f);
}

TEST_P(FusedKernelsTest, NonFiniteLogitsGiveANonFiniteLoss) {
  at::Tensor z = at::zeros({2, 33});
  z[1][20] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor targets = at::full({2}, 1, at::kLong);
  EXPECT_TRUE(std::isnan(SoftmaxCrossEntropySum(z, targets, nullptr)));
}

TEST_P(FusedKernelsTest, TheSumDoesNotDependOnTheThreads) {
  at::manual_seed(7);
  const at::Tensor logits = at::randn({64, 300});
  const at::Tensor targets = at::randint(300, {64}, at::kLong);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  at::Tensor z = logits.clone();
  const double one = SoftmaxCrossEntropySum(z, targets, nullptr);
  at::set_num_threads(2);
  z = logits.clone();
  EXPECT_EQ(SoftmaxCrossEntropySum(z, targets, nullptr), one);
  at::set_num_threads(threads);
}

TEST_P(FusedKernelsTest, ATargetOutsideTheVocabularyIsAnError) {
  at::Tensor z = at::zeros({3, 10});
  EXPECT_THROW(SoftmaxCrossEntropySum(z, at::tensor({1, 10, 2}, at::kLong), nullptr), c10::Error);
  EXPECT_THROW(SoftmaxCrossEntropySum(z, at::tensor({1, -1, 2}, at::kLong), nullptr), c10::Error);
}

TEST(FusedKernelsBuilds, AgreeWithEachOther) {
  if (KernelIsaInUse() < KernelIsa::kAvx2) GTEST_SKIP() << "only the portable build here";
  const at::Tensor x = PreActivations();
  at::manual_seed(8);
  const at::Tensor logits = at::randn({5, 1003}) * 4;
  const at::Tensor targets = at::randint(1003, {5}, at::kLong);
  std::vector<std::tuple<at::Tensor, at::Tensor, double, at::Tensor>> results;
  for (const KernelIsa isa : {KernelIsa::kBaseline, KernelIsa::kAvx2, KernelIsa::kAvx512}) {
    if (KernelIsaInUse() < isa) break;
    const ScopedKernelIsaLimit limit(isa);
    const at::Tensor activation = GeluOperand(x, FP32);
    at::Tensor grad = at::ones(x.sizes());
    GeluBackwardInPlace(grad, x, FP32);
    at::Tensor z = logits.clone();
    const double sum = SoftmaxCrossEntropySum(z, targets, &z);
    results.emplace_back(activation, grad, sum, z);
  }
  for (size_t i = 1; i < results.size(); ++i) {
    EXPECT_TRUE(at::allclose(std::get<0>(results[i]), std::get<0>(results[0]), 1e-6, 1e-7));
    EXPECT_TRUE(at::allclose(std::get<1>(results[i]), std::get<1>(results[0]), 1e-6, 1e-7));
    EXPECT_NEAR(std::get<2>(results[i]), std::get<2>(results[0]), 1e-9 * std::get<2>(results[0]));
    EXPECT_TRUE(at::allclose(std::get<3>(results[i]), std::get<3>(results[0]), 1e-6, 1e-8));
  }
}

INSTANTIATE_TEST_SUITE_P(Builds, FusedKernelsTest,
                         ::testing::Values(KernelIsa::kBaseline, KernelIsa::kAvx2,
                                           KernelIsa::kAvx512));

}  // namespace
}  // namespace moelab
