#include "core/train_step.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>  // clip_grad.h is not self-contained

#include <algorithm>
#include <cmath>
#include <thread>

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

absl::StatusOr<StepLosses> TrainStep(Model& model, torch::optim::Optimizer& optimizer,
                                     const Batch& batch, double grad_clip_norm) {
  ModelOutput out = model.Forward(batch, ForwardOptions{.need_logits = false});
  at::Tensor total = out.loss + out.aux_loss;
  const double total_value = total.item<double>();
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
  total.backward();
  {
    ScopedPhase phase(kPhaseOptimizer);
    if (grad_clip_norm > 0) {
      torch::nn::utils::clip_grad_norm_(model.parameters(), grad_clip_norm);
    }
    optimizer.step();
  }
  return StepLosses{out.loss.item<double>(), out.aux_loss.item<double>()};
}

}  // namespace moelab
