#include "core/distributed/process_groups.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/checkpoint.h"

namespace moelab {
namespace {

bool IsLoopback(const std::string& addr) {
  return addr == "localhost" || addr == "::1" || absl::StartsWith(addr, "127.");
}

// The network device gloo binds: loopback for a job on one machine; the
// interface GLOO_SOCKET_IFNAME names (as in PyTorch); else the address this
// machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> GlooDevice(const WorkerPlace& place) {
  if (IsLoopback(place.master_addr)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface && *interface) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::ProcessGroup> MakeGroup(const c10::intrusive_ptr<c10d::Store>& store,
                                                 const std::string& prefix, int rank, int size,
                                                 const WorkerPlace& place,
                                                 std::chrono::milliseconds timeout) {
  if (size <= 1) return {};
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(GlooDevice(place));
  options->threads = 1;  // one in flight at a time is what a 1-thread worker can feed
  return c10::make_intrusive<c10d::ProcessGroupGloo>(
      c10::make_intrusive<c10d::PrefixStore>(prefix, store), rank, size, options);
}

// The rendezvous connection (`join`: rank 0's serves the store) or a later
// side connection to it. The store's own wait for its workers is off: Join
// waits for every rank's key instead, and can name the missing ones.
c10::intrusive_ptr<c10d::Store> ConnectStore(const WorkerPlace& place, bool join,
                                             std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(place.master_port);
  options.isServer = join && place.rank == 0;
  options.waitWorkers = false;
  options.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(place.master_addr, options);
}

std::string HeartbeatKey(int rank) { return absl::StrCat("moelab/heartbeat/", rank); }

// The joined groups of this process and the thread that joined them, for
// the terminate handler below.
std::atomic<const ProcessGroups*> g_joined{nullptr};
std::thread::id g_joining_thread;

// LibTorch's store clients and gloo's transport run threads of their own,
// and an error there (a peer's connection reset when it is killed) is an
// uncaught exception: std::terminate, a SIGABRT with no word of the cause.
// This reports it as the main thread would report a failed collective, one
// "error: rank R: ..." line naming the rank at fault, and exits with 1.
[[noreturn]] void ReportTermination() {
  static std::atomic<bool> reporting{false};
  if (reporting.exchange(true)) {
    // A second thread failed while the first report is being written (its
    // DescribeFailure connects to the store, which may fail the same way).
    std::this_thread::sleep_for(2 * ProcessGroups::kHeartbeatWindow + std::chrono::seconds(10));
    std::_Exit(1);
  }
  std::string cause = "std::terminate without an exception";
  if (std::exception_ptr exception = std::current_exception()) {
    try {
      std::rethrow_exception(exception);
    } catch (const std::exception& e) {
      cause = ExceptionMessage(e);
    } catch (...) {
      cause = "an exception of unknown type";
    }
  }
  const ProcessGroups* groups = g_joined.load();
  const std::string rank = groups ? absl::StrCat("rank ", groups->rank(), ": ") : "";
  const std::string who = groups ? absl::StrCat("; ", groups->DescribeFailure()) : "";
  const char* where = std::this_thread::get_id() == g_joining_thread
                          ? "an exception escaped through a function that may not throw"
                          : "a background thread of the distributed runtime failed";
  std::fprintf(stderr, "error: %s%s: %s%s\n", rank.c_str(), where, cause.c_str(), who.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace

ProcessGroups::ProcessGroups(const WorkerPlace& place, const DistributedOptions& options)
    : place_(place), options_(options) {}

ProcessGroups::~ProcessGroups() {
  const ProcessGroups* self = this;
  g_joined.compare_exchange_strong(self, nullptr);
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Join(
    const WorkerPlace& place, const DistributedOptions& options) {
  const int world = place.world_size;
  const int ep = options.expert_parallel;
  if (ep < 1 || world % ep != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime.distributed.expert_parallel: ", ep,
                     " must be at least 1 and divide the number of workers, ", world));
  }
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups(place, options));
  const std::string where = absl::StrCat(place.master_addr, ":", place.master_port);
  const auto failed = [&](const std::string& cause, const std::string& joined) {
    const std::string message = absl::StrCat("rank ", place.rank, ": the rendezvous at ", where,
                                             " (MASTER_ADDR:MASTER_PORT) did not ",
                                             "complete within ", options.timeout.count() / 1000.0,
                                             " s for ", world, " workers", joined, ": ", cause);
    const std::string lower = absl::AsciiStrToLower(cause);
    const bool timed_out =
        absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout");
    return timed_out ? absl::DeadlineExceededError(message) : absl::UnavailableError(message);
  };
  try {
    groups->store_ = ConnectStore(place, /*join=*/true, options.timeout);
  } catch (const std::exception& e) {
    return failed(ExceptionMessage(e), "");
  }
  // Every rank says it is here and waits for the others: LibTorch 1.13's
  // store server stops waiting for its clients silently at the timeout, so
  // the rendezvous is checked here, where a missing rank can be named.
  std::vector<std::string> joined_keys;
  for (int r = 0; r < world; ++r) joined_keys.push_back(absl::StrCat("moelab/joined/", r));
  try {
    groups->store_->set(joined_keys[place.rank], std::vector<uint8_t>{1});
    groups->store_->wait(joined_keys, options.timeout);
  } catch (const std::exception& e) {
    // A fresh connection: the one whose wait timed out may be mid-reply.
    std::vector<std::string> missing;
    try {
      c10::intrusive_ptr<c10d::Store> store = ConnectStore(place, /*join=*/false, kHeartbeatWindow);
      for (int r = 0; r < world; ++r) {
        if (!store->check({joined_keys[r]})) missing.push_back(absl::StrCat(r));
      }
    } catch (...) {
      // The store itself is gone: the cause says so.
    }
    return failed(ExceptionMessage(e),
                  missing.empty() ? std::string()
                                  : absl::StrCat(" (missing: rank", missing.size() > 1 ? "s " : " ",
                                                 absl::StrJoin(missing, ", "), ")"));
  }
  try {
    groups->world_ = MakeGroup(groups->store_, "world", place.rank, world, place, options.timeout);
    const int expert_group = place.rank / ep;
    groups->experts_ = MakeGroup(groups->store_, absl::StrCat("experts/", expert_group),
                                 place.rank % ep, ep, place, options.timeout);
    if (ep > 1) {  // without expert parallelism nothing is split, so nothing is replicated apart
      const int replica_group = place.rank % ep;
      groups->expert_replicas_ =
          MakeGroup(groups->store_, absl::StrCat("expert_replicas/", replica_group),
                    place.rank / ep, world / ep, place, options.timeout);
    }
    groups->heartbeat_store_ = ConnectStore(place, /*join=*/false, options.timeout);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", place.rank,
                                               ": connecting the process groups through ", where,
                                               " failed: ", ExceptionMessage(e)));
  }
  groups->heartbeat_ = std::thread([g = groups.get()] { g->Heartbeat(); });
  g_joining_thread = std::this_thread::get_id();
  g_joined = groups.get();
  std::set_terminate(ReportTermination);
  return groups;
}

