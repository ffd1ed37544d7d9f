#include "core/data/sotu_lm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/corpus.h"
#include "core/data/token_stream_dataset.h"
#include "core/data/word_tokenizer.h"
#include "core/dataset.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::vector<std::string> Tokens(absl::string_view text) { return TokenizeProseToStrings(text); }

TEST(WordTokenizerTest, SplitsPunctuationAndMarksInWordConnectorsLikeWikiText) {
  EXPECT_THAT(Tokens("Fellow-Citizens of the Senate: In 1790, a loan of 3,000,000 "
                     "florins (at 4.5%) was made."),
              ElementsAreArray({"Fellow", "@-@", "Citizens", "of",   "the", "Senate", ":",   "In",
                                "1790",   ",",   "a",        "loan", "of",  "3",      "@,@", "000",
                                "@,@",    "000", "florins",  "(",    "at",  "4",      "@.@", "5",
                                "%",      ")",   "was",      "made", "."}));
  EXPECT_THAT(Tokens("1990-91 well- known -- x"),
              ElementsAre("1990", "@-@", "91", "well", "-", "known", "-", "-", "x"));
}

TEST(WordTokenizerTest, SplitsContractionsAsThePennTreebankDoes) {
  EXPECT_THAT(Tokens("It\u2019s good\u2014(applause)\u2014I\u2019m here; we don't, "
                     "can't and won't."),
              ElementsAreArray({"It", "'s",  "good", "\u2014", "(",   "applause", ")",   "\u2014",
                                "I",  "'m",  "here", ";",      "we",  "do",       "n't", ",",
                                "ca", "n't", "and",  "wo",     "n't", "."}));
  EXPECT_THAT(Tokens("Don't 'quoted' 1990's they'LL WE'RE you've he'd"),
              ElementsAreArray({"Do", "n't", "'", "quoted", "'", "1990", "'s", "they", "'LL", "WE",
                                "'RE", "you", "'ve", "he", "'d"}));
}

TEST(WordTokenizerTest, KeepsInitialismsAndInnerApostrophes) {
  EXPECT_THAT(
      Tokens("The U.S. and D.C. met Mr. O\u2019Brien at 9 o'clock in the "
             "states' \u201Ccapital\u201D, e.g. here."),
      ElementsAreArray({"The",     "U.S.", "and",     "D.C.", "met",  "Mr",     ".", "O'Brien",
                        "at",      "9",    "o'clock", "in",   "the",  "states", "'", "\"",
                        "capital", "\"",   ",",       "e.g.", "here", "."}));
}

TEST(WordTokenizerTest, HandlesLatinLettersSymbolsAndUnicodeSpaces) {
  EXPECT_THAT(Tokens("Se\u00f1or Pe\u00f1a\u2019s caf\u00e9:\t30\u00b0 "
                     "north\u00a0pole\r"),
              ElementsAre("Se\u00f1or", "Pe\u00f1a", "'s", "caf\u00e9", ":", "30", "\u00b0",
                          "north", "pole"));
  EXPECT_THAT(Tokens("a\xff"
                     "b"),
              ElementsAre("a", "\xff", "b"));
  EXPECT_TRUE(Tokens(" \t ").empty());
}

// A fresh directory under the test's temp dir.
std::string MakeDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/sotu_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

SotuOptions Options(const std::string& dir, int sequence_length) {
  SotuOptions options;
  options.set_data_dir(dir);
  options.set_valid_first_year(1990);
  options.set_test_first_year(2005);
  options.set_min_count(2);
  options.set_sequence_length(sequence_length);
  return options;
}

