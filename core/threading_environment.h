#ifndef MOELAB_CORE_THREADING_ENVIRONMENT_H_
#define MOELAB_CORE_THREADING_ENVIRONMENT_H_

namespace moelab {

// Makes LibTorch's OpenMP pool wait passively (sleep) between parallel
// regions, and keeps freed memory in the heap (see the .cc). libgomp reads
// OMP_WAIT_POLICY only when it is loaded, before main(), so the binary
// re-executes itself once with the variable set; a value the user already
// set is kept. Call first in main().
//
// Why passive: by default the pool spins between regions and steals the
// cores of anything else running. On 2 Zen 3 cores (bench_lm, OpenBLAS
// single-threaded) libgomp's default spinning was as fast as passive
// waiting alone and 1.7x slower beside one CPU-bound process; spin counts
// of 1,000 and 3,000 gained nothing alone and lost 5-20% beside it. (While
// OpenBLAS's own pool also spun, passive waiting made a step 2.7x faster.)
// On 2 Zen 5 cores (bench_lm fp32, two alternating rounds) spinning
// (ACTIVE, or libgomp's default) was 6-11% faster alone (the futex waits
// and wake-ups of passive waiting held ~7% of a step's CPU samples) and
// 29-48% slower beside one CPU-bound process: passive stays the default,
// and a user alone on a machine may set OMP_WAIT_POLICY=ACTIVE.
void ReexecWithPassiveOpenMpWaiting(int argc, char** argv);

// Bounds LibTorch's intra-op (OpenMP) pool, which oneDNN's products share,
// to `threads`, and runs OpenBLAS (which at::set_num_threads does not
// reach) on one thread, the caller's.
//
// Why one: the products LibTorch still sends to OpenBLAS are small (the
// routers' gates, [N, D] x [D, E]; the graph-of-tokens routers' batched
// [T, T] products; attention's per-head values for routing), and after
// every call a pool of OpenBLAS's own kept a worker spinning in sched_yield
// for a long while. On 2 Zen 3 cores at 2 threads that worker held 15% of a
// bench_lm step's CPU samples and 4.0 s of a 10 s run went to the kernel
// (0.9 s single-threaded); single-threaded OpenBLAS made the step ~8%
// faster alone and beside a CPU-bound process, and steps with
// attention_aware and similarity_aware routers ~9% faster. It also keeps
// results independent of OPENBLAS_NUM_THREADS under an unchanged spec hash.
void SetIntraOpThreads(int threads);

// OpenBLAS's current thread count; -1 when OpenBLAS is not loaded.
int OpenBlasThreads();

}  // namespace moelab

#endif  // MOELAB_CORE_THREADING_ENVIRONMENT_H_
