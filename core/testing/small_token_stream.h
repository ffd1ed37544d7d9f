#ifndef MOELAB_CORE_TESTING_SMALL_TOKEN_STREAM_H_
#define MOELAB_CORE_TESTING_SMALL_TOKEN_STREAM_H_

// A token stream small enough to work every figure on it out by hand.

#include <memory>

#include "core/data/token_stream_dataset.h"

namespace moelab {

// Sequences of 2 tokens from a vocabulary of 4 (<unk> = 0): training
// examples {2,3,2} {2,0,2} {2,3,1} (stream 2 3 2 0 2 3 1); validation
// inputs {3,0} {0,1} with targets {0,0} {1,2} (stream 3 0 0 1 2); test
// input {2,2} with targets {2,2} (stream 2 2 2).
std::unique_ptr<TokenStreamDataset> SmallTokenStream();

}  // namespace moelab

#endif  // MOELAB_CORE_TESTING_SMALL_TOKEN_STREAM_H_
