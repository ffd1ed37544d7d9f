#ifndef MOELAB_CORE_DATA_TOKEN_STREAM_DATASET_H_
#define MOELAB_CORE_DATA_TOKEN_STREAM_DATASET_H_

// Language-modelling batches cut from a split's token stream; the one
// batching scheme of every LM dataset (sotu_lm, wikitext_lm, synthetic_lm).
//
// Example i of a split with stream s and sequence length L holds the L + 1
// contiguous tokens s[i*L .. i*L + L]: inputs s[i*L .. i*L + L - 1], targets
// s[i*L + 1 .. i*L + L]. Consecutive examples' input windows (and target
// windows) are contiguous and do not overlap, so every token after the first
// is a target exactly once, as in the usual WikiText evaluation. A split of
// n tokens has (n - 1) / L examples; the last < L tokens are dropped.
// Training batches follow a permutation of the examples drawn from
// (seed, epoch); evaluation splits are read in order.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/corpus.h"
#include "core/data/example_order.h"
#include "core/dataset.h"

namespace moelab {

class TokenStreamDataset : public Dataset {
 public:
  // Fails unless every split yields at least one example (has more than
  // sequence_length tokens); the error names the split by
  // `split_sources[split]` (e.g. "wiki.valid.tokens in '/data/wt2'").
  static absl::StatusOr<std::unique_ptr<TokenStreamDataset>> Create(
      TokenizedCorpus corpus, int64_t sequence_length,
      const std::array<std::string, 3>& split_sources);

  const DatasetInfo& info() const override { return info_; }
  int64_t NumExamples(Split split) const override;
  Batch GetBatch(Split split, int64_t batch_size, int64_t index, int64_t epoch,
                 uint64_t seed) const override;
  Batch GetExamples(Split split, const std::vector<int64_t>& indices) const override;
  absl::Status SetTrainSubset(int64_t examples) override;

  const TokenizedCorpus& corpus() const { return corpus_; }

  // Perplexity of the add-one unigram model of the training stream on the
  // split's targets (the tokens the model is scored on):
  //   p(w) = (c(w) + 1) / (N + V),  PPL = exp(-(1/M) sum_j log p(t_j)),
  // with c(w) the count of id w in the whole training stream (with a
  // training subset: in the subset's windows, what the model sees), N its length,
  // V = vocab_size, and t_1..t_M the split's targets (all examples). A
  // baseline to print beside the model's perplexity.
  double UnigramPerplexity(Split split) const;

 private:
  TokenStreamDataset(TokenizedCorpus corpus, int64_t sequence_length, std::string train_source);

  // The examples at `indices` of the split's whole stream (training
  // indices not yet mapped through a subset).
  Batch Windows(Split split, const std::vector<int64_t>& indices) const;

  TokenizedCorpus corpus_;
  std::string train_source_;
  DatasetInfo info_;
  ExampleOrder order_;
};

// TokenStreamDataset::UnigramPerplexity for a loaded dataset; an error for
// datasets that are not token streams.
absl::StatusOr<double> UnigramPerplexity(const Dataset& dataset, Split split);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_TOKEN_STREAM_DATASET_H_
