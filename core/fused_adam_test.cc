#include "core/fused_adam.h"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/torch.h>

#include <sstream>
#include <vector>

#include "gtest/gtest.h"

namespace moelab {
namespace {

// Parameters of several shapes, one larger than a parallel grain so the
// update is split across threads.
std::vector<at::Tensor> MakeParameters(at::ScalarType dtype) {
  torch::manual_seed(7);
  return {torch::randn({100000}, dtype).requires_grad_(true),
          torch::randn({17, 5}, dtype).requires_grad_(true),
          torch::randn({3}, dtype).requires_grad_(true)};
}

std::vector<at::Tensor> Clone(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> copies;
  for (const at::Tensor& p : params) copies.push_back(p.detach().clone().requires_grad_(true));
  return copies;
}

// Gives both parameter lists the same gradient; the last parameter gets
// none on odd steps, which both optimizers must skip.
void SetGradients(std::vector<at::Tensor>& a, std::vector<at::Tensor>& b, int step) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (i + 1 == a.size() && step % 2 == 1) {
      a[i].mutable_grad().reset();
      b[i].mutable_grad().reset();
      continue;
    }
    const at::Tensor grad = torch::randn_like(a[i]) * (1.0 + step);
    a[i].mutable_grad() = grad.clone();
    b[i].mutable_grad() = grad.clone();
  }
}

double MaxRelativeDiff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, ((a[i] - b[i]).abs() / (b[i].abs() + 1e-3)).max().item<double>());
  }
  return worst;
}

// Moments are sums of signed terms whose elements can cancel to near zero,
// so they are compared against the tensor's scale, not elementwise.
double DiffOverScale(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

template <typename Fused, typename Reference, typename State, typename Options>
void ExpectSameTrajectory(const Options& options, at::ScalarType dtype, double tol) {
  std::vector<at::Tensor> fused_params = MakeParameters(dtype);
  std::vector<at::Tensor> reference_params = Clone(fused_params);
  Fused fused(fused_params, options);
  Reference reference(reference_params, options);
  for (int step = 0; step < 8; ++step) {
    SetGradients(fused_params, reference_params, step);
    if (step == 4) {  // a schedule changing the learning rate mid-run
      fused.param_groups()[0].options().set_lr(options.lr() * 0.25);
      reference.param_groups()[0].options().set_lr(options.lr() * 0.25);
    }
    fused.step();
    reference.step();
    ASSERT_LT(MaxRelativeDiff(fused_params, reference_params), tol) << "step " << step;
  }
  // The moments agree too, under LibTorch's own state keys.
  for (size_t i = 0; i < fused_params.size(); ++i) {
    const auto& fused_state = static_cast<const State&>(
        *fused.state().at(c10::guts::to_string(fused_params[i].unsafeGetTensorImpl())));
    const auto& reference_state = static_cast<const State&>(
        *reference.state().at(c10::guts::to_string(reference_params[i].unsafeGetTensorImpl())));
    EXPECT_EQ(fused_state.step(), reference_state.step());
    EXPECT_LT(DiffOverScale(fused_state.exp_avg(), reference_state.exp_avg()), tol);
    EXPECT_LT(DiffOverScale(fused_state.exp_avg_sq(), reference_state.exp_avg_sq()), tol);
  }
}

using torch::optim::AdamParamState;
using torch::optim::AdamWParamState;

TEST(FusedAdamTest, MatchesTorchAdamWithAndWithoutL2WeightDecay) {
  for (double weight_decay : {0.0, 0.1}) {
    const auto options = torch::optim::AdamOptions(1e-2).weight_decay(weight_decay).eps(1e-6);
    ExpectSameTrajectory<FusedAdam, torch::optim::Adam, AdamParamState>(options, at::kDouble,
                                                                        1e-12);
    ExpectSameTrajectory<FusedAdam, torch::optim::Adam, AdamParamState>(options, at::kFloat, 1e-5);
  }
}

TEST(FusedAdamTest, MatchesTorchAdamWithDecoupledWeightDecay) {
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.1).betas({0.8, 0.95});
  ExpectSameTrajectory<FusedAdamW, torch::optim::AdamW, AdamWParamState>(options, at::kDouble,
                                                                         1e-12);
  ExpectSameTrajectory<FusedAdamW, torch::optim::AdamW, AdamWParamState>(options, at::kFloat, 1e-5);
}

