#include "core/fused_adam.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/string_utils.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>

namespace moelab {
namespace {

// Per-step constants of the update, in the parameter's type as ATen's
// scalar-tensor operations use them.
template <typename T>
struct AdamCoefficients {
  T l2;     // Adam: weight_decay, added to the gradient
  T decay;  // AdamW: 1 - lr * weight_decay, applied to the parameter
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T inverse_sqrt_bias_correction2;
  T eps;
  T neg_step_size;  // -lr / bias_correction1
};

// The reference sequence, per element, of torch::optim::Adam (l2, decay = 1)
// and AdamW (l2 = 0, decay):
//   g = grad + l2 * p;  m = m * beta1 + (1 - beta1) * g
//   v = v * beta2 + (1 - beta2) * g * g
//   p = p * decay - step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps)
template <typename T>
void UpdateRange(const AdamCoefficients<T>& c, int64_t begin, int64_t end, T* __restrict__ param,
                 const T* __restrict__ grad, T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq) {
  for (int64_t i = begin; i < end; ++i) {
    const T g = grad[i] + c.l2 * param[i];
    const T m = exp_avg[i] * c.beta1 + c.one_minus_beta1 * g;
    const T v = exp_avg_sq[i] * c.beta2 + c.one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const T denom = std::sqrt(v) * c.inverse_sqrt_bias_correction2 + c.eps;
    param[i] = param[i] * c.decay + c.neg_step_size * (m / denom);
  }
}

// Memory-bound, so ranges are large: 32K elements is 896 KiB of traffic.
constexpr int64_t kGrainSize = 32768;

void Update(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
            const at::Tensor& exp_avg_sq, double lr, double beta1, double beta2, double eps,
            double l2, double decay, int64_t step) {
  for (const at::Tensor* moment : {&exp_avg, &exp_avg_sq}) {
    TORCH_CHECK(moment->is_contiguous() && moment->numel() == param.numel() &&
                    moment->scalar_type() == param.scalar_type() &&
                    moment->device() == param.device(),
                "FusedAdam: a parameter's moments must be contiguous tensors of its "
                "size, type and device (a checkpoint of another model?)");
  }
  const at::Tensor dense_grad = grad.contiguous();
  const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "FusedAdam", [&] {
    const AdamCoefficients<scalar_t> c{static_cast<scalar_t>(l2),
                                       static_cast<scalar_t>(decay),
                                       static_cast<scalar_t>(beta1),
                                       static_cast<scalar_t>(1 - beta1),
                                       static_cast<scalar_t>(beta2),
                                       static_cast<scalar_t>(1 - beta2),
                                       static_cast<scalar_t>(1 / std::sqrt(bias_correction2)),
                                       static_cast<scalar_t>(eps),
                                       static_cast<scalar_t>(-lr / bias_correction1)};
    scalar_t* p = param.data_ptr<scalar_t>();
    const scalar_t* g = dense_grad.data_ptr<scalar_t>();
    scalar_t* m = exp_avg.data_ptr<scalar_t>();
    scalar_t* v = exp_avg_sq.data_ptr<scalar_t>();
    at::parallel_for(0, param.numel(), kGrainSize,
                     [&](int64_t begin, int64_t end) { UpdateRange(c, begin, end, p, g, m, v); });
  });
}

// The step shared by both optimizers: State is AdamParamState or
// AdamWParamState, Options AdamOptions or AdamWOptions. Like LibTorch, a
// parameter's state is created at its first gradient and keyed by its
// TensorImpl.
template <typename State, typename Options, bool kDecoupledWeightDecay>
void FusedStep(torch::optim::Optimizer& optimizer) {
  torch::NoGradGuard no_grad;
  for (torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) {
    const auto& options = static_cast<const Options&>(group.options());
    TORCH_CHECK(!options.amsgrad(), "FusedAdam: amsgrad is not supported");
    for (const at::Tensor& param : group.params()) {
      TORCH_CHECK(!param.grad().defined() || !param.grad().is_sparse(),
                  "FusedAdam: sparse gradients are not supported");
    }
    const double beta1 = std::get<0>(options.betas());
    const double beta2 = std::get<1>(options.betas());
    const double weight_decay = options.weight_decay();
    const double l2 = kDecoupledWeightDecay ? 0.0 : weight_decay;
    const double decay = kDecoupledWeightDecay ? 1.0 - options.lr() * weight_decay : 1.0;
    for (at::Tensor& param : group.params()) {
      if (!param.grad().defined()) continue;
      std::unique_ptr<torch::optim::OptimizerParamState>& slot =
          optimizer.state()[c10::guts::to_string(param.unsafeGetTensorImpl())];
      if (slot == nullptr) {
        auto fresh = std::make_unique<State>();
        fresh->step(0);
        fresh->exp_avg(at::zeros_like(param, at::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(at::zeros_like(param, at::MemoryFormat::Contiguous));
        slot = std::move(fresh);
      }
      auto& state = static_cast<State&>(*slot);
      state.step(state.step() + 1);
      Update(param, param.grad(), state.exp_avg(), state.exp_avg_sq(), options.lr(), beta1, beta2,
             options.eps(), l2, decay, state.step());
    }
  }
}

// The fused loop runs on the CPU over dense float or double memory; other
// parameters (a CUDA model, say) take LibTorch's own step, which keeps the
// same state.
bool FusedLoopApplies(const torch::optim::Optimizer& optimizer) {
  for (const torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) {
    for (const at::Tensor& param : group.params()) {
      if (!param.device().is_cpu() || !param.is_contiguous() ||
          (param.scalar_type() != at::kFloat && param.scalar_type() != at::kDouble)) {
        return false;
      }
    }
  }
  return true;
}

at::Tensor EvaluateClosure(const torch::optim::Optimizer::LossClosure& closure) {
  if (closure == nullptr) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}

}  // namespace

at::Tensor FusedAdam::step(LossClosure closure) {
  if (!FusedLoopApplies(*this)) return torch::optim::Adam::step(closure);
  at::Tensor loss = EvaluateClosure(closure);
  FusedStep<torch::optim::AdamParamState, torch::optim::AdamOptions,
            /*kDecoupledWeightDecay=*/false>(*this);
  return loss;
}

at::Tensor FusedAdamW::step(LossClosure closure) {
  if (!FusedLoopApplies(*this)) return torch::optim::AdamW::step(closure);
  at::Tensor loss = EvaluateClosure(closure);
  FusedStep<torch::optim::AdamWParamState, torch::optim::AdamWOptions,
            /*kDecoupledWeightDecay=*/true>(*this);
  return loss;
}

}  // namespace moelab
