#include "core/threading_environment.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace moelab {

void ReexecWithPassiveOpenMpWaiting(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1);
  execv("/proc/self/exe", argv);
  // Only reached when exec failed: run on, just slower.
  std::perror("moelab: re-executing with OMP_WAIT_POLICY=PASSIVE failed");
}

}  // namespace moelab
