#ifndef MOELAB_CORE_DISTRIBUTED_WORKER_PLACE_H_
#define MOELAB_CORE_DISTRIBUTED_WORKER_PLACE_H_

// Where this process sits in a multi-process job, read from the variables a
// launcher sets, so that one binary runs under any of them unchanged:
//
//   launcher                 rank          world size     local rank
//   run --nproc_per_node=N   RANK          WORLD_SIZE     LOCAL_RANK
//   torchrun                 RANK          WORLD_SIZE     LOCAL_RANK
//   Slurm's srun             SLURM_PROCID  SLURM_NTASKS   SLURM_LOCALID
//
// and, for all of them, MASTER_ADDR and MASTER_PORT: where rank 0 serves the
// rendezvous (c10d's TCPStore). torchrun's variables win when both sets are
// present (torchrun inside a Slurm allocation). Under srun, MASTER_ADDR must
// be exported by the job script, e.g.
//   export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
// since Slurm does not say on which host rank 0 runs.

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace moelab {

struct WorkerPlace {
  int rank = 0;
  int world_size = 1;
  // The rank among the workers of this machine, and how many they are
  // (LOCAL_WORLD_SIZE, or Slurm's SLURM_NTASKS_PER_NODE when it is one
  // number; 1 when unknown).
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // "single process", "torchrun-style variables" or "Slurm".
  std::string launcher = "single process";

  bool distributed() const { return world_size > 1; }
};

// Reads one environment variable; nullopt when it is unset.
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string&)>;

// The process environment (getenv).
std::optional<std::string> ProcessEnvironment(const std::string& name);

// The place the environment describes: a single process when neither
// WORLD_SIZE nor SLURM_NTASKS is set. Errors name the variable and what was
// expected (an integer, a rank below the world size, MASTER_ADDR under
// Slurm, a port in 1..65535).
absl::StatusOr<WorkerPlace> WorkerPlaceFromEnvironment(
    const EnvironmentLookup& lookup = ProcessEnvironment);

}  // namespace moelab

#endif  // MOELAB_CORE_DISTRIBUTED_WORKER_PLACE_H_
