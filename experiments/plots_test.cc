#include "experiments/plots.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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
  const absl::Status status = PlotLines(png, "fluctuation_top1 per epoch", "epoch", "top_1 (%)",
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

// A long title is broken into lines (gnuplot would centre one long line and
// clip it at the image's edge), and epochs get whole-number ticks.
TEST(PlotsTest, WrapsLongTitlesAndTicksWholeEpochs) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string png = std::string(tmp != nullptr ? tmp : "/tmp") + "/long_title.png";
  const std::string title =
      "Graph of tokens, language modelling: SMoE vs Similarity-Aware vs "
      "Attention-Aware: routing fluctuation per epoch";
  ASSERT_TRUE(PlotLines(png, title, "epoch", "%", {Series{"a", {{2, 60}, {3, 30}}}}).ok());
  std::ifstream script(png.substr(0, png.size() - 4) + ".gp");
  std::stringstream text;
  text << script.rdbuf();
  EXPECT_NE(text.str().find("set title \"Graph of tokens, language modelling: SMoE vs\\n"
                            "Similarity-Aware vs Attention-Aware: routing fluctuation per\\n"
                            "epoch\""),
            std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("set xtics 1\n"), std::string::npos);
}

}  // namespace
}  // namespace moelab
