#include "core/threading_environment.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace moelab {

void ReexecWithPassiveOpenMpWaiting(int argc, char** argv) {
  // Vocabulary-sized activations (tens of MB) would otherwise be mmap'ed
  // fresh and page-faulted in every step; keeping freed memory in the heap
  // took about 20% off a SOTU LM step here. Peak RSS is unchanged.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1);
  execv("/proc/self/exe", argv);
  // Only reached when exec failed: run on, just slower.
  std::perror("moelab: re-executing with OMP_WAIT_POLICY=PASSIVE failed");
}

void SetIntraOpThreads(int threads) {
  at::set_num_threads(threads);
  // Looked up at run time: libblas.so.3 is OpenBLAS only where Debian's
  // alternatives say so (third_party/setup.sh installs it).
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
}

int OpenBlasThreads() {
  using GetThreads = int (*)();
  auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get == nullptr ? -1 : get();
}

}  // namespace moelab
