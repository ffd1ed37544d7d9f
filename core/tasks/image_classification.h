#ifndef MOELAB_CORE_TASKS_IMAGE_CLASSIFICATION_H_
#define MOELAB_CORE_TASKS_IMAGE_CLASSIFICATION_H_

// The image-classification task (kImageClassificationTask): one label per
// image, reported as top-1 accuracy; it adds no evaluation of its own.

#include "core/task.h"
#include "core/tasks/image_classification_name.h"

namespace moelab {

class ImageClassification : public Task {
 public:
  ThroughputUnit Unit() const override;
  std::string ValidFigureName() const override { return "acc"; }
  double ValidFigure(const EpochMetrics& epoch) const override;
  Headline CorruptedHeadline(const CorruptedMetrics& corrupted) const override;
  std::string FormatFinal(const RunResult& result) const override;
};

}  // namespace moelab

#endif  // MOELAB_CORE_TASKS_IMAGE_CLASSIFICATION_H_
