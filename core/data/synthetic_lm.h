#ifndef MOELAB_CORE_DATA_SYNTHETIC_LM_H_
#define MOELAB_CORE_DATA_SYNTHETIC_LM_H_

// `synthetic_lm`: uniformly random tokens, for throughput benchmarks only.
// Each split is a stream of num_sequences * sequence_length + 1 tokens drawn
// uniformly from [0, vocab_size) by a DataRng keyed by the split, so it
// holds exactly num_sequences examples and is the same in every run (the
// experiment seed only orders the training batches). The streams are stored
// (4 bytes a token). No <unk> (unk_id = -1). Batches:
// core/data/token_stream_dataset.h.

#include <memory>

#include "absl/status/statusor.h"
#include "core/data/token_stream_dataset.h"
#include "proto/experiment.pb.h"

namespace moelab {

absl::StatusOr<std::unique_ptr<TokenStreamDataset>> LoadSyntheticLm(
    const SyntheticLmOptions& options);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_SYNTHETIC_LM_H_
