#ifndef MOELAB_CORE_TASK_H_
#define MOELAB_CORE_TASK_H_

// The task contract: what differs between language modelling, image
// classification and any further task, so that the run loop
// (core/trainer.cc) names none of them.
//
// A dataset states the task its examples pose (DatasetInfo::task and
// DatasetRegistration::task), a model the task it solves
// (ModelRegistration::task); both name a task plugin registered with
// MOELAB_REGISTER_TASK. The run loop measures what every task has, the loss
// and the accuracy of the argmax prediction over the split's targets, and
// the task turns them into its own figures (perplexity, say) and adds the
// evaluations only it has (a baseline, generation-time evaluation).
//
// Example: text classification, one label per sequence, reported as
// accuracy. Its name goes in a header of its own, so that datasets can name
// the task without linking it:
//
//   // core/tasks/text_classification_name.h
//   inline constexpr char kTextClassificationTask[] = "text_classification";
//
//   // core/tasks/text_classification.cc
//   class TextClassification : public Task {
//    public:
//     ThroughputUnit Unit() const override {
//       return {.label = "seq", .name = "sequences", .per_example = 1};
//     }
//     std::string ValidFigureName() const override { return "acc"; }
//     double ValidFigure(const EpochMetrics& epoch) const override {
//       return epoch.valid_accuracy();
//     }
//     Headline CorruptedHeadline(const CorruptedMetrics& c) const override {
//       return {.name = "accuracy", .value = c.accuracy()};
//     }
//     std::string FormatFinal(const RunResult& result) const override {
//       return absl::StrFormat("valid accuracy %.2f%%\n",
//                              100 * result.final().valid_accuracy());
//     }
//   };
//   MOELAB_REGISTER_TASK(kTextClassificationTask,
//                        {.description = "one label per token sequence",
//                         .inputs = TaskInputs::kTokens,
//                         .create = [](const DatasetInfo&) -> std::unique_ptr<Task> {
//                           return std::make_unique<TextClassification>();
//                         }});
//
// with an alwayslink BUILD target in core/tasks/ listed in
// //core/tasks:all_tasks (which //core/data:all_datasets and the binaries'
// plugin list link). A spec whose dataset names a task that is not linked
// fails validation.

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/dataset.h"
#include "core/model.h"
#include "core/registry.h"
#include "proto/experiment.pb.h"
#include "proto/result.pb.h"

namespace moelab {

// What a run counts its throughput in.
struct ThroughputUnit {
  // Progress lines: "tok", "img".
  std::string label;
  // Epoch lines: "tokens", "images".
  std::string name;
  // Units in one example (a sequence of 64 tokens: 64).
  int64_t per_example = 1;
};

// The figure a run prints beside its loss: {"ppl", 308.13}, {"acc", 0.884}.
struct Headline {
  std::string name;
  double value = 0;
};

// What a task's own final evaluations may use.
struct TaskEvaluationContext {
  Model& model;
  const Dataset& data;
  const EvaluationSpec& evaluation;
  int64_t batch_size = 1;
  c10::Device device = c10::Device(c10::kCPU);
  // A router of this causal model routes a token with later tokens in view
  // (RunResult.non_causal_router_in_causal_model).
  bool leaks_future = false;
};

class Task {
 public:
  virtual ~Task() = default;

  virtual ThroughputUnit Unit() const = 0;

  // Adds the task's figures to an epoch record whose task-free fields
  // (valid_loss, valid_accuracy, examples_per_s) are filled.
  virtual void CompleteEpoch(EpochMetrics* epoch) const {}
  // Likewise for the final record (valid_* loss and accuracy, and test_*
  // when evaluation.test_at_end) and for an evaluation on corrupted inputs
  // (loss, accuracy).
  virtual void CompleteFinal(const EvaluationSpec& evaluation, FinalMetrics* final_metrics) const {}
  virtual void CompleteCorrupted(CorruptedMetrics* corrupted) const {}

  // The evaluations only this task has, run once after the final
  // evaluation; errors name what failed.
  virtual absl::Status EvaluateFinal(const TaskEvaluationContext& context,
                                     FinalMetrics* final_metrics) const {
    return absl::OkStatus();
  }

  // What the run's log and summary print for an epoch's validation (named
  // ValidFigureName(): "ppl", "acc") and for a corrupted evaluation.
  virtual std::string ValidFigureName() const = 0;
  virtual double ValidFigure(const EpochMetrics& epoch) const = 0;
  Headline ValidHeadline(const EpochMetrics& epoch) const {
    return {.name = ValidFigureName(), .value = ValidFigure(epoch)};
  }
  virtual Headline CorruptedHeadline(const CorruptedMetrics& corrupted) const = 0;
  // The summary's lines on the final metrics (result.final()), each ending
  // in '\n'.
  virtual std::string FormatFinal(const RunResult& result) const = 0;
};

// What a task's examples are made of, which decides the input corruptions
// (EvaluationSpec.corruptions) that apply: token substitution and deletion
// to token ids, noise, blur, contrast and JPEG to images.
enum class TaskInputs { kTokens, kImages };

struct TaskRegistration {
  // One line for `run --list`.
  std::string description;
  TaskInputs inputs = TaskInputs::kTokens;
  // The task for a loaded dataset of it.
  std::function<std::unique_ptr<Task>(const DatasetInfo&)> create;
};

Registry<TaskRegistration>& TaskRegistry();

// The task that `info.task` names; an unknown name is an error listing the
// registered ones.
absl::StatusOr<std::unique_ptr<Task>> CreateTask(const DatasetInfo& info);

// The registration of the task named `name`; an unknown name is an error
// listing the registered ones.
absl::StatusOr<const TaskRegistration*> FindTask(absl::string_view name);

}  // namespace moelab

// Registers a task under `name`: MOELAB_REGISTER_TASK(kLanguageModelingTask,
// {.description = ..., .create = ...});
#define MOELAB_REGISTER_TASK(name, ...)                                        \
  static const bool MOELAB_REGISTRY_CONCAT(kMoelabTaskRegistered_, __LINE__) = \
      ::moelab::TaskRegistry().Register(name, ::moelab::TaskRegistration __VA_ARGS__)

#endif  // MOELAB_CORE_TASK_H_
