#include "core/model.h"

#include "absl/strings/str_cat.h"

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
  if (absl::Status status = (*entry)->validate(spec.model()); !status.ok()) {
    return status;
  }
  return (*entry)->create(spec, info);
}

}  // namespace moelab
