#include "core/memory_usage.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstring>

namespace moelab {

MemoryUsage ReadMemoryUsage() {
  MemoryUsage usage;
  if (std::FILE* status = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), status) != nullptr) {
      long long kib = 0;
      if (std::sscanf(line, "VmRSS: %lld kB", &kib) == 1) usage.resident_mb = kib / 1024.0;
      if (std::sscanf(line, "VmHWM: %lld kB", &kib) == 1) {
        usage.peak_resident_mb = kib / 1024.0;
      }
    }
    std::fclose(status);
  }
  if (usage.peak_resident_mb == 0) {
    rusage self{};
    getrusage(RUSAGE_SELF, &self);
    usage.peak_resident_mb = self.ru_maxrss / 1024.0;  // KiB on Linux
  }
  // The kernel batches per-thread RSS counter updates, so the two fields can
  // disagree by a few pages; the peak is at least what is resident now.
  if (usage.peak_resident_mb < usage.resident_mb) usage.peak_resident_mb = usage.resident_mb;
  return usage;
}

}  // namespace moelab
