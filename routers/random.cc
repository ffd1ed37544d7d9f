#include "routers/random.h"

#include <ATen/ATen.h>

#include <limits>
#include <memory>
#include <tuple>

namespace moelab {

RandomRouter::RandomRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec),
      fixed_per_token_(spec.random().fixed_per_token()),
      num_experts_(dims.num_experts),
      top_k_(WholeTopK(spec)),
      table_(dims.num_experts, WholeTopK(spec)) {
  if (fixed_per_token_) {
    salt_ =
        register_buffer("salt", at::randint(std::numeric_limits<int64_t>::max(), {}, at::kLong));
  }
}

RoutingDecision RandomRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  const int64_t batch = hidden.size(0), tokens = hidden.size(1);
  if (fixed_per_token_) {
    TORCH_CHECK(context.token_ids.defined(),
                "random router (fixed_per_token): the model must pass "
                "context.token_ids");
    const auto salt = static_cast<uint64_t>(salt_.item<int64_t>());
    return FixedAssignmentDecision(spec_, table_.Lookup(context.token_ids, salt), num_experts_);
  }
  // The top-k of i.i.d. uniform keys is a uniformly random k-subset.
  at::Tensor keys = at::rand({batch, tokens, num_experts_}, hidden.options().dtype(at::kFloat));
  return FixedAssignmentDecision(spec_, std::get<1>(at::topk(keys, top_k_, -1)), num_experts_);
}

namespace {

MOELAB_REGISTER_ROUTER(
    "random",
    {.options = RouterSpec::kRandom,
     .description = "k uniformly random experts per token, redrawn each "
                    "forward or fixed per token id; weight 1/k",
     .resolve =
         [](RouterSpec* spec, const RouterDims&) {
           spec->mutable_random();  // shows fixed_per_token in the spec
         },
     .validate = [](const RouterSpec& spec, const RouterDims& dims) -> absl::Status {
       return CheckWholeTopK(spec, dims);
     },
     .create = [](const RouterSpec& spec, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<RandomRouter>(spec, dims);
     }});

}  // namespace
}  // namespace moelab
