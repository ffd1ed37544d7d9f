#include "core/data/random.h"

#include <numeric>
#include <utility>

namespace moelab {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

uint64_t Finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

DataRng DataRng::FromKeys(std::initializer_list<uint64_t> keys) {
  // Each key passes through the finaliser before the next is mixed in, so
  // (a, b) and (b, a) differ.
  uint64_t h = kGolden;
  for (uint64_t key : keys) h = Finalize(h + kGolden + key);
  return DataRng(h);
}

uint64_t DataRng::Next() {
  state_ += kGolden;
  return Finalize(state_);
}

uint64_t DataRng::Below(uint64_t bound) {
  // Reject the top partial copy of [0, bound) so every residue is equally
  // likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do {
    x = Next();
  } while (x >= limit);
  return x % bound;
}

double DataRng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

std::vector<int64_t> RandomPermutation(int64_t n, DataRng& rng) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.Below(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace moelab
