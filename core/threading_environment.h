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

// Bounds every thread pool a step uses to `threads`: LibTorch's intra-op
// (OpenMP) pool, which oneDNN's products share, and OpenBLAS's own pool,
// which at::set_num_threads does not reach (LibTorch still sends its
// remaining fp32 products, the routers' gates among them, to OpenBLAS).
// Otherwise runtime.threads: 1 ran OpenBLAS on every core, and the result
// depended on OPENBLAS_NUM_THREADS under an unchanged spec hash.
void SetIntraOpThreads(int threads);

// OpenBLAS's current thread count; -1 when OpenBLAS is not loaded.
int OpenBlasThreads();

}  // namespace moelab

#endif  // MOELAB_CORE_THREADING_ENVIRONMENT_H_
