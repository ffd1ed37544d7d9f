// Test-only plugins, registered from a library that no test names: linking
// them with alwayslink is what makes them visible (core/registry_test.cc).

#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/router.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

// Sends every token to expert 0 with weight 1.
class FirstExpertRouter : public Router {
 public:
  explicit FirstExpertRouter(int64_t num_experts) : num_experts_(num_experts) {}

  RoutingDecision Route(const at::Tensor& hidden, const RoutingContext& context) override {
    RoutingDecision d;
    const int64_t batch = hidden.size(0), tokens = hidden.size(1);
    d.logits = at::zeros({batch, tokens, num_experts_}, hidden.options());
    d.gate_probs = d.logits + 1.0 / num_experts_;
    d.selected = at::zeros({batch, tokens, num_experts_}, hidden.options().dtype(at::kBool));
    d.selected.select(2, 0).fill_(true);
    d.combine_weights = d.selected.to(hidden.scalar_type());
    return d;
  }
  bool IsCausal(bool) const override { return true; }

 private:
  int64_t num_experts_;
};

MOELAB_REGISTER_ROUTER(
    "testing_first_expert",
    {.options = RouterSpec::kHash,
     .description = "test only: every token to expert 0",
     .validate = [](const RouterSpec&, const RouterDims&) { return absl::OkStatus(); },
     .create = [](const RouterSpec&, const RouterDims& dims) -> std::shared_ptr<Router> {
       return std::make_shared<FirstExpertRouter>(dims.num_experts);
     }});

MOELAB_REGISTER_MODEL("testing_lm",
                      {.description = "test only: a language model that cannot be built",
                       .resolve = [](ModelSpec* spec) -> absl::Status {
                         if (!spec->moe().has_num_experts())
                           spec->mutable_moe()->set_num_experts(4);
                         return absl::OkStatus();
                       },
                       .validate = [](const ModelSpec& spec) -> absl::Status {
                         if (spec.moe().num_experts() < 1) {
                           return absl::InvalidArgumentError(
                               absl::StrCat("model.moe.num_experts: must be >= 1, got ",
                                            spec.moe().num_experts()));
                         }
                         return absl::OkStatus();
                       },
                       .router_dims =
                           [](const ModelSpec& spec) {
                             return RouterDims{.model_dim = 8,
                                               .num_experts = spec.moe().num_experts(),
                                               .num_heads = 2,
                                               .causal_model = true};
                           },
                       .create = [](const ExperimentSpec&,
                                    const DatasetInfo&) -> absl::StatusOr<std::shared_ptr<Model>> {
                         return absl::UnimplementedError("testing_lm cannot be built");
                       },
                       .task = kLanguageModelingTask});

MOELAB_REGISTER_DATASET(
    "testing_text_dir",
    {.options = DatasetSpec::kWikitext,
     .description = "test only: checks that wikitext.data_dir exists",
     .validate = [](const DatasetSpec& spec) -> absl::Status {
       if (!std::filesystem::is_directory(spec.wikitext().data_dir())) {
         return absl::NotFoundError(absl::StrCat(
             "dataset.wikitext.data_dir: directory not found: '", spec.wikitext().data_dir(), "'"));
       }
       return absl::OkStatus();
     },
     .load = [](const DatasetSpec&) -> absl::StatusOr<std::unique_ptr<Dataset>> {
       return absl::UnimplementedError("testing_text_dir cannot be loaded");
     },
     .task = kLanguageModelingTask});

}  // namespace
}  // namespace moelab
