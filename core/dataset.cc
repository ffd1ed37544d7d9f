#include "core/dataset.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/plugin_options.h"

namespace moelab {

const char* SplitName(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kValid:
      return "valid";
    case Split::kTest:
      return "test";
  }
  return "?";
}

Batch ToDevice(const Batch& batch, const c10::Device& device) {
  if (device.is_cpu()) return batch;
  return Batch{batch.inputs.to(device), batch.targets.to(device)};
}

int64_t Dataset::NumBatches(Split split, int64_t batch_size) const {
  const int64_t examples = NumExamples(split);
  if (split == Split::kTrain) return examples / batch_size;
  return (examples + batch_size - 1) / batch_size;
}

Registry<DatasetRegistration>& DatasetRegistry() {
  static auto* registry = new Registry<DatasetRegistration>("dataset");
  return *registry;
}

void ResolveDatasetSpec(const DatasetRegistration& registration, DatasetSpec* spec) {
  if (!registration.resolve || HoldsOtherPluginsOptions(*spec, registration.options)) return;
  registration.resolve(spec);
}

absl::Status ValidateDatasetSpec(const DatasetRegistration& registration, const DatasetSpec& spec) {
  if (absl::Status status = CheckOwnOptions(spec, "dataset", spec.name(), registration.options);
      !status.ok()) {
    return status;
  }
  return registration.validate(spec);
}

absl::StatusOr<std::unique_ptr<Dataset>> LoadDataset(const DatasetSpec& spec) {
  absl::StatusOr<const DatasetRegistration*> entry = DatasetRegistry().Find(spec.name());
  if (!entry.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("dataset.name: ", entry.status().message()));
  }
  if (absl::Status status = ValidateDatasetSpec(**entry, spec); !status.ok()) {
    return status;
  }
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = (*entry)->load(spec);
  if (!dataset.ok()) return dataset.status();
  if (absl::Status status = (*dataset)->SetTrainSubset(spec.train_subset_examples());
      !status.ok()) {
    return status;
  }
  return dataset;
}

absl::Status Dataset::SetTrainSubset(int64_t examples) {
  if (examples == 0) return absl::OkStatus();
  return absl::UnimplementedError(
      "dataset.train_subset_examples: this dataset plugin does not support training subsets");
}

std::string DataCacheDir() {
  if (const char* dir = std::getenv("MOELAB_DATA_DIR"); dir && *dir) {
    return dir;
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home && *home ? home : "/root", "/.cache/moelab-data");
}

}  // namespace moelab
