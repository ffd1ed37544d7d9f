#include "core/data/token_stream_dataset.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {
namespace {

int64_t ExamplesIn(const std::vector<int32_t>& stream, int64_t length) {
  return stream.empty() ? 0 : (static_cast<int64_t>(stream.size()) - 1) / length;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenStreamDataset>> TokenStreamDataset::Create(
    TokenizedCorpus corpus, int64_t sequence_length,
    const std::array<std::string, 3>& split_sources) {
  if (sequence_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence_length must be >= 1, got ", sequence_length));
  }
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    const size_t tokens = corpus.split(split).size();
    if (ExamplesIn(corpus.split(split), sequence_length) < 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          split_sources[static_cast<int>(split)], ": the ", SplitName(split), " split has ", tokens,
          " tokens, fewer than sequence_length + 1 = ", sequence_length + 1,
          " needed for one sequence"));
    }
  }
  return std::unique_ptr<TokenStreamDataset>(
      new TokenStreamDataset(std::move(corpus), sequence_length, split_sources[0]));
}

TokenStreamDataset::TokenStreamDataset(TokenizedCorpus corpus, int64_t sequence_length,
                                       std::string train_source)
    : corpus_(std::move(corpus)),
      train_source_(std::move(train_source)),
      order_(ExamplesIn(corpus_.split(Split::kTrain), sequence_length)) {
  info_.task = kLanguageModelingTask;
  info_.vocab_size = corpus_.vocab_size;
  info_.sequence_length = sequence_length;
  info_.unk_id = corpus_.unk_id;
}

int64_t TokenStreamDataset::NumExamples(Split split) const {
  if (split == Split::kTrain) return order_.num_train_examples();
  return ExamplesIn(corpus_.split(split), info_.sequence_length);
}

absl::Status TokenStreamDataset::SetTrainSubset(int64_t examples) {
  return order_.SetTrainSubset(examples, train_source_);
}

Batch TokenStreamDataset::GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
                                   uint64_t seed) const {
  return Windows(split,
                 order_.BatchExamples(split, NumExamples(split), batch_size, index, epoch, seed));
}

Batch TokenStreamDataset::GetExamples(Split split, const std::vector<int64_t>& indices) const {
  CheckExampleIndices(split, NumExamples(split), indices);
  return Windows(split, SplitExampleIndices(order_, split, indices));
}

Batch TokenStreamDataset::Windows(Split split, const std::vector<int64_t>& indices) const {
  const int64_t length = info_.sequence_length;
  const int64_t batch = static_cast<int64_t>(indices.size());
  const std::vector<int32_t>& stream = corpus_.split(split);
  Batch out;
  out.inputs = at::empty({batch, length}, at::kLong);   // [B, T]
  out.targets = at::empty({batch, length}, at::kLong);  // [B, T]
  int64_t* inputs = out.inputs.data_ptr<int64_t>();
  int64_t* targets = out.targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* window = stream.data() + indices[b] * length;
    for (int64_t t = 0; t < length; ++t) {
      inputs[b * length + t] = window[t];
      targets[b * length + t] = window[t + 1];
    }
  }
  return out;
}

double TokenStreamDataset::UnigramPerplexity(Split split) const {
  const std::vector<int32_t>& train = corpus_.split(Split::kTrain);
  std::vector<double> log_prob(corpus_.vocab_size, 0.0);
  std::vector<int64_t> counts(corpus_.vocab_size, 0);
  int64_t counted = 0;
  const int64_t length = info_.sequence_length;
  if (order_.num_train_examples() == ExamplesIn(train, length)) {
    for (int32_t id : train) ++counts[id];
    counted = static_cast<int64_t>(train.size());
  } else {
    // A training subset: the baseline sees only the windows the model sees.
    for (int64_t i = 0; i < order_.num_train_examples(); ++i) {
      const int32_t* window = train.data() + order_.TrainExample(i) * length;
      for (int64_t t = 0; t <= length; ++t) ++counts[window[t]];
    }
    counted = order_.num_train_examples() * (length + 1);
  }
  const double denominator = static_cast<double>(counted) + static_cast<double>(corpus_.vocab_size);
  for (int64_t id = 0; id < corpus_.vocab_size; ++id) {
    log_prob[id] = std::log((counts[id] + 1.0) / denominator);
  }
  const std::vector<int32_t>& stream = corpus_.split(split);
  const int64_t targets = ExamplesIn(stream, length) * length;
  double sum = 0.0;
  for (int64_t j = 1; j <= targets; ++j) sum += log_prob[stream[j]];
  return std::exp(-sum / static_cast<double>(targets));
}

absl::StatusOr<double> UnigramPerplexity(const Dataset& dataset, Split split) {
  const auto* stream = dynamic_cast<const TokenStreamDataset*>(&dataset);
  if (stream == nullptr) {
    return absl::FailedPreconditionError(
        "a unigram baseline needs a word-level language-modelling dataset "
        "(sotu_lm, wikitext_lm, synthetic_lm)");
  }
  return stream->UnigramPerplexity(split);
}

}  // namespace moelab
