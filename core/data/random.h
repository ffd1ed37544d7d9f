#ifndef MOELAB_CORE_DATA_RANDOM_H_
#define MOELAB_CORE_DATA_RANDOM_H_

// Randomness for data pipelines that is the same on every platform and
// library version (std::shuffle and the std distributions are
// implementation-defined) and is keyed by explicit values such as
// (seed, epoch, example index), so any batch can be rebuilt on its own.

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace moelab {

// A SplitMix64 stream.
class DataRng {
 public:
  explicit DataRng(uint64_t seed) : state_(seed) {}

  // A stream whose seed mixes all of `keys`; different key tuples give
  // unrelated streams.
  static DataRng FromKeys(std::initializer_list<uint64_t> keys);

  uint64_t Next();
  // Uniform in [0, bound); bound >= 1. Unbiased (rejection sampling).
  uint64_t Below(uint64_t bound);
  // Uniform in [0, 1), with 53 random bits.
  double Uniform();

 private:
  uint64_t state_;
};

// A uniformly random permutation of 0..n-1 (Fisher-Yates driven by `rng`).
std::vector<int64_t> RandomPermutation(int64_t n, DataRng& rng);

}  // namespace moelab

#endif  // MOELAB_CORE_DATA_RANDOM_H_
