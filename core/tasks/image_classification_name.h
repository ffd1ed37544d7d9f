#ifndef MOELAB_CORE_TASKS_IMAGE_CLASSIFICATION_NAME_H_
#define MOELAB_CORE_TASKS_IMAGE_CLASSIFICATION_NAME_H_

// The name of the image-classification task
// (core/tasks/image_classification.h), for datasets and models to state it
// without linking the task.

namespace moelab {

// One of DatasetInfo::num_classes labels per [C, H, W] image.
inline constexpr char kImageClassificationTask[] = "image_classification";

}  // namespace moelab

#endif  // MOELAB_CORE_TASKS_IMAGE_CLASSIFICATION_NAME_H_