TEST(SotuLmTest, TinyCorpusGetsExactIds) {
  const std::string dir = MakeDir("tiny");
  WriteFile(dir + "/1800_a_x.txt", "The war ended. The peace began.");
  WriteFile(dir + "/1801_b_y.txt", "The peace held, and the war ended.\n");
  WriteFile(dir + "/1990_c_z.txt", "The war began.");
  WriteFile(dir + "/2005_d_w.txt", "Peace held.");
  WriteFile(dir + "/2005_d_w.json", "{\"ignored\": true}");
  auto dataset = LoadSotu(Options(dir, 2));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const TokenizedCorpus& corpus = (*dataset)->corpus();
  // Counts in train: The 3, . 3, ended 2, peace 2, war 2; began, held, ",",
  // and, the once (-> <unk>).
  EXPECT_THAT(corpus.words, ElementsAre("<unk>", "<eos>", ".", "The", "ended", "peace", "war"));
  EXPECT_THAT(corpus.split(Split::kTrain),
              ElementsAreArray({3, 6, 4, 2, 3, 5, 0, 2, 1,  // first address
                                3, 5, 0, 0, 0, 0, 6, 4, 2, 1}));
  EXPECT_THAT(corpus.split(Split::kValid), ElementsAre(3, 6, 0, 2, 1));
  // "Peace" is not "peace" (case is kept); "held" is rare in train.
  EXPECT_THAT(corpus.split(Split::kTest), ElementsAre(0, 0, 2, 1));
  EXPECT_EQ((*dataset)->info().vocab_size, 7);
  EXPECT_EQ((*dataset)->info().unk_id, 0);
  EXPECT_EQ((*dataset)->info().sequence_length, 2);
  EXPECT_EQ((*dataset)->NumExamples(Split::kTrain), 9);
  EXPECT_EQ((*dataset)->NumExamples(Split::kValid), 2);
  EXPECT_EQ((*dataset)->NumExamples(Split::kTest), 1);
}

TEST(SotuLmTest, SplitsByYearAtTheBoundaries) {
  const std::string dir = MakeDir("years");
  // An address of n words gives n + 1 tokens.
  WriteFile(dir + "/1989_a_x.txt", "x");
  WriteFile(dir + "/1990_b_x.txt", "x x");
  WriteFile(dir + "/2004_c_x.txt", "x x x");
  WriteFile(dir + "/2005_d_x.txt", "x x x x");
  const auto sizes = [&](int valid_first, int test_first) {
    SotuOptions options = Options(dir, 1);
    options.set_valid_first_year(valid_first);
    options.set_test_first_year(test_first);
    auto dataset = LoadSotu(options);
    EXPECT_TRUE(dataset.ok()) << dataset.status();
    std::vector<size_t> out;
    for (Split s : {Split::kTrain, Split::kValid, Split::kTest}) {
      out.push_back((*dataset)->corpus().split(s).size());
    }
    return out;
  };
  EXPECT_THAT(sizes(1990, 2005), ElementsAre(2, 3 + 4, 5));
  EXPECT_THAT(sizes(1991, 2005), ElementsAre(2 + 3, 4, 5));
  EXPECT_THAT(sizes(1990, 2004), ElementsAre(2, 3, 4 + 5));
}

TEST(SotuLmTest, CorpusErrorsNameTheFileOrDirectory) {
  const std::string empty = MakeDir("empty");
  auto dataset = LoadSotu(Options(empty, 2));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr(empty));
  EXPECT_THAT(dataset.status().message(), HasSubstr("no State of the Union"));

  const std::string misnamed = MakeDir("misnamed");
  WriteFile(misnamed + "/1800_a_x.txt", "Words here.");
  WriteFile(misnamed + "/notes.txt", "Not an address.");
  dataset = LoadSotu(Options(misnamed, 2));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr(misnamed + "/notes.txt"));

  const std::string blank = MakeDir("blank");
  WriteFile(blank + "/1800_a_x.txt", "Words here.");
  WriteFile(blank + "/1995_b_x.txt", " \n ");
  WriteFile(blank + "/2010_c_x.txt", "Words here.");
  dataset = LoadSotu(Options(blank, 2));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr(blank + "/1995_b_x.txt"));
  EXPECT_THAT(dataset.status().message(), HasSubstr("empty address"));

  const std::string no_valid = MakeDir("no_valid");
  WriteFile(no_valid + "/1800_a_x.txt", "Words here.");
  WriteFile(no_valid + "/2010_c_x.txt", "Words here.");
  dataset = LoadSotu(Options(no_valid, 2));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(),
              HasSubstr("no addresses for the valid split (years 1990-2004"));

  const std::string shorter = MakeDir("short");
  WriteFile(shorter + "/1800_a_x.txt", "Many words in the training part here.");
  WriteFile(shorter + "/1995_b_x.txt", "Few.");
  WriteFile(shorter + "/2010_c_x.txt", "Many words in the test part here.");
  dataset = LoadSotu(Options(shorter, 4));
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr("SOTU addresses 1995-1995 in '" + shorter));
  EXPECT_THAT(dataset.status().message(), HasSubstr("3 tokens"));
}

// Deterministic pseudo-random bytes (a 64-bit LCG's high bytes).
std::string RandomBytes(size_t n) {
  std::string bytes(n, '\0');
  uint64_t state = 0x243f6a8885a308d3ull;
  for (char& b : bytes) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    b = static_cast<char>(state >> 56);
  }
  return bytes;
}

