#ifndef MOELAB_CORE_DISTRIBUTED_PROCESS_GROUPS_H_
#define MOELAB_CORE_DISTRIBUTED_PROCESS_GROUPS_H_

// The c10d process groups of one job: every rank meets at rank 0's
// TCPStore, then talks through gloo (ProcessGroupGloo, the CPU backend
// LibTorch ships). Nothing here implements a collective; it joins, names
// the groups, and turns failures into errors that name the rank at fault.
//
// Example: 4 ranks, experts split over pairs of ranks.
//
//   absl::StatusOr<std::unique_ptr<ProcessGroups>> groups = ProcessGroups::Join(
//       place, {.expert_parallel = 2, .timeout = std::chrono::seconds(60)});
//   if (!groups.ok()) return groups.status();  // names MASTER_ADDR:PORT
//   (*groups)->world();            // ranks 0..3: replicated parameters
//   (*groups)->experts();          // {0, 1} or {2, 3}: one set of experts
//   (*groups)->expert_replicas();  // {0, 2} or {1, 3}: the same experts
//
// Groups of one rank are null, and so is expert_replicas() without expert
// parallelism: callers skip the collective.

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "core/distributed/worker_place.h"

namespace moelab {

struct DistributedOptions {
  // Ranks that split one set of experts; divides the world size.
  int expert_parallel = 1;
  // How long the rendezvous, and each collective, may wait for a peer.
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
};

class ProcessGroups {
 public:
  // Joins the job `place` describes (blocking until every rank has arrived
  // or `options.timeout` has passed). Installs a std::terminate handler: an
  // exception in a thread LibTorch runs (its store client's listener, gloo's
  // transport loop; a peer's reset connection throws there) ends the process
  // with exit status 1 and one "error: rank R: a background thread of the
  // distributed runtime failed: <cause>; <DescribeFailure()>" line instead
  // of a SIGABRT that names nothing (and so does an exception through a
  // noexcept function on the joining thread, saying so).
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> Join(const WorkerPlace& place,
                                                             const DistributedOptions& options);
  ~ProcessGroups();
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  const WorkerPlace& place() const { return place_; }
  const DistributedOptions& options() const { return options_; }
  int rank() const { return place_.rank; }
  int world_size() const { return place_.world_size; }

  const c10::intrusive_ptr<c10d::ProcessGroup>& world() const { return world_; }
  const c10::intrusive_ptr<c10d::ProcessGroup>& experts() const { return experts_; }
  const c10::intrusive_ptr<c10d::ProcessGroup>& expert_replicas() const { return expert_replicas_; }

  // After a collective failed: which ranks stopped answering. Every rank
  // bumps a heartbeat counter in the store once a second; this reads them
  // twice, `kHeartbeatWindow` apart, and names the ranks whose counter
  // stood still (or rank 0, when its store cannot be reached).
  std::string DescribeFailure() const;

  static constexpr std::chrono::milliseconds kHeartbeatPeriod{500};
  static constexpr std::chrono::milliseconds kHeartbeatWindow{2000};

 private:
  ProcessGroups(const WorkerPlace& place, const DistributedOptions& options);
  void Heartbeat();

  WorkerPlace place_;
  DistributedOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  // A connection of its own, so that a collective blocked on the main
  // store connection never stops the heartbeat.
  c10::intrusive_ptr<c10d::Store> heartbeat_store_;
  c10::intrusive_ptr<c10d::ProcessGroup> world_, experts_, expert_replicas_;
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
};

// Waits for `work` and turns a failure into an error: "<what> failed on
// rank R: <c10d's message>; <groups.DescribeFailure()>".
absl::Status WaitForCollective(const c10::intrusive_ptr<c10d::Work>& work,
                               const ProcessGroups& groups, const std::string& what);

// A collective that failed inside a forward or backward pass; its message
// already names the rank at fault (ProcessGroups::DescribeFailure).
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The same inside a forward or backward pass, where there is no Status to
// return: a failure throws CollectiveError with that message, and the
// training step (or the run's error boundary, core/trainer.h) reports it.
void WaitForCollectiveOrThrow(const c10::intrusive_ptr<c10d::Work>& work,
                              const ProcessGroups& groups, const std::string& what);

}  // namespace moelab

#endif  // MOELAB_CORE_DISTRIBUTED_PROCESS_GROUPS_H_
