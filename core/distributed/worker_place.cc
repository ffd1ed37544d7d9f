#include "core/distributed/worker_place.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moelab {
namespace {

// The integer in `name`, `fallback` when it is unset.
absl::StatusOr<int> IntegerVariable(const EnvironmentLookup& lookup, const std::string& name,
                                    std::optional<int> fallback) {
  const std::optional<std::string> text = lookup(name);
  if (!text.has_value()) {
    if (fallback.has_value()) return *fallback;
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, " is not set; the launcher must set it"));
  }
  int value = 0;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, "='", *text, "' is not an integer"));
  }
  return value;
}

}  // namespace

std::optional<std::string> ProcessEnvironment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

absl::StatusOr<WorkerPlace> WorkerPlaceFromEnvironment(const EnvironmentLookup& lookup) {
  struct Names {
    const char* rank;
    const char* world_size;
    const char* local_rank;
    const char* launcher;
  };
  Names names;
  if (lookup("WORLD_SIZE").has_value()) {
    names = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "torchrun-style variables"};
  } else if (lookup("SLURM_NTASKS").has_value()) {
    names = {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "Slurm"};
  } else {
    return WorkerPlace{};
  }
  WorkerPlace place;
  place.launcher = names.launcher;
  absl::StatusOr<int> world_size = IntegerVariable(lookup, names.world_size, std::nullopt);
  if (!world_size.ok()) return world_size.status();
  if (*world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", names.world_size, "=",
                                                   *world_size, ": expected at least 1"));
  }
  place.world_size = *world_size;
  absl::StatusOr<int> rank = IntegerVariable(
      lookup, names.rank, place.world_size == 1 ? std::optional<int>(0) : std::nullopt);
  if (!rank.ok()) return rank.status();
  if (*rank < 0 || *rank >= place.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", names.rank, "=", *rank,
                                                   ": expected a rank in [0, ", place.world_size,
                                                   ")"));
  }
  place.rank = *rank;
  absl::StatusOr<int> local_rank = IntegerVariable(lookup, names.local_rank, place.rank);
  if (!local_rank.ok()) return local_rank.status();
  if (*local_rank < 0 || *local_rank >= place.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", names.local_rank, "=",
                                                   *local_rank, ": expected a local rank in [0, ",
                                                   place.world_size, ")"));
  }
  place.local_rank = *local_rank;
  const std::string local_size_name =
      place.launcher == "Slurm" ? "SLURM_NTASKS_PER_NODE" : "LOCAL_WORLD_SIZE";
  if (std::optional<std::string> text = lookup(local_size_name); text.has_value()) {
    int local_world_size = 0;
    // Slurm writes "2(x3)" for uneven layouts: then it stays unknown.
    if (absl::SimpleAtoi(*text, &local_world_size) && local_world_size >= 1) {
      place.local_world_size = local_world_size;
    }
  }

  if (std::optional<std::string> addr = lookup("MASTER_ADDR"); addr.has_value() && !addr->empty()) {
    place.master_addr = *addr;
  } else if (place.world_size > 1 && place.launcher == "Slurm") {
    return absl::InvalidArgumentError(
        "environment variable MASTER_ADDR is not set: under Slurm export the host of rank 0, e.g. "
        "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)");
  }
  absl::StatusOr<int> port = IntegerVariable(lookup, "MASTER_PORT", place.master_port);
  if (!port.ok()) return port.status();
  if (*port < 1 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable MASTER_PORT=", *port, ": expected a port in 1..65535"));
  }
  place.master_port = *port;
  return place;
}

}  // namespace moelab
