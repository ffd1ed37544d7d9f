// Replays the spec fuzzer's corpus (experiments/testdata/spec_fuzz_corpus)
// and every spec and table spec in the repository through the fuzz target
// (experiments/spec_fuzzer.cc), so whatever the fuzzer once found stays
// fixed: each input must return, with no exception escaping.

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::filesystem::path> Inputs() {
  std::vector<std::filesystem::path> inputs;
  for (const char* dir : {"experiments/testdata/spec_fuzz_corpus", "experiments/specs"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
      if (entry.is_regular_file()) inputs.push_back(entry.path());
    }
  }
  return inputs;
}

int Replay(const std::string& text) {
  return LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

TEST(SpecFuzzerCorpusTest, EveryInputReturnsWithoutAnException) {
  const std::vector<std::filesystem::path> inputs = Inputs();
  ASSERT_GE(inputs.size(), 10u) << "the corpus and the repository's specs are data of this test";
  for (const std::filesystem::path& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_NO_THROW(EXPECT_EQ(Replay(text.str()), 0)) << path;
  }
}

TEST(SpecFuzzerCorpusTest, EdgeInputsReturn) {
  for (const std::string& text :
       {std::string(), std::string(1, '\0'), std::string("router {"), std::string(100000, '{'),
        std::string("name: \"\\xff\\xfe\""),
        std::string("dataset { name: \"sotu_lm\" train_subset_examples: -2147483648 }")}) {
    EXPECT_NO_THROW(EXPECT_EQ(Replay(text), 0)) << text.substr(0, 40);
  }
}

}  // namespace
