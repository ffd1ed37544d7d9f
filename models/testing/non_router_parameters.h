#ifndef MOELAB_MODELS_TESTING_NON_ROUTER_PARAMETERS_H_
#define MOELAB_MODELS_TESTING_NON_ROUTER_PARAMETERS_H_

// For paired-seed tests: the parameters a model's routers do not own.

#include <map>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

namespace moelab {

// name -> value of every parameter outside the routers (registered as
// "...router..." by the models' MoE blocks).
inline std::map<std::string, at::Tensor> NonRouterParameters(
    const torch::nn::Module& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model.named_parameters()) {
    if (p.key().find(".router.") == std::string::npos) out[p.key()] = p.value();
  }
  return out;
}

}  // namespace moelab

#endif  // MOELAB_MODELS_TESTING_NON_ROUTER_PARAMETERS_H_
