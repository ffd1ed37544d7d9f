#include "models/matmul.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace moelab {
namespace {

// Largest |got - want| relative to the largest |want|.
double RelativeError(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want).abs().max().item<double>() / want.abs().max().item<double>();
}

TEST(MatmulTest, Fp32MatchesADoubleReferenceInEveryLayout) {
  torch::manual_seed(0);
  const at::Tensor a = torch::randn({37, 19}), b = torch::randn({19, 23});
  const at::Tensor want = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  // Row-major, transposed and non-GEMM (column slice) layouts of each side.
  const at::Tensor a_t = a.t().contiguous().t();
  const at::Tensor b_t = b.t().contiguous().t();
  const at::Tensor a_strided = torch::randn({37, 40}).narrow(1, 3, 19).copy_(a);
  for (const at::Tensor& lhs : {a, a_t, a_strided}) {
    for (const at::Tensor& rhs : {b, b_t}) {
      EXPECT_LT(RelativeError(Matmul(lhs, rhs), want), 1e-6);
    }
  }
}

TEST(MatmulTest, AccumulatesIntoARowBlockOfALargerMatrix) {
  torch::manual_seed(1);
  const at::Tensor a = torch::randn({5, 8}), b = torch::randn({8, 6});
  at::Tensor big = torch::ones({9, 6});
  at::Tensor block = big.narrow(0, 2, 5);
  MatmulInto(block, a, b, /*accumulate=*/true);
  const at::Tensor want = at::mm(a, b) + 1;
  EXPECT_TRUE(torch::allclose(big.narrow(0, 2, 5), want, 1e-5, 1e-5));
  // Rows outside the block are untouched.
  EXPECT_TRUE(torch::equal(big.narrow(0, 0, 2), torch::ones({2, 6})));
  EXPECT_TRUE(torch::equal(big.narrow(0, 7, 2), torch::ones({2, 6})));
  MatmulInto(block, a, b);  // overwrite
  EXPECT_TRUE(torch::allclose(big.narrow(0, 2, 5), at::mm(a, b), 1e-5, 1e-5));
}

// Restores the process's choice of bf16 operands when a test ends.
class Bf16OperandsTest : public ::testing::TestWithParam<Bf16Operands> {
 protected:
  void SetUp() override { SetBf16Operands(GetParam()); }
  void TearDown() override { SetBf16Operands(saved_); }
  const Bf16Operands saved_ = CurrentBf16Operands();
};

TEST_P(Bf16OperandsTest, OperandsAreBf16RoundedInTheChosenStorage) {
  torch::manual_seed(5);
  const at::Tensor x = torch::randn({7, 9});
  const at::Tensor op = MatmulOperand(x, BF16);
  EXPECT_EQ(op.scalar_type(), OperandType(BF16));
  EXPECT_EQ(op.scalar_type(), GetParam() == Bf16Operands::kBf16 ? at::kBFloat16 : at::kFloat);
  const at::Tensor values = op.to(at::kFloat);
  EXPECT_TRUE(values.equal(x.to(at::kBFloat16).to(at::kFloat)));  // exactly bf16
  EXPECT_FALSE(values.equal(x));                                  // really rounded
  // Ties, NaN, infinities and the largest finite numbers round as c10 does.
  const at::Tensor special =
      torch::tensor({1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -0.0f, 3.3895314e38f, -3.4e38f,
                     std::numeric_limits<float>::infinity(), 1e-40f});
  EXPECT_TRUE(
      MatmulOperand(special, BF16).to(at::kFloat).equal(special.to(at::kBFloat16).to(at::kFloat)));
  const at::Tensor nan = MatmulOperand(torch::full({3}, std::nanf("")), BF16);
  EXPECT_TRUE(nan.isnan().all().item<bool>());
  // Under autograd it differentiates as casts do: the gradient comes back in
  // fp32 (ones survive the round trip exactly).
  const at::Tensor leaf = x.clone().requires_grad_();
  MatmulOperand(leaf, BF16).to(at::kFloat).sum().backward();
  EXPECT_TRUE(leaf.grad().equal(torch::ones({7, 9})));
}

// Special values at every position of a tensor long enough for the
// vectorised body, the scalar tail and more than one thread's share.
at::Tensor SpecialsAmongRandoms() {
  torch::manual_seed(8);
  at::Tensor x = torch::randn({(1 << 16) + 13}) * 1e3;
  std::vector<float> specials = {1.0f + 1.0f / 256,
                                 1.0f + 3.0f / 256,
                                 -0.0f,
                                 3.3895314e38f,
                                 -3.4e38f,
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(),
                                 1e-40f,
                                 std::nanf(""),
                                 -std::nanf("")};
  // NaNs whose payloads would round (or carry) into an infinity or across
  // the sign: 0x7f808000 rounds up to 0x7f800000, 0x7fffffff carries into
  // 0x80000000.
  float nan_bits[3];
  const uint32_t patterns[3] = {0x7f808000u, 0x7fffffffu, 0xff800001u};
  std::memcpy(nan_bits, patterns, sizeof(nan_bits));
  specials.insert(specials.end(), nan_bits, nan_bits + 3);
  for (int64_t i = 0; i < x.numel(); i += 7) {
    x[i] = specials[static_cast<size_t>(i / 7) % specials.size()];
  }
  return x;
}

