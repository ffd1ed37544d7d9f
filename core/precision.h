#ifndef MOELAB_CORE_PRECISION_H_
#define MOELAB_CORE_PRECISION_H_

// The precision that the models' matrix products run in, set for a stretch
// of code on the current thread (runtime.precision in the spec).
//
// The trainer opens a scope around each forward and backward pass; layers ask
// for the current precision where they form a product (models/matmul.h), and
// save it for their backward pass, so nothing reads the setting twice:
//
//   {
//     PrecisionScope bf16(BF16);
//     at::Tensor loss = model.Loss(batch);  // products in bf16
//     loss.backward();
//   }
//   // back to FP32 (or whatever scope encloses this one)
//
// Everything else (parameters, gradients, optimizer state, norms, softmax,
// routers, losses, metrics) is fp32 whatever the scope says.

#include "proto/experiment.pb.h"

namespace moelab {

// FP32 outside every scope; never PRECISION_UNSPECIFIED.
Precision CurrentPrecision();

class PrecisionScope {
 public:
  // PRECISION_UNSPECIFIED means FP32.
  explicit PrecisionScope(Precision precision);
  ~PrecisionScope();
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  Precision previous_;
};

// "fp32" or "bf16", for logs and benchmark lines.
const char* PrecisionName(Precision precision);

}  // namespace moelab

#endif  // MOELAB_CORE_PRECISION_H_
