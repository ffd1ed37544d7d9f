#include "core/tasks/image_classification.h"

#include <memory>

#include "absl/strings/str_format.h"

namespace moelab {

ThroughputUnit ImageClassification::Unit() const {
  return {.label = "img", .name = "images", .per_example = 1};
}

double ImageClassification::ValidFigure(const EpochMetrics& epoch) const {
  return epoch.valid_accuracy();
}

Headline ImageClassification::CorruptedHeadline(const CorruptedMetrics& corrupted) const {
  return {.name = "accuracy", .value = corrupted.accuracy()};
}

std::string ImageClassification::FormatFinal(const RunResult& result) const {
  const FinalMetrics& f = result.final();
  std::string out = absl::StrFormat("valid accuracy %.2f%%", 100 * f.valid_accuracy());
  if (f.test_accuracy() > 0) {
    absl::StrAppendFormat(&out, "  test accuracy %.2f%%", 100 * f.test_accuracy());
  }
  return out + "\n";
}

MOELAB_REGISTER_TASK(kImageClassificationTask,
                     {.description = "one label per image, reported as top-1 accuracy",
                      .inputs = TaskInputs::kImages,
                      .create = [](const DatasetInfo&) -> std::unique_ptr<Task> {
                        return std::make_unique<ImageClassification>();
                      }});

}  // namespace moelab
