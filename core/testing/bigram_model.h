#ifndef MOELAB_CORE_TESTING_BIGRAM_MODEL_H_
#define MOELAB_CORE_TESTING_BIGRAM_MODEL_H_

// Test doubles whose every output can be worked out by hand: a bigram
// "language model" over 4 token ids with one routing layer of 2 experts,
// and a 2-sequence token stream to evaluate it on.

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "core/data/token_stream_dataset.h"
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
// a non-causal router would. Its one routing layer sends token w to expert
// w % 2 with weight 1 (gate r = (0.75, 0.25) for even w, mirrored for odd).
class BigramModel : public Model {
 public:
  explicit BigramModel(bool sees_the_end = false);

  ModelOutput Forward(const Batch& batch, const ForwardOptions& options) override;
  ModelStats Stats() const override { return {}; }
  bool IsCausal() const override { return true; }
  std::vector<std::shared_ptr<Router>> Routers() const override { return {}; }

 private:
  bool sees_the_end_;
  at::Tensor log_p_;  // [4, 4]
};

// Sequences of 2 tokens from a vocabulary of 4: training examples {2,3,2}
// {2,0,2} {2,3,1} (stream 2 3 2 0 2 3 1); validation inputs {3,0} {0,1}
// with targets {0,0} {1,2}; test inputs {2} ... (stream 2 2 2).
std::unique_ptr<TokenStreamDataset> SmallTokenStream();

}  // namespace moelab

#endif  // MOELAB_CORE_TESTING_BIGRAM_MODEL_H_
