#include "models/linear.h"

#include <torch/torch.h>

#include "core/precision.h"
#include "gtest/gtest.h"

namespace moelab {
namespace {

struct Gradients {
  at::Tensor y, x, weight, bias;
};

// Forward and backward of sum(y * upstream) through `linear`.
template <typename LinearFn>
Gradients RunLinear(LinearFn linear, const at::Tensor& x0, const at::Tensor& w0,
                    const at::Tensor& b0, const at::Tensor& upstream) {
  at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_(),
             b = b0.clone().requires_grad_();
  at::Tensor y = linear(x, w, b);
  (y * upstream).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.grad()};
}

double RelativeError(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>() /
         want.abs().max().item<double>();
}

class LinearTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    x_ = torch::randn({4, 6, 32});  // [B, T, in]
    w_ = torch::randn({24, 32}) * 0.2;
    b_ = torch::randn({24});
    upstream_ = torch::randn({4, 6, 24});
    reference_ = RunLinear(
        [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
          return at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble));
        },
        x_, w_, b_, upstream_.to(at::kDouble));
  }
  at::Tensor x_, w_, b_, upstream_;
  Gradients reference_;
};

TEST_F(LinearTest, Fp32MatchesATenInDouble) {
  const Gradients got = RunLinear(Linear, x_, w_, b_, upstream_);
  EXPECT_EQ(got.y.sizes(), (std::vector<int64_t>{4, 6, 24}));
  EXPECT_LT(RelativeError(got.y, reference_.y), 1e-6);
  EXPECT_LT(RelativeError(got.x, reference_.x), 1e-6);
  EXPECT_LT(RelativeError(got.weight, reference_.weight), 1e-6);
  EXPECT_LT(RelativeError(got.bias, reference_.bias), 1e-6);
}

TEST_F(LinearTest, Bf16IsWithinBf16RoundingAndKeepsFp32Gradients) {
  PrecisionScope bf16(BF16);
  const Gradients got = RunLinear(Linear, x_, w_, b_, upstream_);
  for (const at::Tensor& t : {got.y, got.x, got.weight, got.bias}) {
    EXPECT_EQ(t.scalar_type(), at::kFloat);
  }
  // Operands keep 8 significant bits (2^-9 relative rounding each): a dot
  // product of 32 terms stays well inside 1%.
  EXPECT_LT(RelativeError(got.y, reference_.y), 1e-2);
  EXPECT_LT(RelativeError(got.x, reference_.x), 1e-2);
  EXPECT_LT(RelativeError(got.weight, reference_.weight), 1e-2);
  // The bias gradient is a plain fp32 sum of the upstream gradient: exact.
  EXPECT_LT(RelativeError(got.bias, reference_.bias), 1e-6);
  // And it is a bf16 computation, not fp32 under another name.
  EXPECT_GT(RelativeError(got.y, reference_.y), 1e-5);
}

TEST_F(LinearTest, PrecisionIsFixedAtTheForwardPass) {
  // A backward pass run outside the scope still uses the forward's bf16
  // operands (they are what was saved).
  at::Tensor w = w_.clone().requires_grad_();
  at::Tensor y;
  {
    PrecisionScope bf16(BF16);
    y = Linear(x_, w, b_);
  }
  (y * upstream_).sum().backward();
  EXPECT_LT(RelativeError(w.grad(), reference_.weight), 1e-2);
  EXPECT_GT(RelativeError(w.grad(), reference_.weight), 1e-5);
}

TEST_F(LinearTest, WithoutBias) {
  at::Tensor w = w_.clone().requires_grad_();
  at::Tensor y = Linear(x_, w, at::Tensor());
  EXPECT_TRUE(torch::allclose(y, at::linear(x_, w_), 1e-5, 1e-5));
  y.sum().backward();
  EXPECT_TRUE(w.grad().defined());
}

}  // namespace
}  // namespace moelab
