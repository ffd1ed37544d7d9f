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

template <typename Fused, typename Reference, typename Options>
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
  for (const at::Tensor& p : fused_params) {
    EXPECT_EQ(fused.state().count(c10::guts::to_string(p.unsafeGetTensorImpl())), 1u);
  }
}

TEST(FusedAdamTest, MatchesTorchAdamWithL2WeightDecay) {
  const auto options = torch::optim::AdamOptions(1e-2).weight_decay(0.1).eps(1e-6);
  ExpectSameTrajectory<FusedAdam, torch::optim::Adam>(options, at::kDouble, 1e-12);
  ExpectSameTrajectory<FusedAdam, torch::optim::Adam>(options, at::kFloat, 1e-5);
}

TEST(FusedAdamTest, MatchesTorchAdamWithDecoupledWeightDecay) {
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.1).betas({0.8, 0.95});
  ExpectSameTrajectory<FusedAdamW, torch::optim::AdamW>(options, at::kDouble, 1e-12);
  ExpectSameTrajectory<FusedAdamW, torch::optim::AdamW>(options, at::kFloat, 1e-5);
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

TEST(FusedAdamTest, CheckpointsAreInterchangeableWithTorchAdamW) {
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  std::vector<at::Tensor> fused_params = MakeParameters(at::kDouble);
  std::vector<at::Tensor> reference_params = Clone(fused_params);
  FusedAdamW fused(fused_params, options);
  for (int step = 0; step < 3; ++step) {
    SetGradients(fused_params, reference_params, step);
    fused.step();
  }
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive archive;
    fused.save(archive);
    archive.save_to(buffer);
  }
  // The reference resumes from the fused optimizer's checkpoint.
  for (size_t i = 0; i < fused_params.size(); ++i) {
    torch::NoGradGuard no_grad;
    reference_params[i].copy_(fused_params[i]);
  }
  torch::optim::AdamW reference(reference_params, options);
  {
    torch::serialize::InputArchive archive;
    archive.load_from(buffer);
    reference.load(archive);
  }
  for (int step = 3; step < 6; ++step) {
    SetGradients(fused_params, reference_params, step);
    fused.step();
    reference.step();
  }
  EXPECT_LT(MaxRelativeDiff(fused_params, reference_params), 1e-12);
}

TEST(FusedAdamTest, AmsgradIsRefused) {
  at::Tensor param = torch::ones({2}).requires_grad_(true);
  FusedAdam optimizer({param}, torch::optim::AdamOptions().amsgrad(true));
  param.mutable_grad() = torch::ones({2});
  EXPECT_ANY_THROW(optimizer.step());
}

}  // namespace
}  // namespace moelab
