#ifndef MOELAB_CORE_DATA_CORPUS_H_
#define MOELAB_CORE_DATA_CORPUS_H_

// A word-level corpus: the train, valid and test token streams as ids over
// a vocabulary built from the training split only.
//
// Ids: 0 = "<unk>", 1 = "<eos>", then every other training word seen at
// least `min_count` times, most frequent first, ties in byte order of the
// UTF-8 word. The order depends only on the training text, so ids are stable
// across runs and machines. Other words (rarer training words, words absent
// from train) map to <unk>.

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/dataset.h"

namespace moelab {

inline constexpr absl::string_view kUnkToken = "<unk>";
inline constexpr absl::string_view kEosToken = "<eos>";
inline constexpr int32_t kUnkId = 0;
inline constexpr int32_t kEosId = 1;

struct TokenizedCorpus {
  // Id -> word; empty for corpora that have no words (synthetic tokens).
  std::vector<std::string> words;
  int64_t vocab_size = 0;
  // Id of <unk>, or -1 when the corpus has none.
  int64_t unk_id = -1;
  // Token ids of each split, indexed by static_cast<int>(Split).
  std::array<std::vector<int32_t>, 3> tokens;

  std::vector<int32_t>& split(Split s) { return tokens[static_cast<int>(s)]; }
  const std::vector<int32_t>& split(Split s) const { return tokens[static_cast<int>(s)]; }
};

using TokenSink = absl::FunctionRef<void(absl::string_view token)>;
// Produces one split's tokens, in order, by calling the sink for each.
using SplitTokenizer = std::function<absl::Status(TokenSink emit)>;

// Runs the three tokenizers (train first) and assigns ids as described
// above; min_count >= 1. Time and memory are linear in the number of tokens.
absl::StatusOr<TokenizedCorpus> BuildCorpus(const SplitTokenizer& train,
                                            const SplitTokenizer& valid, const SplitTokenizer& test,
                                            int64_t min_count);

// Splits a line into tokens, calling the sink for each.
using LineTokenizer = absl::FunctionRef<void(absl::string_view line, TokenSink emit)>;

// For each line of `text`, its tokens followed by <eos>, as the usual
// WikiText loaders do (`for line in f: line.split() + ['<eos>']`): an empty
// line gives a lone <eos>, and a final newline does not start another line.
void TokenizeLines(absl::string_view text, LineTokenizer tokenize_line, TokenSink emit);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_CORPUS_H_
