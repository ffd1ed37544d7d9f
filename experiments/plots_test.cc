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

// The fluctuation curve: each line over a band of its own colour (the band
// drawn first), the y axis from 0, and a dashed line at the marked epoch.
TEST(PlotsTest, LinesWithBandsAndAMarkedEpoch) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string png = std::string(tmp != nullptr ? tmp : "/tmp") + "/t_fluctuation.png";
  const absl::Status status = PlotLinesWithBands(
      png, "T: top-1 fluctuation per epoch", "epoch", "top-1 fluctuation (%)",
      {BandSeries{"token_choice", {{2, 42, 37, 47}, {3, 33, 25.5, 40.5}, {4, 21, 18.5, 23.5}}},
       BandSeries{"similarity_aware", {{2, 22, 22, 22}, {3, 15, 15, 15}, {4, 11, 6.7, 15.3}}}},
      4, "paper's figure: the last two epochs");
  ASSERT_TRUE(status.ok()) << status;
  std::ifstream file(png, std::ios::binary);
  char magic[4] = {};
  file.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  std::ifstream script(png.substr(0, png.size() - 4) + ".gp");
  std::stringstream text;
  text << script.rdbuf();
  EXPECT_NE(text.str().find("$s0 << EOD\n2 42 37 47\n3 33 25.5 40.5\n4 21 18.5 23.5\nEOD\n"),
            std::string::npos)
      << text.str();
  // Up to 5% above the highest band edge (47).
  EXPECT_NE(text.str().find("set yrange [0:49.35]\n"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("set arrow 1 from 4, graph 0 to 4, graph 1 nohead dt 2"),
            std::string::npos);
  EXPECT_NE(text.str().find("$s0 using 1:3:4 with filledcurves lc 1 notitle, $s0 using 1:2 "
                            "with linespoints lw 2 lc 1 title \"token\\\\_choice\""),
            std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("$s1 using 1:3:4 with filledcurves lc 2 notitle"), std::string::npos);
}

}  // namespace
}  // namespace moelab