void ProcessGroups::Heartbeat() {
  const std::string key = HeartbeatKey(place_.rank);
  while (!stop_) {
    try {
      heartbeat_store_->add(key, 1);
    } catch (...) {
      return;  // the store is gone: DescribeFailure says so
    }
    std::this_thread::sleep_for(kHeartbeatPeriod);
  }
}

std::string ProcessGroups::DescribeFailure() const {
  const std::string store_host = absl::StrCat("rank 0 (which serves the rendezvous store at ",
                                              place_.master_addr, ":", place_.master_port, ")");
  try {
    c10::intrusive_ptr<c10d::Store> store = ConnectStore(place_, /*join=*/false, kHeartbeatWindow);
    std::vector<int64_t> before(place_.world_size);
    for (int r = 0; r < place_.world_size; ++r) before[r] = store->add(HeartbeatKey(r), 0);
    std::this_thread::sleep_for(kHeartbeatWindow);
    std::vector<std::string> silent;
    for (int r = 0; r < place_.world_size; ++r) {
      if (r != place_.rank && store->add(HeartbeatKey(r), 0) == before[r]) {
        silent.push_back(absl::StrCat(r));
      }
    }
    if (silent.empty()) return "every rank still answers its heartbeat";
    return absl::StrCat(silent.size() == 1 ? "rank " : "ranks ", absl::StrJoin(silent, ", "),
                        silent.size() == 1 ? " has" : " have",
                        " stopped answering (no heartbeat for ", kHeartbeatWindow.count() / 1000.0,
                        " s)");
  } catch (const std::exception&) {
    return absl::StrCat(store_host, " cannot be reached: it has stopped");
  }
}

absl::Status WaitForCollective(const c10::intrusive_ptr<c10d::Work>& work,
                               const ProcessGroups& groups, const std::string& what) {
  try {
    work->wait();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(what, " failed on rank ", groups.rank(), ": ",
                                               ExceptionMessage(e), "; ",
                                               groups.DescribeFailure()));
  }
}

void WaitForCollectiveOrThrow(const c10::intrusive_ptr<c10d::Work>& work,
                              const ProcessGroups& groups, const std::string& what) {
  if (absl::Status s = WaitForCollective(work, groups, what); !s.ok()) {
    throw CollectiveError(std::string(s.message()));
  }
}

}  // namespace moelab
