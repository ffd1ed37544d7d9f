#include "core/data/wikitext_lm.h"

#include <array>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/corpus.h"
#include "core/data/dataset_util.h"
#include "core/dataset.h"
#include "core/paths.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

constexpr std::array<const char*, 3> kFiles = {"wiki.train.tokens", "wiki.valid.tokens",
                                               "wiki.test.tokens"};

// Byte length of the whitespace character at line[i] by Python's
// str.split() rules (which the reference loaders use), else 0.
size_t WhitespaceLength(absl::string_view line, size_t i) {
  const auto byte = [&](size_t k) -> unsigned {
    return k < line.size() ? static_cast<unsigned char>(line[k]) : 0u;
  };
  const unsigned b0 = byte(i);
  if (b0 < 0x80) {
    return (b0 >= 0x09 && b0 <= 0x0D) || (b0 >= 0x1C && b0 <= 0x20) ? 1 : 0;
  }
  const unsigned b1 = byte(i + 1), b2 = byte(i + 2);
  if (b0 == 0xC2) return b1 == 0x85 || b1 == 0xA0 ? 2 : 0;  // U+0085, U+00A0
  if (b0 == 0xE1) return b1 == 0x9A && b2 == 0x80 ? 3 : 0;  // U+1680
  if (b0 == 0xE2 && b1 == 0x80) {  // U+2000..U+200A, U+2028, U+2029, U+202F
    return (b2 >= 0x80 && b2 <= 0x8A) || b2 == 0xA8 || b2 == 0xA9 || b2 == 0xAF ? 3 : 0;
  }
  if (b0 == 0xE2) return b1 == 0x81 && b2 == 0x9F ? 3 : 0;  // U+205F
  if (b0 == 0xE3) return b1 == 0x80 && b2 == 0x80 ? 3 : 0;  // U+3000
  return 0;
}

void SplitOnWhitespace(absl::string_view line, TokenSink emit) {
  size_t begin = 0, i = 0;
  while (i < line.size()) {
    if (const size_t space = WhitespaceLength(line, i)) {
      if (i > begin) emit(line.substr(begin, i - begin));
      i += space;
      begin = i;
    } else {
      ++i;
    }
  }
  if (i > begin) emit(line.substr(begin, i - begin));
}

absl::Status TokenizeFile(const std::string& path, TokenSink emit) {
  absl::StatusOr<std::string> text = ReadUtf8TextFile(path);
  if (!text.ok()) return text.status();
  bool any_word = false;
  TokenizeLines(*text, SplitOnWhitespace, [&](absl::string_view token) {
    any_word |= token != kEosToken;
    emit(token);
  });
  if (!any_word) {
    return absl::DataLossError(absl::StrCat(path, ": empty corpus (no tokens)"));
  }
  return absl::OkStatus();
}

void ResolveWikiText(DatasetSpec* spec) {
  WikiTextOptions* options = spec->mutable_wikitext();
  if (!options->has_sequence_length()) options->set_sequence_length(256);
}

absl::Status ValidateWikiText(const DatasetSpec& spec) {
  const WikiTextOptions& options = spec.wikitext();
  if (options.sequence_length() < 1) {
    return DatasetFieldError("dataset.wikitext.sequence_length",
                             absl::StrCat("must be >= 1, got ", options.sequence_length()));
  }
  if (absl::Status s = CheckDirectoryField("dataset.wikitext.data_dir", options.data_dir(),
                                           "the directory holding wiki.{train,valid,test}.tokens");
      !s.ok()) {
    return s;
  }
  const std::string dir = ResolveUserPath(options.data_dir());
  for (const char* file : kFiles) {
    std::error_code error;
    if (!std::filesystem::is_regular_file(dir + "/" + file, error)) {
      return absl::NotFoundError(absl::StrCat("dataset.wikitext.data_dir: ", file,
                                              " not found in '", options.data_dir(), "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenStreamDataset>> LoadWikiText(const WikiTextOptions& options) {
  const std::string dir = ResolveUserPath(options.data_dir());
  std::array<std::string, 3> paths;
  for (int i = 0; i < 3; ++i) paths[i] = absl::StrCat(dir, "/", kFiles[i]);
  const auto tokenizer = [&paths](Split split) -> SplitTokenizer {
    return [&paths, split](TokenSink emit) {
      return TokenizeFile(paths[static_cast<int>(split)], emit);
    };
  };
  absl::StatusOr<TokenizedCorpus> corpus = BuildCorpus(
      tokenizer(Split::kTrain), tokenizer(Split::kValid), tokenizer(Split::kTest), /*min_count=*/1);
  if (!corpus.ok()) return corpus.status();
  return TokenStreamDataset::Create(*std::move(corpus), options.sequence_length(), paths);
}

MOELAB_REGISTER_DATASET(
    "wikitext_lm",
    {.options = DatasetSpec::kWikitext,
     .description = "WikiText-2/103 released token files, word-level LM",
     .resolve = ResolveWikiText,
     .validate = ValidateWikiText,
     .load = [](const DatasetSpec& spec) -> absl::StatusOr<std::unique_ptr<Dataset>> {
       absl::StatusOr<std::unique_ptr<TokenStreamDataset>> dataset = LoadWikiText(spec.wikitext());
       if (!dataset.ok()) return dataset.status();
       return std::unique_ptr<Dataset>(*std::move(dataset));
     },
     .task = kLanguageModelingTask});

}  // namespace moelab
