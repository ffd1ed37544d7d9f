#include "core/distributed/process_groups.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/distributed/local_launcher.h"

namespace moelab {
namespace {

using ::testing::HasSubstr;

WorkerPlace Place(int rank, int world_size, int port) {
  WorkerPlace place;
  place.rank = rank;
  place.world_size = world_size;
  place.master_addr = "127.0.0.1";
  place.master_port = port;
  place.launcher = "test";
  return place;
}

TEST(ProcessGroupsTest, ExpertParallelMustDivideTheWorkers) {
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(Place(0, 2, 1), {.expert_parallel = 3});
  ASSERT_FALSE(groups.ok());
  EXPECT_EQ(groups.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(groups.status().message()),
              HasSubstr("runtime.distributed.expert_parallel: 3 must be at least 1 and divide "
                        "the number of workers, 2"));
}

// Rank 0 waits for a rank 1 that never comes.
TEST(ProcessGroupsTest, ARendezvousNobodyJoinsTimesOutNamingTheAddress) {
  const int port = *FreeLoopbackPort();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(Place(0, 2, port), {.timeout = std::chrono::seconds(2)});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(groups.ok());
  EXPECT_EQ(groups.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(groups.status().message()),
              HasSubstr(absl::StrCat("rank 0: the rendezvous at 127.0.0.1:", port)));
  EXPECT_THAT(std::string(groups.status().message()),
              HasSubstr("within 2 s for 2 workers (missing: rank 1)"));
  EXPECT_LT(seconds, 30);
}

// Rank 1 finds no rank 0 serving the store.
TEST(ProcessGroupsTest, AMissingRankZeroTimesOutNamingTheAddress) {
  const int port = *FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(Place(1, 2, port), {.timeout = std::chrono::seconds(2)});
  ASSERT_FALSE(groups.ok());
  EXPECT_THAT(std::string(groups.status().message()),
              HasSubstr(absl::StrCat("rank 1: the rendezvous at 127.0.0.1:", port)));
}

TEST(ProcessGroupsTest, OneWorkerHasNoGroupsToTalkTo) {
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(Place(0, 1, *FreeLoopbackPort()), {});
  ASSERT_TRUE(groups.ok()) << groups.status();
  EXPECT_FALSE((*groups)->world());
  EXPECT_FALSE((*groups)->experts());
  EXPECT_FALSE((*groups)->expert_replicas());
}

// Inside a death test: a one-worker job's groups (which install the
// terminate handler), or exit status 3 when joining fails.
std::unique_ptr<ProcessGroups> JoinAloneOrExit() {
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(Place(0, 1, *FreeLoopbackPort()), {});
  if (!groups.ok()) std::_Exit(3);
  return *std::move(groups);
}

// An exception in a thread LibTorch started (its store client's listener,
// gloo's transport loop) ends the process with one error line that names
// the cause and the ranks' state, not a SIGABRT.
TEST(ProcessGroupsTest, AnExceptionInABackgroundThreadIsReportedAsAnError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const std::unique_ptr<ProcessGroups> groups = JoinAloneOrExit();
        std::thread([] { throw std::runtime_error("Connection reset by peer"); }).join();
      },
      ::testing::ExitedWithCode(1),
      "^error: rank 0: a background thread of the distributed runtime failed: Connection "
      "reset by peer; every rank still answers its heartbeat\n$");
}

void Throw() { throw std::runtime_error("thrown in a destructor"); }
void CallWithoutThrowing(void (*f)()) noexcept { f(); }

// The joining thread itself can also end in std::terminate (an exception
// through a noexcept function); the line says so instead of blaming a thread.
TEST(ProcessGroupsTest, AnExceptionThroughANoexceptFunctionIsReportedAsAnError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const std::unique_ptr<ProcessGroups> groups = JoinAloneOrExit();
        CallWithoutThrowing(Throw);
      },
      ::testing::ExitedWithCode(1),
      "^error: rank 0: an exception escaped through a function that may not throw: thrown in "
      "a destructor; every rank still answers its heartbeat\n$");
}

}  // namespace
}  // namespace moelab
