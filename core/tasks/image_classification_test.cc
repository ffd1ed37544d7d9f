#include "core/tasks/image_classification.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>

#include "core/dataset.h"
#include "core/task.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

TEST(ImageClassificationTest, IsRegisteredAndReportsAccuracy) {
  DatasetInfo info;
  info.task = kImageClassificationTask;
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(info);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->Unit().per_example, 1);
  EXPECT_EQ((*task)->Unit().name, "images");

  EpochMetrics epoch;
  epoch.set_valid_loss(0.5);
  epoch.set_valid_accuracy(0.875);
  (*task)->CompleteEpoch(&epoch);
  EXPECT_EQ(epoch.valid_perplexity(), 0) << "no perplexity for images";
  EXPECT_EQ((*task)->ValidHeadline(epoch).name, "acc");
  EXPECT_EQ((*task)->ValidHeadline(epoch).value, 0.875);

  RunResult result;
  result.mutable_final()->set_valid_accuracy(0.884);
  result.mutable_final()->set_test_accuracy(0.88);
  EXPECT_EQ((*task)->FormatFinal(result), "valid accuracy 88.40%  test accuracy 88.00%\n");
}

TEST(TaskRegistryTest, AnUnknownTaskListsTheRegisteredOnes) {
  DatasetInfo info;
  info.task = "speech";
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(info);
  ASSERT_FALSE(task.ok());
  EXPECT_THAT(task.status().message(), HasSubstr("unknown task 'speech'"));
  EXPECT_THAT(task.status().message(), HasSubstr(kImageClassificationTask));
  EXPECT_THAT(task.status().message(), HasSubstr(kLanguageModelingTask));
}

}  // namespace
}  // namespace moelab
