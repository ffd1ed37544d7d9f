#include "core/testing/small_token_stream.h"

#include <gtest/gtest.h>

#include <utility>

#include "core/data/corpus.h"

namespace moelab {

std::unique_ptr<TokenStreamDataset> SmallTokenStream() {
  TokenizedCorpus corpus;
  corpus.vocab_size = 4;
  corpus.unk_id = 0;
  corpus.split(Split::kTrain) = {2, 3, 2, 0, 2, 3, 1};
  corpus.split(Split::kValid) = {3, 0, 0, 1, 2};
  corpus.split(Split::kTest) = {2, 2, 2};
  auto dataset = TokenStreamDataset::Create(std::move(corpus), 2, {"tr", "va", "te"});
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return dataset.ok() ? *std::move(dataset) : nullptr;
}

}  // namespace moelab
