#ifndef MOELAB_MODELS_CROSS_ENTROPY_H_
#define MOELAB_MODELS_CROSS_ENTROPY_H_

// Cross-entropy over a large vocabulary without the [N, V] traffic of the
// plain formulation.
//
// at::cross_entropy_loss materialises log_softmax [N, V] in the forward pass
// and, in the backward pass, a zero-filled [N, V] gradient of nll_loss plus
// the [N, V] output of log_softmax's backward: the largest tensors of a small
// LM, streamed through memory several times a step.

#include <ATen/core/Tensor.h>

namespace moelab {

// logits: [N, V] float or double; targets: [N] int64 in [0, V).
// Returns the scalar mean over rows of logsumexp(logits_i) -
// logits_i[targets_i], differentiable once with respect to logits (a second
// backward through the same graph is an error). One [N, V] buffer: the
// forward pass keeps log-probabilities and the backward pass turns them into
// softmax - onehot in place.
at::Tensor MeanCrossEntropy(const at::Tensor& logits, const at::Tensor& targets);

// The same loss of logits = hidden · weightᵀ, without ever holding [N, V]:
// rows go through in blocks small enough to stay in cache, and because the
// loss is the graph's end, each block's gradients (softmax - onehot)·weight
// and (softmax - onehot)ᵀ·hidden are formed while its softmax is at hand;
// the backward pass only scales them by the incoming gradient.
// hidden: [N, D]; weight: [V, D] (an untied output layer or the tied token
// embedding); targets: [N]. Differentiable once with respect to hidden and
// weight. Without grad mode or inputs that need gradients it only computes
// the loss. For float inputs the two products take operands in the precision
// in force (core/precision.h); logits, softmax, loss and gradients are fp32.
at::Tensor MeanLinearCrossEntropy(const at::Tensor& hidden, const at::Tensor& weight,
                                  const at::Tensor& targets);

}  // namespace moelab

#endif  // MOELAB_MODELS_CROSS_ENTROPY_H_
