#ifndef MOELAB_CORE_THREADING_ENVIRONMENT_H_
#define MOELAB_CORE_THREADING_ENVIRONMENT_H_

namespace moelab {

// LibTorch's OpenMP pool busy-waits between parallel regions by default;
// on a small machine it steals the cores of anything else running (2 Zen 3
// cores, bench_lm, OpenBLAS single-threaded: libgomp's default spinning was
// as fast as passive waiting alone and 1.7x slower beside one CPU-bound
// process; a spin count of 1,000 or 3,000 gained nothing alone and lost
// 5-20% beside it; before OpenBLAS ran single-threaded its pool spun too,
// and passive waiting made a step 2.7x faster). libgomp reads OMP_WAIT_POLICY only when it is
// loaded, before main(), so a binary that wants it re-executes itself once with the variable set. A
// value the user already set is kept. Also keeps freed memory in the heap (see the .cc). Call first
// in main().
void ReexecWithPassiveOpenMpWaiting(int argc, char** argv);

// Bounds every thread pool a step uses: LibTorch's intra-op (OpenMP) pool,
// which oneDNN's products share, to `threads`, and OpenBLAS's own pool
// (which at::set_num_threads does not reach) to one thread, so that its
// calls run on the calling thread. OpenBLAS gets only the small products
// LibTorch still sends it (the routers' gates, [N, D] x [D, E]), and a pool
// of its own, after every call, kept a worker spinning in sched_yield for a
// long while: on 2 Zen 3 cores it held 15% of a bench_lm step's CPU samples
// and put 4.0 s of a 10 s run in the kernel (0.9 s single-threaded), and
// the step ran ~8% slower, alone or beside a CPU-bound process. One thread
// also keeps results independent of OPENBLAS_NUM_THREADS under an
// unchanged spec hash.
void SetIntraOpThreads(int threads);

// OpenBLAS's current thread count; -1 when OpenBLAS is not loaded.
int OpenBlasThreads();

}  // namespace moelab

#endif  // MOELAB_CORE_THREADING_ENVIRONMENT_H_
