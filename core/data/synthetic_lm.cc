#include "core/data/synthetic_lm.h"

#include <array>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/corpus.h"
#include "core/data/dataset_util.h"
#include "core/data/random.h"
#include "core/dataset.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

constexpr uint64_t kSyntheticSalt = 0x73796e746865ull;  // "synthe"
// Keeps the stored streams within a few GiB.
constexpr int64_t kMaxTokensPerSplit = int64_t{1} << 28;

void ResolveSyntheticLm(DatasetSpec* spec) {
  SyntheticLmOptions* options = spec->mutable_synthetic_lm();
  if (!options->has_vocab_size()) options->set_vocab_size(10000);
  if (!options->has_sequence_length()) options->set_sequence_length(128);
  if (!options->has_num_sequences()) options->set_num_sequences(1024);
}

absl::Status ValidateSyntheticLm(const DatasetSpec& spec) {
  const SyntheticLmOptions& options = spec.synthetic_lm();
  if (options.vocab_size() < 2) {
    return DatasetFieldError("dataset.synthetic_lm.vocab_size",
                             absl::StrCat("must be >= 2, got ", options.vocab_size()));
  }
  if (options.sequence_length() < 1) {
    return DatasetFieldError("dataset.synthetic_lm.sequence_length",
                             absl::StrCat("must be >= 1, got ", options.sequence_length()));
  }
  if (options.num_sequences() < 1) {
    return DatasetFieldError("dataset.synthetic_lm.num_sequences",
                             absl::StrCat("must be >= 1, got ", options.num_sequences()));
  }
  const int64_t tokens = int64_t{options.num_sequences()} * options.sequence_length();
  if (tokens > kMaxTokensPerSplit) {
    return DatasetFieldError("dataset.synthetic_lm.num_sequences",
                             absl::StrCat("num_sequences * sequence_length = ", tokens,
                                          " tokens per split; at most ", kMaxTokensPerSplit));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenStreamDataset>> LoadSyntheticLm(
    const SyntheticLmOptions& options) {
  TokenizedCorpus corpus;
  corpus.vocab_size = options.vocab_size();
  corpus.unk_id = -1;
  const int64_t length = int64_t{options.num_sequences()} * options.sequence_length() + 1;
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    DataRng rng = DataRng::FromKeys({kSyntheticSalt, static_cast<uint64_t>(split)});
    std::vector<int32_t>& stream = corpus.split(split);
    stream.resize(length);
    for (int32_t& token : stream) {
      token = static_cast<int32_t>(rng.Below(options.vocab_size()));
    }
  }
  const std::string source =
      absl::StrCat("synthetic_lm (num_sequences ", options.num_sequences(), ")");
  return TokenStreamDataset::Create(std::move(corpus), options.sequence_length(),
                                    {source, source, source});
}

MOELAB_REGISTER_DATASET(
    "synthetic_lm",
    {.options = DatasetSpec::kSyntheticLm,
     .description = "uniformly random tokens, for throughput benchmarks",
     .resolve = ResolveSyntheticLm,
     .validate = ValidateSyntheticLm,
     .load = [](const DatasetSpec& spec) -> absl::StatusOr<std::unique_ptr<Dataset>> {
       absl::StatusOr<std::unique_ptr<TokenStreamDataset>> dataset =
           LoadSyntheticLm(spec.synthetic_lm());
       if (!dataset.ok()) return dataset.status();
       return std::unique_ptr<Dataset>(*std::move(dataset));
     },
     .task = kLanguageModelingTask});

}  // namespace moelab
