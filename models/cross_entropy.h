#ifndef MOELAB_MODELS_CROSS_ENTROPY_H_
#define MOELAB_MODELS_CROSS_ENTROPY_H_

// Mean cross-entropy over a large vocabulary with one [N, V] buffer.
//
// at::cross_entropy_loss materialises log_softmax [N, V] in the forward pass
// and, in the backward pass, a zero-filled [N, V] gradient of nll_loss plus
// the [N, V] output of log_softmax's backward: three vocabulary-sized
// allocations and five passes per step, the largest tensors of a small LM
// (DESIGN.md: log-softmax was 11% of a PyTorch eager step). Here the forward
// pass keeps exp(logits - max) and the backward pass turns that same buffer
// into the gradient softmax - onehot in place.

#include <ATen/core/Tensor.h>

namespace moelab {

// logits: [N, V] float or double; targets: [N] int64 in [0, V).
// Returns the scalar mean over rows of logsumexp(logits_i) -
// logits_i[targets_i], differentiable once with respect to logits (a second
// backward through the same graph is an error).
at::Tensor MeanCrossEntropy(const at::Tensor& logits,
                            const at::Tensor& targets);

}  // namespace moelab

#endif  // MOELAB_MODELS_CROSS_ENTROPY_H_
