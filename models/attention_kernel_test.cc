#include "models/attention_kernel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/utils.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "models/kernel_isa.h"

namespace moelab {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The ATen sequence SelfAttention used before: baddbmm with an additive
// -inf mask, softmax, bmm.
std::pair<at::Tensor, at::Tensor> Reference(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, double scale, bool causal) {
  const int64_t n = q.size(0), t = q.size(1);
  at::Tensor scores;
  if (causal) {
    const at::Tensor mask =
        at::full({t, t}, -std::numeric_limits<double>::infinity(), q.options()).triu(1);
    scores = at::baddbmm(mask.expand({n, t, t}), q, k.transpose(1, 2), 1.0, scale);
  } else {
    scores = at::bmm(q, k.transpose(1, 2)).mul_(scale);
  }
  const at::Tensor probs = at::softmax(scores, -1);
  return {at::bmm(probs, v), probs};
}

struct Case {
  int64_t n, t, dh;
  bool causal;
  at::ScalarType dtype;
  double tol;
};

constexpr KernelIsa kIsas[] = {KernelIsa::kBaseline, KernelIsa::kAvx2, KernelIsa::kAvx512};

class AttentionKernelTest : public ::testing::TestWithParam<std::tuple<Case, KernelIsa>> {
 protected:
  ScopedKernelIsaLimit limit_{std::get<1>(GetParam())};
};

TEST_P(AttentionKernelTest, OutputsAndGradientsMatchReference) {
  const Case c = std::get<0>(GetParam());
  torch::manual_seed(c.n * 1000 + c.t * 10 + c.dh + c.causal);
  const at::TensorOptions opts = at::TensorOptions().dtype(c.dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
  at::Tensor q = torch::randn({c.n, c.t, c.dh}, opts).requires_grad_(true);
  at::Tensor k = torch::randn({c.n, c.t, c.dh}, opts).requires_grad_(true);
  at::Tensor v = torch::randn({c.n, c.t, c.dh}, opts).requires_grad_(true);
  const at::Tensor grad_c = torch::randn({c.n, c.t, c.dh}, opts);
  const at::Tensor grad_p = torch::randn({c.n, c.t, c.t}, opts);

  auto [context, probs] = ScaledDotProductAttention(q, k, v, scale, c.causal);
  auto [ref_context, ref_probs] = Reference(q, k, v, scale, c.causal);
  ASSERT_EQ(context.sizes(), ref_context.sizes());
  ASSERT_EQ(probs.sizes(), ref_probs.sizes());
  EXPECT_LT(MaxAbsDiff(context, ref_context), c.tol);
  EXPECT_LT(MaxAbsDiff(probs, ref_probs), c.tol);
  if (c.causal) {
    const at::Tensor above = probs.masked_select(torch::ones({c.t, c.t}, at::kBool).triu(1));
    if (above.numel() > 0) {
      EXPECT_EQ(above.abs().max().item<double>(), 0.0);
    }
  }

  // Gradients through the context only, through the probabilities only and
  // through both.
  for (int which = 0; which < 3; ++which) {
    at::Tensor loss = at::zeros({}, opts), ref_loss = at::zeros({}, opts);
    if (which != 1) {
      loss = loss + (context * grad_c).sum();
      ref_loss = ref_loss + (ref_context * grad_c).sum();
    }
    if (which != 0) {
      loss = loss + (probs * grad_p).sum();
      ref_loss = ref_loss + (ref_probs * grad_p).sum();
    }
    const auto grads = torch::autograd::grad({loss}, {q, k, v},
                                             /*grad_outputs=*/{},
                                             /*retain_graph=*/true,
                                             /*create_graph=*/false,
                                             /*allow_unused=*/true);
    const auto ref_grads = torch::autograd::grad({ref_loss}, {q, k, v}, {}, true, false, true);
    for (int g = 0; g < 3; ++g) {
      const at::Tensor& input = g == 0 ? q : (g == 1 ? k : v);
      const at::Tensor got = grads[g].defined() ? grads[g] : at::zeros_like(input);
      const at::Tensor want = ref_grads[g].defined() ? ref_grads[g] : at::zeros_like(input);
      const double tol = c.tol * std::max(1.0, want.abs().max().item<double>());
      EXPECT_LT(MaxAbsDiff(got, want), tol) << "which " << which << " input " << g;
    }
  }
}

// The kernels take query rows in blocks of 4 (Dh = 8 or 16 in float, 8 in
// double), 2 (Dh = 32 in float, 16 in double) or 1, with single rows after
// the last whole block; the AVX-512 build in blocks of 8 (Dh = 16 or 32 in
// float, 8 or 16 in double), 4 (Dh 64 in float, 32 in double), 2 (Dh 64 in
// double) or 1 (its generic path: Dh 48 in float, 24 in double): the sizes
// below cover each block size with a tail, and blocks longer than T.
std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (bool causal : {false, true}) {
    cases.push_back({5, 7, 3, causal, at::kDouble, 1e-10});
    cases.push_back({5, 7, 3, causal, at::kFloat, 2e-5});
    cases.push_back({3, 1, 4, causal, at::kDouble, 1e-10});
    cases.push_back({4, 19, 16, causal, at::kDouble, 1e-10});
    cases.push_back({4, 19, 16, causal, at::kFloat, 2e-5});
    cases.push_back({6, 33, 8, causal, at::kFloat, 2e-5});
    cases.push_back({2, 20, 32, causal, at::kDouble, 1e-10});
    cases.push_back({3, 21, 32, causal, at::kFloat, 2e-5});
    cases.push_back({3, 3, 8, causal, at::kDouble, 1e-10});  // T < R
    cases.push_back({2, 2, 16, causal, at::kFloat, 2e-5});
    cases.push_back({2, 17, 64, causal, at::kFloat, 2e-5});
    cases.push_back({2, 19, 48, causal, at::kFloat, 2e-5});
    cases.push_back({2, 19, 24, causal, at::kDouble, 1e-10});
    cases.push_back({2, 19, 8, causal, at::kDouble, 1e-10});
    cases.push_back({2, 19, 64, causal, at::kDouble, 1e-10});
    cases.push_back({2, 21, 32, causal, at::kDouble, 1e-10});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sizes, AttentionKernelTest,
                         ::testing::Combine(::testing::ValuesIn(Cases()),
                                            ::testing::ValuesIn(kIsas)));

// Central differences of a random projection of both outputs in double.
TEST(AttentionKernelGradcheck, FiniteDifferences) {
  for (bool causal : {false, true}) {
    torch::manual_seed(7 + causal);
    const at::TensorOptions opts = at::TensorOptions().dtype(at::kDouble);
    const int64_t n = 2, t = 5, dh = 3;
    std::vector<at::Tensor> inputs = {torch::randn({n, t, dh}, opts),
                                      torch::randn({n, t, dh}, opts),
                                      torch::randn({n, t, dh}, opts)};
    const at::Tensor wc = torch::randn({n, t, dh}, opts);
    const at::Tensor wp = torch::randn({n, t, t}, opts);
    auto objective = [&](const std::vector<at::Tensor>& x) {
      auto [c, p] = ScaledDotProductAttention(x[0], x[1], x[2], 0.7, causal);
      return (c * wc).sum() + (p * wp).sum();
    };
    for (auto& x : inputs) x.requires_grad_(true);
    const at::Tensor loss = objective(inputs);
    const auto grads = torch::autograd::grad({loss}, inputs);
    const double eps = 1e-6;
    for (int g = 0; g < 3; ++g) {
      at::NoGradGuard no_grad;
      at::Tensor numeric = at::zeros_like(inputs[g]);
      auto flat = inputs[g].view({-1});
      auto numeric_flat = numeric.view({-1});
      for (int64_t e = 0; e < flat.numel(); ++e) {
        const double old = flat[e].item<double>();
        flat[e].fill_(old + eps);
        const double up = objective(inputs).item<double>();
        flat[e].fill_(old - eps);
        const double down = objective(inputs).item<double>();
        flat[e].fill_(old);
        numeric_flat[e].fill_((up - down) / (2 * eps));
      }
      EXPECT_LT(MaxAbsDiff(grads[g], numeric), 1e-7) << "causal " << causal << " input " << g;
    }
  }
}

TEST(AttentionKernel, NonContiguousInputsAndLargeScores) {
  torch::manual_seed(3);
  const at::Tensor qkv = torch::randn({3, 4, 9, 16}) * 10;  // logits beyond exp's range
  const at::Tensor q =
      qkv.select(0, 0).transpose(0, 1).contiguous().transpose(0, 1);  // non-contiguous view
  const at::Tensor k = qkv.select(0, 1), v = qkv.select(0, 2);
  auto [c, p] = ScaledDotProductAttention(q, k, v, 0.25, true);
  auto [rc, rp] = Reference(q.contiguous(), k, v, 0.25, true);
  EXPECT_GT(rp.max().item<double>(), 0.99);  // nearly one-hot rows
  EXPECT_LT(MaxAbsDiff(p, rp), 2e-5);
  EXPECT_LT(MaxAbsDiff(c, rc), 1e-3);  // |v| up to ~40
  EXPECT_FALSE(p.isnan().any().item<bool>());
}

// Under the causal mask a row takes no term from a later position, not even
// a zero-weighted one (0 x inf is NaN): non-finite keys and values there
// leave earlier rows' context and query gradients exactly as they were. The
// late position falls inside a block of rows the kernels take together
// (4 or 8 rows at Dh 16 in float and Dh 8 in double, 2 or 8 at Dh 32 in
// float), in every build.
TEST(AttentionKernel, LaterNonFiniteKeysAndValuesDoNotReachEarlierRows) {
  torch::manual_seed(4);
  const int64_t n = 2, t = 11, late = 5;
  const std::vector<std::pair<int64_t, at::ScalarType>> shapes = {
      {16, at::kFloat}, {8, at::kDouble}, {32, at::kFloat}};
  for (const KernelIsa isa : kIsas) {
    const ScopedKernelIsaLimit limit(isa);
    for (const auto& [dh, dtype] : shapes) {
      const at::TensorOptions opts = at::TensorOptions().dtype(dtype);
      const at::Tensor q = torch::randn({n, t, dh}, opts);
      const at::Tensor k = torch::randn({n, t, dh}, opts), v = torch::randn({n, t, dh}, opts);
      at::Tensor k_bad = k.clone(), v_bad = v.clone();
      k_bad.select(1, late).fill_(std::numeric_limits<double>::infinity());
      v_bad.select(1, late).fill_(std::numeric_limits<double>::quiet_NaN());
      // Context rows before `late` and the gradient of their sum in q.
      const auto early = [&](const at::Tensor& keys, const at::Tensor& values) {
        const at::Tensor q_leaf = q.clone().requires_grad_(true);
        const at::Tensor context =
            ScaledDotProductAttention(q_leaf, keys, values, 0.3, /*causal=*/true).first;
        const at::Tensor early_context = context.narrow(1, 0, late);
        const at::Tensor grad_q = torch::autograd::grad({early_context.sum()}, {q_leaf})[0];
        return std::make_pair(early_context.detach(), grad_q.narrow(1, 0, late));
      };
      const auto [context, grad_q] = early(k, v);
      const auto [context_bad, grad_q_bad] = early(k_bad, v_bad);
      EXPECT_TRUE(at::equal(context_bad, context)) << "Dh " << dh << " " << dtype;
      EXPECT_TRUE(at::equal(grad_q_bad, grad_q)) << "Dh " << dh << " " << dtype;
    }
  }
}

// Forward and backward outputs of one build, through both outputs.
std::vector<at::Tensor> RunBuild(KernelIsa isa, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, bool causal) {
  const ScopedKernelIsaLimit limit(isa);
  const at::Tensor ql = q.clone().requires_grad_(true), kl = k.clone().requires_grad_(true),
                   vl = v.clone().requires_grad_(true);
  auto [context, probs] = ScaledDotProductAttention(ql, kl, vl, 0.3, causal);
  const at::Tensor loss = (context * context.detach().cos()).sum() + (probs * probs.detach()).sum();
  std::vector<at::Tensor> out = torch::autograd::grad({loss}, {ql, kl, vl});
  out.push_back(context.detach());
  out.push_back(probs.detach());
  return out;
}

// The AVX-512 build takes the same sums in the same order as the AVX2 one
// (its wider vectors only hold more independent outputs); only where the
// compiler fuses a multiply-add may differ, so the two agree to within a few
// units in the last place, for every head size the AVX-512 build specialises
// and one it does not (a lane mishandled would be far off).
TEST(AttentionKernel, Avx512BuildAgreesWithTheAvx2Build) {
  const ScopedKernelIsaLimit all(KernelIsa::kAvx512);
  if (KernelIsaInUse() != KernelIsa::kAvx512) {
    GTEST_SKIP() << "this CPU has no AVX-512F";
  }
  torch::manual_seed(5);
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    const double relative_tol = dtype == at::kFloat ? 2e-6 : 4e-15;
    // Whole 64-byte rows only (others run in the AVX2 build either way):
    // the specialised head sizes, then one of the generic path.
    const std::vector<int64_t> head_sizes = dtype == at::kFloat
                                                ? std::vector<int64_t>{16, 32, 64, 48}
                                                : std::vector<int64_t>{8, 16, 32, 64, 24};
    for (const int64_t dh : head_sizes) {
      for (const bool causal : {false, true}) {
        const at::TensorOptions opts = at::TensorOptions().dtype(dtype);
        const at::Tensor q = torch::randn({3, 37, dh}, opts), k = torch::randn({3, 37, dh}, opts),
                         v = torch::randn({3, 37, dh}, opts);
        const std::vector<at::Tensor> avx2 = RunBuild(KernelIsa::kAvx2, q, k, v, causal);
        const std::vector<at::Tensor> avx512 = RunBuild(KernelIsa::kAvx512, q, k, v, causal);
        for (size_t i = 0; i < avx2.size(); ++i) {
          EXPECT_LE(MaxAbsDiff(avx512[i], avx2[i]),
                    relative_tol * avx2[i].abs().max().item<double>())
              << dtype << " Dh " << dh << " causal " << causal << " output " << i;
        }
      }
    }
  }
}
}  // namespace
}  // namespace moelab
