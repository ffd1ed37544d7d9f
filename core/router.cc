#include "core/router.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/plugin_options.h"

namespace moelab {

Registry<RouterRegistration>& RouterRegistry() {
  static auto* registry = new Registry<RouterRegistration>("router");
  return *registry;
}

absl::Status CheckTopK(const RouterSpec& spec, const RouterRegistration& registration,
                       const RouterDims& dims) {
  const double k = spec.top_k();
  if (!(k > 0) || !std::isfinite(k)) {
    return absl::InvalidArgumentError(absl::StrCat("router.top_k: must be > 0, got ", k));
  }
  if (!registration.fractional_top_k && k != std::floor(k)) {
    return absl::InvalidArgumentError(absl::StrCat("router.top_k: router '", spec.name(),
                                                   "' needs a whole number of experts, got ", k));
  }
  if (k > dims.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.top_k: must be <= the number of experts "
                     "(model.moe.num_experts = ",
                     dims.num_experts, "), got ", k));
  }
  return absl::OkStatus();
}

absl::Status CheckLoadBalanceConventions(const RouterSpec& spec) {
  if (!LoadBalanceCounting_IsValid(spec.load_balance_counting())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.load_balance_counting: unknown value ", spec.load_balance_counting()));
  }
  if (!LoadBalanceScores_IsValid(spec.load_balance_scores())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.load_balance_scores: unknown value ", spec.load_balance_scores()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Router>> CreateRouter(const RouterSpec& spec,
                                                     const RouterDims& dims) {
  absl::StatusOr<const RouterRegistration*> entry = RouterRegistry().Find(spec.name());
  if (!entry.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("router.name: ", entry.status().message()));
  }
  if (absl::Status status = ValidateRouterSpec(**entry, spec, dims); !status.ok()) {
    return status;
  }
  return (*entry)->create(spec, dims);
}

void ResolveRouterSpec(const RouterRegistration& registration, RouterSpec* spec,
                       const RouterDims& dims) {
  if (!registration.resolve || HoldsOtherPluginsOptions(*spec, registration.options)) return;
  registration.resolve(spec, dims);
}

absl::Status ValidateRouterSpec(const RouterRegistration& registration, const RouterSpec& spec,
                                const RouterDims& dims) {
  if (absl::Status status = CheckLoadBalanceConventions(spec); !status.ok()) return status;
  if (absl::Status status = CheckOwnOptions(spec, "router", spec.name(), registration.options);
      !status.ok()) {
    return status;
  }
  return registration.validate(spec, dims);
}

}  // namespace moelab
