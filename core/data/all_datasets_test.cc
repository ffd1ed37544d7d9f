// Linking //core/data:all_datasets, and naming no plugin, registers every
// dataset (each plugin library is alwayslink).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/dataset.h"
#include "core/tasks/image_classification_name.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

TEST(AllDatasetsTest, EveryPluginIsRegisteredWithItsTask) {
  EXPECT_THAT(DatasetRegistry().Names(),
              ::testing::IsSupersetOf(
                  {"fashion_mnist", "image_folder", "sotu_lm", "synthetic_lm", "wikitext_lm"}));
  for (const char* name : {"sotu_lm", "wikitext_lm", "synthetic_lm"}) {
    EXPECT_EQ((*DatasetRegistry().Find(name))->task, kLanguageModelingTask) << name;
  }
  for (const char* name : {"fashion_mnist", "image_folder"}) {
    EXPECT_EQ((*DatasetRegistry().Find(name))->task, kImageClassificationTask) << name;
  }
  for (const auto& [name, entry] : DatasetRegistry().entries()) {
    EXPECT_FALSE(entry.description.empty()) << name;
    EXPECT_TRUE(entry.resolve != nullptr) << name;
    EXPECT_TRUE(entry.validate != nullptr) << name;
    EXPECT_TRUE(entry.load != nullptr) << name;
  }
}

}  // namespace
}  // namespace moelab
