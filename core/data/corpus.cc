#include "core/data/corpus.h"

#include <algorithm>
#include <utility>

#include "absl/container/node_hash_map.h"

namespace moelab {

absl::StatusOr<TokenizedCorpus> BuildCorpus(const SplitTokenizer& train,
                                            const SplitTokenizer& valid, const SplitTokenizer& test,
                                            int64_t min_count) {
  // Pass over train once, giving each distinct word a provisional id in
  // order of first appearance; the final ids need all counts first.
  // Node-based so that provisional_words may point at the keys.
  absl::node_hash_map<std::string, int32_t> provisional_ids;
  std::vector<const std::string*> provisional_words;
  std::vector<int64_t> counts;
  TokenizedCorpus corpus;
  std::vector<int32_t>& train_ids = corpus.split(Split::kTrain);
  absl::Status status = train([&](absl::string_view token) {
    auto it = provisional_ids.find(token);
    if (it == provisional_ids.end()) {
      it = provisional_ids
               .emplace(std::string(token), static_cast<int32_t>(provisional_words.size()))
               .first;
      provisional_words.push_back(&it->first);
      counts.push_back(0);
    }
    ++counts[it->second];
    train_ids.push_back(it->second);
  });
  if (!status.ok()) return status;

  std::vector<int32_t> kept;
  for (int32_t id = 0; id < static_cast<int32_t>(counts.size()); ++id) {
    const std::string& word = *provisional_words[id];
    if (counts[id] >= min_count && word != kUnkToken && word != kEosToken) {
      kept.push_back(id);
    }
  }
  std::sort(kept.begin(), kept.end(), [&](int32_t a, int32_t b) {
    if (counts[a] != counts[b]) return counts[a] > counts[b];
    return *provisional_words[a] < *provisional_words[b];
  });

  corpus.words = {std::string(kUnkToken), std::string(kEosToken)};
  std::vector<int32_t> final_id(counts.size(), kUnkId);
  for (int32_t id : kept) {
    final_id[id] = static_cast<int32_t>(corpus.words.size());
    corpus.words.push_back(*provisional_words[id]);
  }
  if (auto it = provisional_ids.find(kEosToken); it != provisional_ids.end()) {
    final_id[it->second] = kEosId;
  }
  corpus.vocab_size = static_cast<int64_t>(corpus.words.size());
  corpus.unk_id = kUnkId;
  for (int32_t& id : train_ids) id = final_id[id];

  // Valid and test words are looked up through the provisional table, which
  // holds every training word.
  for (auto [split, tokenize] :
       {std::pair<Split, const SplitTokenizer*>{Split::kValid, &valid}, {Split::kTest, &test}}) {
    std::vector<int32_t>& ids = corpus.split(split);
    status = (*tokenize)([&](absl::string_view token) {
      auto it = provisional_ids.find(token);
      ids.push_back(it == provisional_ids.end() ? kUnkId : final_id[it->second]);
    });
    if (!status.ok()) return status;
  }
  return corpus;
}

void TokenizeLines(absl::string_view text, LineTokenizer tokenize_line, TokenSink emit) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == absl::string_view::npos) end = text.size();
    tokenize_line(text.substr(begin, end - begin), emit);
    emit(kEosToken);
    begin = end + 1;
  }
}

}  // namespace moelab
