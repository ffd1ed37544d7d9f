#ifndef MOELAB_ROUTERS_ROUTE_TOOL_H_
#define MOELAB_ROUTERS_ROUTE_TOOL_H_

// Routes one batch of tokens with a registered router, file to file, so that
// a router can be checked against an outside implementation (PyTorch). The
// `route` binary (routers/route.cc) is its command line; the file formats are
// documented in routers/README.md. Only routers linked into the calling
// binary can be found.

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace moelab {

struct RouteToolOptions {
  // A RouterSpec in text format. top_k defaults to 2 as in an experiment,
  // then the router's own `resolve` fills its defaults.
  std::string router_text;
  // A torch.save'd dict of tensors; relative paths are relative to
  // $BUILD_WORKING_DIRECTORY (core/paths.h).
  std::string input_path;
  // Where the decision is written with torch::pickle_save.
  std::string output_path;
  // E; 0 takes it from the input's gate_weight [E, D].
  int64_t num_experts = 0;
  // RoutingContext.training and the router's train() mode.
  bool training = false;
  // RouterDims.causal_model and RoutingContext.causal.
  bool causal_model = false;
  // Seeds torch's global generator before the router is built.
  uint64_t seed = 0;
};

// Every problem with the options or the files is an error status whose
// message names the flag or the input key; never throws.
absl::Status RunRouteTool(const RouteToolOptions& options);

}  // namespace moelab

#endif  // MOELAB_ROUTERS_ROUTE_TOOL_H_
