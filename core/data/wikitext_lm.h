#ifndef MOELAB_CORE_DATA_WIKITEXT_LM_H_
#define MOELAB_CORE_DATA_WIKITEXT_LM_H_

// `wikitext_lm`: WikiText-2 / WikiText-103 in their released, already
// tokenised format: data_dir holds wiki.train.tokens, wiki.valid.tokens and
// wiki.test.tokens. Each line's whitespace-separated tokens are followed by
// <eos> (blank lines give a lone <eos>), as in the usual WikiText LM loaders,
// which is how the published counts (2,088,628 training tokens for
// WikiText-2) are obtained; the real files are not available offline to
// check. The vocabulary is every training token (min_count 1; the
// files already contain <unk>), ids as in core/data/corpus.h. Each file is
// read whole into memory. Batches: core/data/token_stream_dataset.h.

#include <memory>

#include "absl/status/statusor.h"
#include "core/data/token_stream_dataset.h"
#include "proto/experiment.pb.h"

namespace moelab {

absl::StatusOr<std::unique_ptr<TokenStreamDataset>> LoadWikiText(const WikiTextOptions& options);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_WIKITEXT_LM_H_