TEST(FusedAdamTest, NonContiguousGradientsAndParametersMatchTorchAdam) {
  // A transposed gradient, and a transposed parameter (which LibTorch's own
  // step then serves): both trajectories still match the reference.
  torch::manual_seed(3);
  const at::Tensor base = torch::randn({40, 30}, at::kDouble);
  for (bool transposed_param : {false, true}) {
    at::Tensor fused_param =
        (transposed_param ? base.t().clone().t() : base.clone()).requires_grad_(true);
    at::Tensor reference_param = base.clone().requires_grad_(true);
    FusedAdam fused({fused_param}, torch::optim::AdamOptions(1e-2).weight_decay(0.01));
    torch::optim::Adam reference({reference_param},
                                 torch::optim::AdamOptions(1e-2).weight_decay(0.01));
    for (int step = 0; step < 4; ++step) {
      const at::Tensor grad_t = torch::randn({30, 40}, at::kDouble);
      fused_param.mutable_grad() = grad_t.t();  // not contiguous
      reference_param.mutable_grad() = grad_t.t().contiguous();
      fused.step();
      reference.step();
    }
    EXPECT_LT(MaxRelativeDiff({fused_param}, {reference_param}), 1e-12) << transposed_param;
  }
}

TEST(FusedAdamTest, FirstStepMovesEachParameterByTheLearningRate) {
  // At step 1, m / sqrt(v) = g / |g| after bias correction, so every element
  // moves by -lr * sign(g) (eps aside): a value computed by hand.
  at::Tensor param = torch::tensor({1.0, -2.0, 3.0}, at::kDouble).requires_grad_(true);
  FusedAdam optimizer({param}, torch::optim::AdamOptions(0.5).eps(0));
  param.mutable_grad() = torch::tensor({4.0, -0.001, 7.0}, at::kDouble);
  optimizer.step();
  EXPECT_NEAR(param[0].item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(param[1].item<double>(), -1.5, 1e-12);
  EXPECT_NEAR(param[2].item<double>(), 2.5, 1e-12);
}

// `First` takes three steps and saves a checkpoint; `Second` loads it into a
// copy of the parameters; both take three more steps. Returns how far apart
// the two end up.
template <typename First, typename Second, typename Options>
double DivergenceAfterResumingAcross(const Options& options, at::ScalarType dtype) {
  std::vector<at::Tensor> first_params = MakeParameters(dtype);
  std::vector<at::Tensor> second_params = Clone(first_params);
  First first(first_params, options);
  for (int step = 0; step < 3; ++step) {
    SetGradients(first_params, second_params, step);
    first.step();
  }
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive archive;
    first.save(archive);
    archive.save_to(buffer);
  }
  for (size_t i = 0; i < second_params.size(); ++i) {
    torch::NoGradGuard no_grad;
    second_params[i].copy_(first_params[i]);
  }
  Second second(second_params, options);
  {
    torch::serialize::InputArchive archive;
    archive.load_from(buffer);
    second.load(archive);
  }
  for (int step = 3; step < 6; ++step) {
    SetGradients(first_params, second_params, step);
    first.step();
    second.step();
  }
  return MaxRelativeDiff(first_params, second_params);
}

TEST(FusedAdamTest, TorchAdamWResumesFromAFusedCheckpoint) {
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  EXPECT_LT((DivergenceAfterResumingAcross<FusedAdamW, torch::optim::AdamW>(options, at::kDouble)),
            1e-12);
}

TEST(FusedAdamTest, ResumesFromATorchAdamCheckpoint) {
  // Runs from before the fused optimizer saved LibTorch's Adam.
  const auto options = torch::optim::AdamOptions(1e-2);
  EXPECT_LT((DivergenceAfterResumingAcross<torch::optim::Adam, FusedAdam>(options, at::kFloat)),
            1e-5);
}

TEST(FusedAdamTest, SparseGradientIsRefusedBeforeAnyStateChanges) {
  at::Tensor param = torch::ones({4}).requires_grad_(true);
  FusedAdam optimizer({param});
  param.mutable_grad() = torch::ones({4}).to_sparse();
  EXPECT_ANY_THROW(optimizer.step());
  EXPECT_TRUE(optimizer.state().empty());
  EXPECT_TRUE(torch::equal(param.detach(), torch::ones({4})));
}

TEST(FusedAdamTest, AmsgradIsRefused) {
  at::Tensor param = torch::ones({2}).requires_grad_(true);
  FusedAdam optimizer({param}, torch::optim::AdamOptions().amsgrad(true));
  param.mutable_grad() = torch::ones({2});
  EXPECT_ANY_THROW(optimizer.step());
}

}  // namespace
}  // namespace moelab
