#ifndef MOELAB_CORE_FUSED_ADAM_H_
#define MOELAB_CORE_FUSED_ADAM_H_

// Adam and AdamW whose update is one pass over each parameter.
//
// torch::optim::Adam's step runs eight tensor operations per parameter, two
// of them making temporaries, each a full pass through memory: for the 7M
// parameters of bench_lm that was 25 ms of a 450 ms training step on 2 cores.
// These optimizers are torch::optim::Adam / AdamW with only the arithmetic
// replaced by one parallel loop that reads the gradient and the two moments
// once and writes each once. Options, parameter groups and per-parameter
// state (AdamParamState / AdamWParamState) are LibTorch's own, so learning
// rate schedules and checkpoints work unchanged: FusedAdam and
// torch::optim::Adam load each other's checkpoints, as do FusedAdamW and
// torch::optim::AdamW.
//
// The fused loop serves contiguous float or double CPU parameters; when any
// parameter is otherwise (a CUDA model, say) the step is LibTorch's own.
// Sparse gradients and amsgrad are refused (TORCH_CHECK: the trainer never
// produces or asks for them).

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

namespace moelab {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  at::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace moelab

#endif  // MOELAB_CORE_FUSED_ADAM_H_
