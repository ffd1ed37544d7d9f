#include "core/data/sotu_lm.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/data/corpus.h"
#include "core/data/dataset_util.h"
#include "core/data/word_tokenizer.h"
#include "core/dataset.h"
#include "core/paths.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

constexpr char kSetupHint[] = "run third_party/setup.sh to fetch the State of the Union corpus";

Split SplitOfYear(int year, const SotuOptions& options) {
  if (year < options.valid_first_year()) return Split::kTrain;
  if (year < options.test_first_year()) return Split::kValid;
  return Split::kTest;
}

std::string YearRange(Split split, const SotuOptions& options) {
  switch (split) {
    case Split::kTrain:
      return absl::StrCat("years < ", options.valid_first_year());
    case Split::kValid:
      return absl::StrCat("years ", options.valid_first_year(), "-", options.test_first_year() - 1);
    case Split::kTest:
      return absl::StrCat("years >= ", options.test_first_year());
  }
  return "";
}

absl::Status TokenizeAddresses(const std::vector<const SotuAddress*>& addresses, TokenSink emit) {
  for (const SotuAddress* address : addresses) {
    absl::StatusOr<std::string> text = ReadUtf8TextFile(address->path);
    if (!text.ok()) return text.status();
    if (std::all_of(text->begin(), text->end(), [](char c) { return absl::ascii_isspace(c); })) {
      return absl::DataLossError(absl::StrCat(address->path, ": empty address (no text)"));
    }
    TokenizeLines(*text, TokenizeProse, emit);
  }
  return absl::OkStatus();
}

void ResolveSotu(DatasetSpec* spec) {
  SotuOptions* options = spec->mutable_sotu();
  if (options->data_dir().empty()) {
    options->set_data_dir(DataCacheDir() + "/sotu/package/data");
  }
  if (options->valid_first_year() == 0) options->set_valid_first_year(1990);
  if (options->test_first_year() == 0) options->set_test_first_year(2005);
  if (options->min_count() == 0) options->set_min_count(3);
  if (!options->has_sequence_length()) options->set_sequence_length(64);
}

absl::Status ValidateSotu(const DatasetSpec& spec) {
  const SotuOptions& options = spec.sotu();
  if (options.test_first_year() <= options.valid_first_year()) {
    return DatasetFieldError(
        "dataset.sotu.test_first_year",
        absl::StrCat("must be > valid_first_year (", options.valid_first_year(), "), got ",
                     options.test_first_year()));
  }
  if (options.min_count() < 1) {
    return DatasetFieldError("dataset.sotu.min_count",
                             absl::StrCat("must be >= 1, got ", options.min_count()));
  }
  if (options.sequence_length() < 1) {
    return DatasetFieldError("dataset.sotu.sequence_length",
                             absl::StrCat("must be >= 1, got ", options.sequence_length()));
  }
  return CheckDirectoryField("dataset.sotu.data_dir", options.data_dir(), kSetupHint);
}

}  // namespace

absl::StatusOr<std::vector<SotuAddress>> ListSotuAddresses(const std::string& dir) {
  std::error_code error;
  std::filesystem::directory_iterator it(dir, error);
  if (error) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": cannot list the SOTU directory: ", error.message()));
  }
  std::vector<std::pair<std::string, SotuAddress>> found;
  for (const std::filesystem::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!absl::EndsWith(name, ".txt") || !entry.is_regular_file(error)) {
      continue;
    }
    const size_t underscore = name.find('_');
    int year = 0;
    if (underscore == std::string::npos || !absl::SimpleAtoi(name.substr(0, underscore), &year)) {
      return absl::InvalidArgumentError(absl::StrCat(entry.path().string(),
                                                     ": not a SOTU address file name (expected "
                                                     "<year>_<name>_<party>.txt)"));
    }
    found.push_back({name, SotuAddress{year, entry.path().string()}});
  }
  if (found.empty()) {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": no State of the Union addresses (<year>_<name>_<party>.txt) "
                     "found; ",
                     kSetupHint));
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<SotuAddress> addresses;
  addresses.reserve(found.size());
  for (auto& [name, address] : found) addresses.push_back(std::move(address));
  return addresses;
}

absl::StatusOr<std::unique_ptr<TokenStreamDataset>> LoadSotu(const SotuOptions& options) {
  const std::string dir = ResolveUserPath(options.data_dir());
  absl::StatusOr<std::vector<SotuAddress>> addresses = ListSotuAddresses(dir);
  if (!addresses.ok()) return addresses.status();

  std::array<std::vector<const SotuAddress*>, 3> by_split;
  for (const SotuAddress& address : *addresses) {
    by_split[static_cast<int>(SplitOfYear(address.year, options))].push_back(&address);
  }
  std::array<std::string, 3> sources;
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    const auto& list = by_split[static_cast<int>(split)];
    if (list.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": no addresses for the ", SplitName(split), " split (", YearRange(split, options),
          "; dataset.sotu.valid_first_year = ", options.valid_first_year(),
          ", test_first_year = ", options.test_first_year(), ")"));
    }
    sources[static_cast<int>(split)] = absl::StrCat("SOTU addresses ", list.front()->year, "-",
                                                    list.back()->year, " in '", dir, "'");
  }
  const auto tokenizer = [&](Split split) -> SplitTokenizer {
    return [&by_split, split](TokenSink emit) {
      return TokenizeAddresses(by_split[static_cast<int>(split)], emit);
    };
  };
  absl::StatusOr<TokenizedCorpus> corpus =
      BuildCorpus(tokenizer(Split::kTrain), tokenizer(Split::kValid), tokenizer(Split::kTest),
                  options.min_count());
  if (!corpus.ok()) return corpus.status();
  return TokenStreamDataset::Create(*std::move(corpus), options.sequence_length(), sources);
}

MOELAB_REGISTER_DATASET(
    "sotu_lm", {.options = DatasetSpec::kSotu,
                .description = "State of the Union addresses 1790-2021, word-level LM "
                               "split by year",
                .resolve = ResolveSotu,
                .validate = ValidateSotu,
                .load = [](const DatasetSpec& spec) -> absl::StatusOr<std::unique_ptr<Dataset>> {
                  absl::StatusOr<std::unique_ptr<TokenStreamDataset>> dataset =
                      LoadSotu(spec.sotu());
                  if (!dataset.ok()) return dataset.status();
                  return std::unique_ptr<Dataset>(*std::move(dataset));
                },
                .task = kLanguageModelingTask});

}  // namespace moelab
