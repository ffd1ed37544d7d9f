#ifndef MOELAB_CORE_DATASET_H_
#define MOELAB_CORE_DATASET_H_

// The dataset contract. Datasets are plugins registered by name with
// MOELAB_REGISTER_DATASET; loaders live in core/data/.
//
// Example (hypothetical; core/data/token_stream_dataset.h is the real one):
// fixed-length token sequences held in memory:
//
//   class InMemoryLm : public Dataset {
//    public:
//     const DatasetInfo& info() const override { return info_; }  // task, vocab, T
//     int64_t NumExamples(Split split) const override { return tokens_[split].size(0); }
//     Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
//                    uint64_t seed) const override {
//       // Training: example order permuted by (seed, epoch); evaluation: in order.
//       const std::vector<int64_t> rows = Rows(split, batch_size, index, epoch, seed);
//       return GetExamples(split, rows);
//     }
//     Batch GetExamples(Split split, const std::vector<int64_t>& rows) const override {
//       at::Tensor seq = tokens_[split].index_select(0, at::tensor(rows));  // [B, T + 1]
//       return {seq.slice(1, 0, -1), seq.slice(1, 1)};    // inputs, next tokens
//     }
//   };
//
//   MOELAB_REGISTER_DATASET("in_memory_lm",
//       {.description = "token sequences from a .pt file",
//        .resolve = ..., .validate = ...,   // errors name the field and file
//        .load = [](const DatasetSpec& spec)
//            -> absl::StatusOr<std::unique_ptr<Dataset>> { return LoadInMemoryLm(spec); },
//        .task = kLanguageModelingTask});
//
// plus its library (alwayslink = 1) in //core/data:all_datasets.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/registry.h"
#include "proto/experiment.pb.h"

namespace moelab {

enum class Split { kTrain, kValid, kTest };

const char* SplitName(Split split);

struct DatasetInfo {
  // The name of the task plugin (core/task.h) the examples pose, e.g.
  // kLanguageModelingTask from core/tasks/language_modeling_name.h.
  std::string task;
  // Language modelling.
  int64_t vocab_size = 0;
  int64_t sequence_length = 0;
  // Id of "<unk>" (or -1); token corruptions never produce it.
  int64_t unk_id = -1;
  // Image classification: [C, H, W] of one example after preprocessing.
  int64_t num_classes = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  // Mean and std used to normalise pixels (per channel), so corruptions can
  // be applied in pixel space and renormalised.
  std::vector<float> pixel_mean;
  std::vector<float> pixel_std;
};

struct Batch {
  // LM: [B, T] int64 token ids. Vision: [B, C, H, W] float, normalised.
  at::Tensor inputs;
  // LM: [B, T] int64 next-token ids. Vision: [B] int64 class ids.
  at::Tensor targets;
};

// `batch` on `device` (the batch itself when the device is the CPU).
Batch ToDevice(const Batch& batch, const c10::Device& device);

class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual const DatasetInfo& info() const = 0;

  // Examples (LM: sequences of info().sequence_length tokens) in `split`.
  virtual int64_t NumExamples(Split split) const = 0;

  // Batches per epoch of `batch_size`; a trailing partial batch is dropped
  // for training and kept for evaluation.
  int64_t NumBatches(Split split, int64_t batch_size) const;

  // Batch `index` (0 <= index < NumBatches) of `epoch`. Deterministic in
  // (split, batch_size, index, epoch, seed): the training split is shuffled
  // and augmented with a permutation drawn from (seed, epoch), evaluation
  // splits are never shuffled. Random access is what makes an interrupted
  // epoch resumable and a probe set fixed.
  virtual Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
                         uint64_t seed) const = 0;

  // The examples at `indices` of an evaluation split, in that order.
  virtual Batch GetExamples(Split split, const std::vector<int64_t>& indices) const = 0;

  // Trains on a fixed subset of `examples` training examples, the same for
  // every seed (DatasetSpec.train_subset_examples; 0: the whole split).
  // LoadDataset calls it once, before any batch; afterwards
  // NumExamples(kTrain) is the subset's size. The datasets in core/data do it
  // through ExampleOrder::SetTrainSubset. This default supports only 0, so a
  // plugin that does not implement it fails with a clear error.
  virtual absl::Status SetTrainSubset(int64_t examples);
};

struct DatasetRegistration {
  // The field of DatasetSpec's options oneof this dataset reads (e.g.
  // DatasetSpec::kSotu); OPTIONS_NOT_SET when it takes none. Another
  // dataset's options are refused for it (core/plugin_options.h).
  DatasetSpec::OptionsCase options = DatasetSpec::OPTIONS_NOT_SET;
  std::string description;
  // Fills documented defaults into the options in place. May be empty.
  std::function<void(DatasetSpec*)> resolve;
  // Checks a resolved spec, including that its files exist; errors name
  // the field and the file.
  std::function<absl::Status(const DatasetSpec&)> validate;
  // Reads and prepares the data; errors name the file and what was wrong.
  std::function<absl::StatusOr<std::unique_ptr<Dataset>>(const DatasetSpec&)> load;
  // The task its loaded datasets' info().task names.
  std::string task;
};

Registry<DatasetRegistration>& DatasetRegistry();

// Fills the dataset's defaults (registration.resolve), unless the spec
// holds another dataset's options, which ValidateDatasetSpec refuses.
void ResolveDatasetSpec(const DatasetRegistration& registration, DatasetSpec* spec);

// Refuses another dataset's options, then runs registration.validate.
absl::Status ValidateDatasetSpec(const DatasetRegistration& registration, const DatasetSpec& spec);

// Looks the dataset up by spec.name, validates and loads it.
absl::StatusOr<std::unique_ptr<Dataset>> LoadDataset(const DatasetSpec& spec);

// Root of the packaged-data cache: $MOELAB_DATA_DIR, else
// ~/.cache/moelab-data (where third_party/setup.sh unpacks data).
std::string DataCacheDir();

}  // namespace moelab

#define MOELAB_REGISTER_DATASET(name, ...)                                        \
  static const bool MOELAB_REGISTRY_CONCAT(kMoelabDatasetRegistered_, __LINE__) = \
      ::moelab::DatasetRegistry().Register(name, ::moelab::DatasetRegistration __VA_ARGS__)

#endif  // MOELAB_CORE_DATASET_H_
