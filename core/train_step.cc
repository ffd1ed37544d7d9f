#include "core/train_step.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>  // clip_grad.h is not self-contained
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/fused_adam.h"
#include "core/step_profiler.h"

namespace moelab {

int ThreadsFor(const RuntimeSpec& runtime) {
  return runtime.threads() > 0
             ? runtime.threads()
             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainingSpec& training, Model& model) {
  std::vector<at::Tensor> params = model.parameters();
  switch (training.optimizer()) {
    case SGD:
      return std::make_unique<torch::optim::SGD>(params,
                                                 torch::optim::SGDOptions(training.learning_rate())
                                                     .momentum(training.momentum())
                                                     .weight_decay(training.weight_decay()));
    case ADAM:
      return std::make_unique<FusedAdam>(params, torch::optim::AdamOptions(training.learning_rate())
                                                     .weight_decay(training.weight_decay()));
    default:
      return std::make_unique<FusedAdamW>(params,
                                          torch::optim::AdamWOptions(training.learning_rate())
                                              .weight_decay(training.weight_decay()));
  }
}

namespace {

// TrainStep's work, which under data parallelism runs collectives that
// throw when a peer fails.
absl::StatusOr<StepLosses> RunStep(Model& model, torch::optim::Optimizer& optimizer,
                                   const Batch& batch, double grad_clip_norm,
                                   StepSynchronizer* synchronizer) {
  if (synchronizer != nullptr) synchronizer->PrepareForForward();
  ModelOutput out = model.Forward(batch, ForwardOptions{.need_logits = false});
  at::Tensor total = out.loss + out.aux_loss;
  StepLosses losses{out.loss.item<double>(), out.aux_loss.item<double>()};
  double total_value = total.item<double>();
  if (synchronizer != nullptr) {
    // Every rank must take the same branch below, or the others would wait
    // in the backward pass's all-reduce for a rank that returned.
    absl::StatusOr<at::Tensor> means =
        synchronizer->MeanOverRanks(at::tensor({losses.loss, losses.aux_loss, total_value}));
    if (!means.ok()) return means.status();
    const double* mean = means->data_ptr<double>();
    losses = StepLosses{mean[0], mean[1]};
    total_value = mean[2];
  }
  if (!std::isfinite(total_value)) {
    return absl::DataLossError(absl::StrFormat("the loss became %f", total_value));
  }
  // Dropped rather than zero-filled (PyTorch's set_to_none): the backward then
  // writes each gradient once instead of adding it to a zeroed buffer, which
  // for the experts' [E, D, H] weights is two extra passes per step. Every
  // parameter gets a gradient each step, so the update is unchanged.
  for (auto& group : optimizer.param_groups()) {
    for (at::Tensor& parameter : group.params()) parameter.mutable_grad().reset();
  }
  if (synchronizer != nullptr) synchronizer->PrepareForBackward();
  total.backward();  // with a synchronizer, the gradient buckets are all-reduced meanwhile
  if (synchronizer != nullptr) {
    if (absl::Status s = synchronizer->FinishBackward(); !s.ok()) return s;
  }
  {
    ScopedPhase phase(kPhaseOptimizer);
    if (grad_clip_norm > 0 && synchronizer == nullptr) {
      torch::nn::utils::clip_grad_norm_(model.parameters(), grad_clip_norm);
    } else if (grad_clip_norm > 0) {
      // clip_grad_norm_'s rule over the norm of the whole model's gradient,
      // which expert parallelism spreads over ranks.
      absl::StatusOr<double> norm_squared = synchronizer->GradientNormSquared();
      if (!norm_squared.ok()) return norm_squared.status();
      const double clip = grad_clip_norm / (std::sqrt(*norm_squared) + 1e-6);
      if (clip < 1) {
        torch::NoGradGuard no_grad;
        for (at::Tensor& p : model.parameters()) {
          if (p.grad().defined()) p.mutable_grad().mul_(clip);
        }
      }
    }
    optimizer.step();
  }
  return losses;
}

}  // namespace

absl::StatusOr<StepLosses> TrainStep(Model& model, torch::optim::Optimizer& optimizer,
                                     const Batch& batch, double grad_clip_norm,
                                     StepSynchronizer* synchronizer) {
  if (synchronizer == nullptr) return RunStep(model, optimizer, batch, grad_clip_norm, nullptr);
  try {
    return RunStep(model, optimizer, batch, grad_clip_norm, synchronizer);
  } catch (const std::exception& e) {
    // Often a peer that failed inside a collective (the bucket all-reduces,
    // the routers' batch statistics, the expert all-to-all): say which.
    return absl::UnavailableError(
        absl::StrCat("the training step failed: ", synchronizer->DescribeFailure(e)));
  }
}

}  // namespace moelab
