#ifndef MOELAB_CORE_MEMORY_USAGE_H_
#define MOELAB_CORE_MEMORY_USAGE_H_

namespace moelab {

struct MemoryUsage {
  double resident_mb = 0;       // VmRSS now
  double peak_resident_mb = 0;  // VmHWM: the most resident so far
};

// This process's resident memory, from /proc/self/status (both fields read
// together: getrusage's ru_maxrss is updated lazily and can lag the current
// VmRSS). Where /proc is missing, the peak comes from getrusage and the
// current value is 0.
MemoryUsage ReadMemoryUsage();

}  // namespace moelab

#endif  // MOELAB_CORE_MEMORY_USAGE_H_
