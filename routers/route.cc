// Routes one batch of tokens with any registered router, file to file, so a
// router can be checked against an outside implementation (e.g. PyTorch):
//
//   bazel run //routers:route -- --router='name: "similarity_aware" top_k: 2'
//       --input=in.pt --output=out.pt   (one command line)
//
// IN.pt is a Python `torch.save` of a dict of tensors: the router's inputs
// and every one of its parameters; OUT.pt a dict of the decision's tensors,
// readable with `torch.load`. The format is documented in routers/README.md.
// Every problem with the flags or the files is one line on stderr and exit
// code 1.

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "routers/route_tool.h"

ABSL_FLAG(std::string, router, "",
          "The RouterSpec in protobuf text format, e.g. "
          "'name: \"token_choice\" top_k: 2 token_choice { renormalize: true }'. "
          "Defaults are resolved as in an experiment (top_k 2, then the "
          "router's own).");
ABSL_FLAG(std::string, input, "",
          "torch.save'd dict of tensors: hidden and optional token_ids, "
          "padding_mask, attention_probs, attention_values; every other key "
          "names a router parameter, and every parameter must be there.");
ABSL_FLAG(std::string, output, "", "Where to write the decision (torch.load-able).");
ABSL_FLAG(int64_t, num_experts, 0, "E; by default the first dimension of the input's gate_weight.");
ABSL_FLAG(bool, training, false, "Route in training mode (jitter, Sinkhorn).");
ABSL_FLAG(bool, causal_model, false,
          "Route as inside a causal (autoregressive) model: sets "
          "RouterDims.causal_model and RoutingContext.causal.");
ABSL_FLAG(uint64_t, seed, 0, "Seeds torch's global generator (random routers, parameter init).");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Routes a batch of tokens with a registered router, file to file:\n"
      "  route --router='name: \"similarity_aware\" top_k: 2' "
      "--input=IN.pt --output=OUT.pt\n"
      "File formats: routers/README.md.");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = moelab::RunRouteTool({
      .router_text = absl::GetFlag(FLAGS_router),
      .input_path = absl::GetFlag(FLAGS_input),
      .output_path = absl::GetFlag(FLAGS_output),
      .num_experts = absl::GetFlag(FLAGS_num_experts),
      .training = absl::GetFlag(FLAGS_training),
      .causal_model = absl::GetFlag(FLAGS_causal_model),
      .seed = absl::GetFlag(FLAGS_seed),
  });
  if (!status.ok()) {
    fprintf(stderr, "route: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
