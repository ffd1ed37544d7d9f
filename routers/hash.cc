#include "routers/hash.h"

#include <ATen/ATen.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace moelab {

HashRouter::HashRouter(const RouterSpec& spec, const RouterDims& dims)
    : spec_(spec),
      salt_(spec.hash().salt()),
      num_experts_(dims.num_experts),
      table_(dims.num_experts, WholeTopK(spec)) {}

RoutingDecision HashRouter::Route(const at::Tensor& hidden, const RoutingContext& context) {
  TORCH_CHECK(context.token_ids.defined(), "hash router: the model must pass context.token_ids");
  TORCH_CHECK(context.token_ids.sizes() == hidden.sizes().slice(0, 2), "hash router: token_ids ",
              context.token_ids.sizes(), " do not match hidden ", hidden.sizes());
  return FixedAssignmentDecision(spec_, table_.Lookup(context.token_ids, salt_), num_experts_);
}

namespace {

MOELAB_REGISTER_ROUTER(
    "hash",
    {.options = RouterSpec::kHash,
     .description = "k fixed experts per token id from a salted splitmix64 "
                    "hash, weight 1/k (Roller et al., 2021)",
     .resolve =
         [](RouterSpec* spec, const RouterDims&) {
           spec->mutable_hash();  // shows the salt in the resolved spec
         },
     .validate = [](const RouterSpec& spec, const RouterDims& dims) -> absl::Status {
       return CheckWholeTopK(spec, dims);
     },
     .create = [](const RouterSpec& spec, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<HashRouter>(spec, dims);
     }});

}  // namespace
}  // namespace moelab
