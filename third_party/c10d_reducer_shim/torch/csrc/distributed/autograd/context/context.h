#pragma once

// A stand-in for a header Debian's libtorch-dev 1.13 does not ship.
//
// c10d's reducer.hpp (DDP's gradient bucketing engine, which
// core/distributed/data_parallel.cc uses) includes this header of the RPC
// framework's distributed autograd only to name two types: the gradient
// callback it static_asserts against its own, and the shared_ptr its
// RpcContext member holds. Neither type's contents are used by code compiled
// here (RpcContext::set and everything touching a context is inside
// libtorch_cpu), and a shared_ptr's size does not depend on its pointee, so
// the Reducer's layout is the library's. Nothing here may grow: adding a
// member or a function would create a second, different definition of the
// library's class.

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};

using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