// A directory of random bytes, Latin-1 text or text with NUL bytes is refused
// with the file and the first bad byte, instead of being tokenised.
TEST(SotuLmTest, BinaryOrNonUtf8AddressesAreRefused) {
  struct Case {
    std::string name;
    std::string bytes;
    std::string message;  // after "<path>: "
  };
  const Case cases[] = {
      {"latin1", "We met.\nThe caf\xe9 closed.",
       "byte 15 (0xe9, line 2) is not valid UTF-8; expected UTF-8 text"},
      {"nul", std::string("We met.\0\0\0The end.", 18),
       "contains NUL bytes (the first at byte 7, line 1); expected UTF-8 "
       "text"},
      {"random", RandomBytes(4096), "; expected UTF-8 text"},
  };
  for (const Case& c : cases) {
    const std::string dir = MakeDir("bad_" + c.name);
    WriteFile(dir + "/1800_a_x.txt", "Words here.");
    WriteFile(dir + "/1995_b_x.txt", c.bytes);
    WriteFile(dir + "/2010_c_x.txt", "Words here.");
    auto dataset = LoadSotu(Options(dir, 2));
    ASSERT_FALSE(dataset.ok()) << c.name;
    EXPECT_EQ(dataset.status().code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_THAT(std::string(dataset.status().message()),
                ::testing::StartsWith(dir + "/1995_b_x.txt: "))
        << c.name;
    EXPECT_THAT(dataset.status().message(), HasSubstr(c.message)) << c.name;
  }
}

// UTF-8 with 2-, 3- and 4-byte characters (and a byte-order mark) loads.
TEST(SotuLmTest, MultibyteUtf8AddressesLoad) {
  const std::string dir = MakeDir("multibyte");
  const std::string text =
      "\xef\xbb\xbf"
      "Caf\xc3\xa9 \xe2\x80\x9cna\xc3\xafve\xe2\x80\x9d "
      "\xe6\x97\xa5 \xf0\x9f\x98\x80 Caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80.";
  WriteFile(dir + "/1800_a_x.txt", text);
  WriteFile(dir + "/1995_b_x.txt", text);
  WriteFile(dir + "/2010_c_x.txt", text);
  auto dataset = LoadSotu(Options(dir, 2));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  const std::vector<std::string>& words = (*dataset)->corpus().words;
  // Each twice in the training address (min_count 2).
  for (const std::string word : {"Caf\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80"}) {
    EXPECT_NE(std::find(words.begin(), words.end(), word), words.end()) << word;
  }
}

DatasetSpec SotuSpec() {
  DatasetSpec spec;
  spec.set_name("sotu_lm");
  return spec;
}

TEST(SotuLmTest, ResolveFillsDocumentedDefaults) {
  const auto* entry = *DatasetRegistry().Find("sotu_lm");
  DatasetSpec spec = SotuSpec();
  entry->resolve(&spec);
  ASSERT_TRUE(spec.has_sotu());
  EXPECT_EQ(spec.sotu().data_dir(), DataCacheDir() + "/sotu/package/data");
  EXPECT_EQ(spec.sotu().valid_first_year(), 1990);
  EXPECT_EQ(spec.sotu().test_first_year(), 2005);
  EXPECT_EQ(spec.sotu().min_count(), 3);
  EXPECT_EQ(spec.sotu().sequence_length(), 64);
  EXPECT_EQ(entry->task, kLanguageModelingTask);

  spec.mutable_sotu()->set_sequence_length(16);
  entry->resolve(&spec);
  EXPECT_EQ(spec.sotu().sequence_length(), 16);
}

TEST(SotuLmTest, ValidateNamesTheField) {
  const auto* entry = *DatasetRegistry().Find("sotu_lm");
  DatasetSpec spec = SotuSpec();
  *spec.mutable_sotu() = Options("/nonexistent/sotu", 8);
  absl::Status status = entry->validate(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("dataset.sotu.data_dir: directory not found: "
                                          "'/nonexistent/sotu'"));

  spec.mutable_sotu()->set_data_dir(MakeDir("validate"));
  EXPECT_TRUE(entry->validate(spec).ok());
  spec.mutable_sotu()->set_test_first_year(1990);
  EXPECT_THAT(entry->validate(spec).message(), HasSubstr("dataset.sotu.test_first_year: must be > "
                                                         "valid_first_year (1990), got 1990"));
  spec.mutable_sotu()->set_test_first_year(2005);
  spec.mutable_sotu()->set_min_count(-1);
  EXPECT_THAT(entry->validate(spec).message(), HasSubstr("dataset.sotu.min_count"));
  spec.mutable_sotu()->set_min_count(3);
  spec.mutable_sotu()->set_sequence_length(-5);
  EXPECT_THAT(entry->validate(spec).message(), HasSubstr("dataset.sotu.sequence_length"));

  DatasetSpec other = SotuSpec();
  other.mutable_wikitext()->set_data_dir("/tmp");
  ResolveDatasetSpec(*entry, &other);  // leaves the foreign options for validation
  EXPECT_TRUE(other.has_wikitext());
  EXPECT_THAT(ValidateDatasetSpec(*entry, other).message(),
              HasSubstr("dataset.wikitext: these options belong to another "
                        "dataset; dataset 'sotu_lm' takes dataset.sotu"));
}

TEST(SotuLmTest, LoadsThroughTheRegistry) {
  const std::string dir = MakeDir("registry");
  WriteFile(dir + "/1800_a_x.txt", "The war ended. The peace began.");
  WriteFile(dir + "/1990_c_z.txt", "The war began.");
  WriteFile(dir + "/2005_d_w.txt", "Peace held.");
  DatasetSpec spec = SotuSpec();
  *spec.mutable_sotu() = Options(dir, 2);
  absl::StatusOr<std::unique_ptr<Dataset>> dataset = LoadDataset(spec);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ((*dataset)->NumExamples(Split::kTrain), 4);
  EXPECT_TRUE(UnigramPerplexity(**dataset, Split::kValid).ok());
}

// Where third_party/setup.sh put the corpus: $MOELAB_DATA_DIR, else the
// user's real home (bazel test points $HOME at a temp dir).
std::string RealSotuDir() {
  if (const char* dir = std::getenv("MOELAB_DATA_DIR"); dir && *dir) {
    return absl::StrCat(dir, "/sotu/package/data");
  }
  const passwd* user = getpwuid(getuid());
  const std::string home = user != nullptr ? user->pw_dir : "/root";
  return home + "/.cache/moelab-data/sotu/package/data";
}

TEST(SotuLmTest, RealCorpusSmokeTest) {
  const std::string dir = RealSotuDir();
  if (!std::filesystem::is_directory(dir)) {
    GTEST_SKIP() << "SOTU corpus not found in " << dir << "; run third_party/setup.sh";
  }
  auto addresses = ListSotuAddresses(dir);
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  EXPECT_EQ(addresses->size(), 233u);
  EXPECT_EQ(addresses->front().year, 1790);
  EXPECT_EQ(addresses->back().year, 2021);

  DatasetSpec spec = SotuSpec();
  spec.mutable_sotu()->set_data_dir(dir);
  (*DatasetRegistry().Find("sotu_lm"))->resolve(&spec);
  const auto start = std::chrono::steady_clock::now();
  auto dataset = LoadSotu(spec.sotu());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_LT(seconds, 5.0);

  const TokenizedCorpus& corpus = (*dataset)->corpus();
  std::cout << "SOTU loaded in " << seconds << " s; vocab_size " << corpus.vocab_size
            << " (min_count 3)\n";
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    const std::vector<int32_t>& ids = corpus.split(split);
    int64_t unk = 0, eos = 0;
    for (int32_t id : ids) {
      unk += id == kUnkId;
      eos += id == kEosId;
    }
    std::cout << "  " << SplitName(split) << ": " << eos << " addresses, " << ids.size()
              << " tokens, <unk> rate " << static_cast<double>(unk) / ids.size() << ", "
              << (*dataset)->NumExamples(split) << " sequences of 64, "
              << "unigram perplexity " << (*dataset)->UnigramPerplexity(split) << "\n";
    EXPECT_GT((*dataset)->NumExamples(split), 100);
    EXPECT_LT(static_cast<double>(unk) / ids.size(), 0.05);
  }
  EXPECT_GT(corpus.split(Split::kTrain).size(), 1500000u);
  EXPECT_GT(corpus.vocab_size, 10000);
  EXPECT_LT(corpus.vocab_size, 60000);
  EXPECT_EQ(corpus.words[2], "the");  // the most frequent word
  std::cout << "  most frequent:";
  for (int id = 2; id < 32; ++id) std::cout << " " << corpus.words[id];
  std::cout << "\n";
}

}  // namespace
}  // namespace moelab
