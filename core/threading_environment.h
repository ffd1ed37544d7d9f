#ifndef MOELAB_CORE_THREADING_ENVIRONMENT_H_
#define MOELAB_CORE_THREADING_ENVIRONMENT_H_

namespace moelab {

// LibTorch's OpenMP pool and OpenBLAS's own thread pool both busy-wait
// between parallel regions; on a small machine they steal each other's
// cores (measured on 2 cores: a training step 2.7x faster with passive
// waiting). libgomp reads OMP_WAIT_POLICY only when it is loaded, before
// main(), so a binary that wants it re-executes itself once with the
// variable set. A value the user already set is kept. Also keeps freed
// memory in the heap (see the .cc). Call first in main().
void ReexecWithPassiveOpenMpWaiting(int argc, char** argv);

}  // namespace moelab

#endif  // MOELAB_CORE_THREADING_ENVIRONMENT_H_