// c10's rounding to the bit (so -0 is not +0), NaN payloads aside: every
// NaN must stay a NaN, whichever.
bool SameRounding(const at::Tensor& got, const at::Tensor& x) {
  const at::Tensor want = x.to(at::kBFloat16).to(at::kFloat);
  const at::Tensor values = got.to(at::kFloat);
  return values.isnan().equal(want.isnan()) &&
         values.masked_fill(values.isnan(), 0)
             .view(at::kInt)
             .equal(want.masked_fill(want.isnan(), 0).view(at::kInt));
}

TEST_P(Bf16OperandsTest, RoundsLikeC10AtEveryPositionOfALongTensor) {
  const at::Tensor x = SpecialsAmongRandoms();
  EXPECT_TRUE(SameRounding(MatmulOperand(x, BF16), x));
  EXPECT_TRUE(SameRounding(MatmulOperandInPlace(x.clone(), BF16), x));
}

TEST_P(Bf16OperandsTest, InPlaceOverwritesOnlyFp32HeldTemporaries) {
  const at::Tensor x = SpecialsAmongRandoms();
  at::Tensor temporary = x.clone();
  const at::Tensor op = MatmulOperandInPlace(temporary, BF16);
  EXPECT_EQ(op.scalar_type(), OperandType(BF16));
  if (GetParam() == Bf16Operands::kRoundedFp32) {
    EXPECT_TRUE(op.is_same(temporary));  // no copy
    EXPECT_TRUE(SameRounding(temporary, x));
  } else {
    EXPECT_TRUE(temporary.view(at::kInt).equal(x.view(at::kInt)));  // untouched, to the bit
  }
  // A non-contiguous view and a tensor that autograd tracks are left as they
  // are (rounded copies come back), whatever the storage.
  at::Tensor strided = torch::randn({64, 9}).narrow(1, 2, 5);
  const at::Tensor strided_before = strided.clone();
  EXPECT_TRUE(SameRounding(MatmulOperandInPlace(strided, BF16), strided_before));
  EXPECT_TRUE(strided.equal(strided_before));
  at::Tensor leaf = torch::randn({5, 7}).requires_grad_();
  const at::Tensor leaf_before = leaf.detach().clone();
  EXPECT_TRUE(SameRounding(MatmulOperandInPlace(leaf, BF16).detach(), leaf_before));
  EXPECT_TRUE(leaf.detach().equal(leaf_before));
  // FP32 is a no-op.
  at::Tensor fp32 = x.clone();
  EXPECT_TRUE(MatmulOperandInPlace(fp32, FP32).is_same(fp32));
}

TEST_P(Bf16OperandsTest, Bf16OperandsAccumulateInFp32) {
  // The result must be the exact product of the bf16-rounded operands up to
  // fp32 summation error, not a bf16-rounded result (relative 2^-8 = 4e-3).
  torch::manual_seed(2);
  const at::Tensor a = torch::randn({64, 512}), b = torch::randn({512, 48});
  const at::Tensor a16 = MatmulOperand(a, BF16), b16 = MatmulOperand(b, BF16);
  const at::Tensor got = Matmul(a16, b16);
  ASSERT_EQ(got.scalar_type(), at::kFloat);
  const at::Tensor exact = at::mm(a16.to(at::kDouble), b16.to(at::kDouble));
  EXPECT_LT(RelativeError(got, exact), 1e-5);
  // Against the fp32 operands: bf16 keeps 8 significant bits.
  const at::Tensor fp32 = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  EXPECT_LT(RelativeError(got, fp32), 2e-2);
  EXPECT_GT(RelativeError(got, fp32), 1e-5);  // it really ran on rounded operands
  // Transposed bf16 operands too.
  EXPECT_LT(RelativeError(Matmul(a16.t().contiguous().t(), b16), exact), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(BothStorages, Bf16OperandsTest,
                         ::testing::Values(Bf16Operands::kBf16, Bf16Operands::kRoundedFp32),
                         [](const auto& info) {
                           return info.param == Bf16Operands::kBf16 ? "Bf16" : "RoundedFp32";
                         });

TEST(MatmulTest, Bf16TensorsMultiplyWhateverTheChosenStorage) {
  torch::manual_seed(6);
  const at::Tensor a = torch::randn({16, 32}).to(at::kBFloat16);
  const at::Tensor b = torch::randn({32, 8}).to(at::kBFloat16);
  const at::Tensor exact = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  EXPECT_LT(RelativeError(Matmul(a, b), exact), 1e-5);
}

TEST(MatmulTest, EmptyDimensions) {
  at::Tensor out = torch::full({3, 4}, 7.0f);
  MatmulInto(out, torch::zeros({3, 0}), torch::zeros({0, 4}), /*accumulate=*/true);
  EXPECT_TRUE(torch::equal(out, torch::full({3, 4}, 7.0f)));
  MatmulInto(out, torch::zeros({3, 0}), torch::zeros({0, 4}));
  EXPECT_TRUE(torch::equal(out, torch::zeros({3, 4})));
  EXPECT_EQ(Matmul(torch::zeros({0, 5}), torch::zeros({5, 2})).sizes(),
            (std::vector<int64_t>{0, 2}));
}

TEST(MatmulTest, OperandTypes) {
  EXPECT_EQ(OperandType(FP32), at::kFloat);
  EXPECT_EQ(OperandType(PRECISION_UNSPECIFIED), at::kFloat);
  const at::Tensor x = torch::randn({2, 3});
  EXPECT_TRUE(MatmulOperand(x, FP32).is_same(x));  // no copy at fp32
}

}  // namespace
}  // namespace moelab
