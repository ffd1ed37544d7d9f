#include "experiments/plots.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace moelab {
namespace {

// Underscores are escaped in labels (gnuplot's enhanced text would read a
// subscript) but must reach the file name untouched.
TEST(PlotsTest, WritesAPngWhoseNameHasUnderscores) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string png =
      std::string(tmp != nullptr ? tmp : "/tmp") + "/graph_of_tokens_fluctuation.png";
  const absl::Status status =
      PlotLines(png, "fluctuation_top1 per epoch", "epoch", "top_1 (%)",
                {Series{"token_choice", {{2, 60}, {3, 30}, {4, 15}}},
                 Series{"similarity_aware", {{2, 62}, {3, 31}, {4, 14}}}});
  ASSERT_TRUE(status.ok()) << status;
  std::ifstream file(png, std::ios::binary);
  ASSERT_TRUE(file.good()) << png;
  char magic[4] = {};
  file.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  for (const auto& entry : std::filesystem::directory_iterator(tmp != nullptr ? tmp : "/tmp")) {
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
  }
}

}  // namespace
}  // namespace moelab
