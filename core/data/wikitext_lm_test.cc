#include "core/data/wikitext_lm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/corpus.h"
#include "core/data/token_stream_dataset.h"
#include "core/dataset.h"

namespace moelab {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// The committed fixture: a short original article in the released WikiText
// format (leading spaces, " = Heading = " lines, blank " " lines, <unk>,
// @.@ and @,@).
std::string FixtureDir() {
  return absl::StrCat(std::getenv("TEST_SRCDIR"), "/", std::getenv("TEST_WORKSPACE"),
                      "/core/data/testdata/wikitext");
}

std::string MakeDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/wikitext_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

WikiTextOptions Options(const std::string& dir, int sequence_length) {
  WikiTextOptions options;
  options.set_data_dir(dir);
  options.set_sequence_length(sequence_length);
  return options;
}

template <typename T>
std::vector<T> Prefix(const std::vector<T>& v, size_t n) {
  return std::vector<T>(v.begin(), v.begin() + n);
}

// Expected values from the reference loader, run with Python on the
// fixture: tokens = sum(line.split() + ['<eos>'] for line in file); the
// vocabulary ['<unk>', '<eos>'] + train words sorted by (-count, bytes).
TEST(WikiTextLmTest, FixtureMatchesTheReferenceLoader) {
  auto dataset = LoadWikiText(Options(FixtureDir(), 8));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const TokenizedCorpus& corpus = (*dataset)->corpus();
  EXPECT_EQ(corpus.split(Split::kTrain).size(), 707u);
  EXPECT_EQ(corpus.split(Split::kValid).size(), 127u);
  EXPECT_EQ(corpus.split(Split::kTest).size(), 108u);
  EXPECT_EQ(corpus.vocab_size, 281);
  EXPECT_THAT(Prefix(corpus.words, 10),
              ElementsAre("<unk>", "<eos>", "the", "a", ".", ",", "and", "of", "=", "was"));
  EXPECT_THAT(Prefix(corpus.split(Split::kTrain), 12),
              ElementsAre(1, 8, 48, 52, 50, 8, 1, 1, 48, 52, 50, 16));
  EXPECT_THAT(Prefix(corpus.split(Split::kValid), 12),
              ElementsAre(1, 8, 0, 0, 0, 8, 1, 1, 0, 0, 0, 16));
  EXPECT_NEAR((*dataset)->UnigramPerplexity(Split::kValid), 134.22928221518603, 1e-9);
  EXPECT_NEAR((*dataset)->UnigramPerplexity(Split::kTest), 113.19110716898673, 1e-9);
  EXPECT_EQ((*dataset)->NumExamples(Split::kValid), (127 - 1) / 8);
}

TEST(WikiTextLmTest, LinesBlankLinesUnkAndUnicodeSpaces) {
  const std::string dir = MakeDir("lines");
  // "\u00a0" (no-break space) separates tokens, as Python's str.split() does.
  WriteFile(dir + "/wiki.train.tokens", " = A = \n \n b a <unk> a\u00a0c \n\nb a");
  WriteFile(dir + "/wiki.valid.tokens", " a z <unk> \n");
  WriteFile(dir + "/wiki.test.tokens", "c\tb\n");
  auto dataset = LoadWikiText(Options(dir, 1));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const TokenizedCorpus& corpus = (*dataset)->corpus();
  // Train counts: <eos> 5, a 3, = 2, b 2, A 1, c 1, <unk> 1.
  EXPECT_THAT(corpus.words, ElementsAre("<unk>", "<eos>", "a", "=", "b", "A", "c"));
  EXPECT_THAT(corpus.split(Split::kTrain),
              ElementsAreArray({3, 5, 3, 1, 1, 4, 2, 0, 2, 6, 1, 1, 4, 2, 1}));
  EXPECT_THAT(corpus.split(Split::kValid), ElementsAre(2, 0, 0, 1));
  EXPECT_THAT(corpus.split(Split::kTest), ElementsAre(6, 4, 1));
}

TEST(WikiTextLmTest, BatchesAreTheSharedTokenStreamBatches) {
  DatasetSpec spec;
  spec.set_name("wikitext_lm");
  *spec.mutable_wikitext() = Options(FixtureDir(), 16);
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadDataset(spec);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const auto* stream = dynamic_cast<const TokenStreamDataset*>(dataset->get());
  ASSERT_NE(stream, nullptr);
  const std::vector<int32_t>& valid = stream->corpus().split(Split::kValid);
  Batch batch = (*dataset)->GetBatch(Split::kValid, 4, 1, 0, 0);
  ASSERT_EQ(batch.inputs.size(0), 3);  // 7 examples: 4 + 3
  const at::Tensor inputs = batch.inputs.contiguous();
  const at::Tensor targets = batch.targets.contiguous();
  for (int64_t b = 0; b < 3; ++b) {
    for (int64_t t = 0; t < 16; ++t) {
      const int64_t position = (4 + b) * 16 + t;
      EXPECT_EQ(inputs[b][t].item<int64_t>(), valid[position]);
      EXPECT_EQ(targets[b][t].item<int64_t>(), valid[position + 1]);
    }
  }
  Batch train1 = (*dataset)->GetBatch(Split::kTrain, 4, 0, 3, 7);
  Batch train2 = (*dataset)->GetBatch(Split::kTrain, 4, 0, 3, 7);
  EXPECT_TRUE(train1.inputs.equal(train2.inputs));
}

TEST(WikiTextLmTest, FileErrorsNameTheFile) {
  const std::string dir = MakeDir("errors");
  WriteFile(dir + "/wiki.train.tokens", " a b c d e f \n");
  WriteFile(dir + "/wiki.test.tokens", " a b c d e f \n");
  auto dataset = LoadWikiText(Options(dir, 2));
  ASSERT_FALSE(dataset.ok());
  EXPECT_EQ(dataset.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dataset.status().message(), HasSubstr(dir + "/wiki.valid.tokens: cannot open"));

  WriteFile(dir + "/wiki.valid.tokens", " \n\n \n");
  dataset = LoadWikiText(Options(dir, 2));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr(dir + "/wiki.valid.tokens: empty corpus"));

