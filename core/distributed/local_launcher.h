#ifndef MOELAB_CORE_DISTRIBUTED_LOCAL_LAUNCHER_H_
#define MOELAB_CORE_DISTRIBUTED_LOCAL_LAUNCHER_H_

// Starts the workers of a job on this machine, as torchrun does: N copies of
// a program, each with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR=127.0.0.1 and MASTER_PORT (a free port) in its environment
// (core/distributed/worker_place.h reads them). It waits for all of them;
// when one fails, the others get `grace` to notice on their own (their
// collectives fail and they exit naming the rank), then SIGTERM, then
// SIGKILL, so that a job never hangs on a dead worker.
//
//   LaunchOptions launch{.nproc = 2, .argv = {"/path/run", "--spec=s.pbtxt"}};
//   absl::StatusOr<int> code = LaunchLocalWorkers(launch);  // 0: all succeeded

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moelab {

struct LaunchOptions {
  int nproc = 1;
  // The workers' command line; argv[0] is the program to run.
  std::vector<std::string> argv;
  std::chrono::milliseconds grace{std::chrono::seconds(30)};
  // 0: a port the kernel reports free.
  int master_port = 0;
  // Extra NAME=VALUE entries for every worker's environment, and names to
  // leave out of it (a test's workers must not write the test's own files,
  // such as Bazel's XML_OUTPUT_FILE).
  std::vector<std::string> environment;
  std::vector<std::string> unset_environment;
};

// Runs the workers to the end. Returns 0 when every worker exited 0, else
// the exit code of the first worker that failed (128 + signal for a
// signal), after reporting on stderr which rank failed and how. Errors:
// nproc < 1, a port that cannot be found, a fork that fails.
absl::StatusOr<int> LaunchLocalWorkers(const LaunchOptions& options);

// A TCP port on 127.0.0.1 that was free a moment ago.
absl::StatusOr<int> FreeLoopbackPort();

// The variables through which Bazel's test runner hands a test its output
// files and shard: a test that starts workers of itself leaves them out of
// the workers' environment (LaunchOptions::unset_environment), so that only
// the test writes them.
std::vector<std::string> TestRunnerVariables();

}  // namespace moelab

#endif  // MOELAB_CORE_DISTRIBUTED_LOCAL_LAUNCHER_H_
