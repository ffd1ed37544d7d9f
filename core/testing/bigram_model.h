#ifndef MOELAB_CORE_TESTING_BIGRAM_MODEL_H_
#define MOELAB_CORE_TESTING_BIGRAM_MODEL_H_

// A test double whose every output can be worked out by hand: a bigram
// "language model" over 4 token ids with one routing layer of 2 experts
// (evaluate it on core/testing/small_token_stream.h).

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "core/model.h"

namespace moelab {

// Next-token probabilities P[w][v] of the bigram model.
inline constexpr double kBigramProbabilities[4][4] = {
    {0.1, 0.2, 0.3, 0.4},
    {0.2, 0.1, 0.4, 0.3},
    {0.4, 0.3, 0.2, 0.1},
    {0.7, 0.1, 0.1, 0.1},
};

// A model whose logits at a position are log P[w] of kBigramProbabilities,
// with w the position's own input (causal) or, when `sees_the_end`, the
// sequence's last input, which gives each position a view of the future as
// a non-causal router would. IsCausal() returns `causal`. Its one routing layer sends token w to
// expert w % 2 with weight 1 (gate r = (0.75, 0.25) for even w, mirrored for odd).
class BigramModel : public Model {
 public:
  explicit BigramModel(bool sees_the_end = false, bool causal = true);

  ModelOutput Forward(const Batch& batch, const ForwardOptions& options) override;
  ModelStats Stats() const override { return {}; }
  bool IsCausal() const override { return causal_; }
  std::vector<std::shared_ptr<Router>> Routers() const override { return {}; }

 private:
  bool sees_the_end_;
  bool causal_;
  at::Tensor log_p_;  // [4, 4]
};

}  // namespace moelab

#endif  // MOELAB_CORE_TESTING_BIGRAM_MODEL_H_
