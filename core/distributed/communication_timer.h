#ifndef MOELAB_CORE_DISTRIBUTED_COMMUNICATION_TIMER_H_
#define MOELAB_CORE_DISTRIBUTED_COMMUNICATION_TIMER_H_

// Adds the duration of a scope, in nanoseconds, to a counter: how the
// distributed pieces account the time they spend communicating, for the
// benchmark's share of step time. `Counter` is int64_t, or
// std::atomic<int64_t> where other threads add to it too.

#include <chrono>
#include <cstdint>

namespace moelab {

inline int64_t NanosecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                              start)
      .count();
}

template <typename Counter>
class ScopedNanoseconds {
 public:
  explicit ScopedNanoseconds(Counter& total)
      : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~ScopedNanoseconds() { total_ += NanosecondsSince(start_); }
  ScopedNanoseconds(const ScopedNanoseconds&) = delete;
  ScopedNanoseconds& operator=(const ScopedNanoseconds&) = delete;

 private:
  Counter& total_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moelab

#endif  // MOELAB_CORE_DISTRIBUTED_COMMUNICATION_TIMER_H_
