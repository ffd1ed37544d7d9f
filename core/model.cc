#include "core/model.h"

#include "absl/strings/str_cat.h"
#include "core/plugin_options.h"

namespace moelab {

Registry<ModelRegistration>& ModelRegistry() {
  static auto* registry = new Registry<ModelRegistration>("model");
  return *registry;
}

absl::StatusOr<std::shared_ptr<Model>> CreateModel(const ExperimentSpec& spec,
                                                   const DatasetInfo& info) {
  absl::StatusOr<const ModelRegistration*> entry = ModelRegistry().Find(spec.model().name());
  if (!entry.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model.name: ", entry.status().message()));
  }
  if (absl::Status status = ValidateModelSpec(**entry, spec.model()); !status.ok()) {
    return status;
  }
  return (*entry)->create(spec, info);
}

absl::Status ResolveModelSpec(const ModelRegistration& registration, ModelSpec* spec) {
  if (absl::Status status = CheckOwnOptions(*spec, "model", spec->name(), registration.options);
      !status.ok()) {
    return status;
  }
  return registration.resolve ? registration.resolve(spec) : absl::OkStatus();
}

absl::Status ValidateModelSpec(const ModelRegistration& registration, const ModelSpec& spec) {
  if (absl::Status status = CheckOwnOptions(spec, "model", spec.name(), registration.options);
      !status.ok()) {
    return status;
  }
  return registration.validate(spec);
}

}  // namespace moelab