  WriteFile(dir + "/wiki.valid.tokens", " a b \n");
  dataset = LoadWikiText(Options(dir, 3));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(),
              HasSubstr(dir + "/wiki.valid.tokens: the valid split has 3 tokens"));
  EXPECT_TRUE(LoadWikiText(Options(dir, 2)).ok());
}

// Random bytes, Latin-1 text or NUL bytes in a token file are refused with
// the file and the first bad byte, instead of being split into tokens.
TEST(WikiTextLmTest, BinaryOrNonUtf8FilesAreRefused) {
  std::string random(4096, '\0');
  uint64_t state = 0x13198a2e03707344ull;
  for (char& b : random) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    b = static_cast<char>(state >> 56);
  }
  struct Case {
    std::string name;
    std::string bytes;
    std::string message;  // after "<path>: "
  };
  const Case cases[] = {
      {"latin1", " a b \n = Caf\xe9 = \n",
       "byte 12 (0xe9, line 2) is not valid UTF-8; expected UTF-8 text"},
      {"nul", std::string(" a b \n c\0d \n", 12),
       "contains NUL bytes (the first at byte 8, line 2); expected UTF-8 "
       "text"},
      {"random", random, "; expected UTF-8 text"},
  };
  for (const Case& c : cases) {
    const std::string dir = MakeDir("bad_" + c.name);
    WriteFile(dir + "/wiki.train.tokens", " a b c d e f \n");
    WriteFile(dir + "/wiki.valid.tokens", " a b c d e f \n");
    WriteFile(dir + "/wiki.test.tokens", c.bytes);
    auto dataset = LoadWikiText(Options(dir, 2));
    ASSERT_FALSE(dataset.ok()) << c.name;
    EXPECT_EQ(dataset.status().code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_THAT(std::string(dataset.status().message()),
                ::testing::StartsWith(dir + "/wiki.test.tokens: "))
        << c.name;
    EXPECT_THAT(dataset.status().message(), HasSubstr(c.message)) << c.name;
  }
}

// UTF-8 with 2-, 3- and 4-byte characters loads; they stay in their tokens.
TEST(WikiTextLmTest, MultibyteUtf8Loads) {
  const std::string dir = MakeDir("multibyte");
  const std::string text =
      " = Caf\xc3\xa9 = \n \xe6\x97\xa5\xe6\x9c\xac Caf\xc3\xa9 "
      "\xf0\x9f\x98\x80 \xe2\x80\x94 \n";
  for (const char* file : {"/wiki.train.tokens", "/wiki.valid.tokens", "/wiki.test.tokens"}) {
    WriteFile(dir + file, text);
  }
  auto dataset = LoadWikiText(Options(dir, 2));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::vector<std::string>& words = (*dataset)->corpus().words;
  for (const std::string word :
       {"Caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\x98\x80", "\xe2\x80\x94"}) {
    EXPECT_NE(std::find(words.begin(), words.end(), word), words.end()) << word;
  }
}

TEST(WikiTextLmTest, ResolveAndValidate) {
  const auto* entry = *DatasetRegistry().Find("wikitext_lm");
  DatasetSpec spec;
  spec.set_name("wikitext_lm");
  entry->resolve(&spec);
  ASSERT_TRUE(spec.has_wikitext());
  EXPECT_EQ(spec.wikitext().sequence_length(), 256);
  EXPECT_THAT(entry->validate(spec).message(), HasSubstr("dataset.wikitext.data_dir: must be set"));

  spec.mutable_wikitext()->set_data_dir("/nonexistent/wt103");
  EXPECT_THAT(entry->validate(spec).message(),
              HasSubstr("dataset.wikitext.data_dir: directory not found: "
                        "'/nonexistent/wt103'"));

  const std::string dir = MakeDir("validate");
  WriteFile(dir + "/wiki.train.tokens", "a\n");
  WriteFile(dir + "/wiki.valid.tokens", "a\n");
  spec.mutable_wikitext()->set_data_dir(dir);
  absl::Status status = entry->validate(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("dataset.wikitext.data_dir: wiki.test.tokens not found "
                                          "in '" +
                                          dir + "'"));
  WriteFile(dir + "/wiki.test.tokens", "a\n");
  EXPECT_TRUE(entry->validate(spec).ok());
  spec.mutable_wikitext()->set_sequence_length(-1);
  EXPECT_THAT(entry->validate(spec).message(), HasSubstr("dataset.wikitext.sequence_length"));
}

}  // namespace
}  // namespace moelab
