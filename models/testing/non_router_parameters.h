#ifndef MOELAB_MODELS_TESTING_NON_ROUTER_PARAMETERS_H_
#define MOELAB_MODELS_TESTING_NON_ROUTER_PARAMETERS_H_

// For paired-seed tests: the parameters a model's routers do not own.

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <map>
#include <string>

namespace moelab {

// name -> value of every parameter outside the routers (registered as
// "...router..." by the models' MoE blocks).
inline std::map<std::string, at::Tensor> NonRouterParameters(const torch::nn::Module& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model.named_parameters()) {
    if (p.key().find(".router.") == std::string::npos) out[p.key()] = p.value();
  }
  return out;
}

// Expects `model`, built with the same seed as the model `expected` came
// from but with router `router`, to hold exactly the same non-router
// parameters: paired seeds share everything but the router.
inline void ExpectSameNonRouterParameters(const std::map<std::string, at::Tensor>& expected,
                                          const torch::nn::Module& model,
                                          const std::string& router) {
  const std::map<std::string, at::Tensor> got = NonRouterParameters(model);
  ASSERT_EQ(got.size(), expected.size()) << router;
  for (const auto& [name, value] : expected) {
    ASSERT_TRUE(got.count(name)) << router << " has no " << name;
    EXPECT_TRUE(got.at(name).equal(value))
        << name << " differs between token_choice and " << router << " under the same seed";
  }
}

}  // namespace moelab

#endif  // MOELAB_MODELS_TESTING_NON_ROUTER_PARAMETERS_H_
