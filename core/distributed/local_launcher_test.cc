#include "core/distributed/local_launcher.h"

#include <gtest/gtest.h>

#include <chrono>

namespace moelab {
namespace {

LaunchOptions Shell(int nproc, const std::string& script) {
  return LaunchOptions{
      .nproc = nproc, .argv = {"/bin/sh", "-c", script}, .grace = std::chrono::milliseconds(500)};
}

TEST(LocalLauncherTest, EveryWorkerGetsItsPlace) {
  // Each worker checks the variables worker_place.h reads.
  absl::StatusOr<int> code = LaunchLocalWorkers(Shell(
      3,
      R"(test "$WORLD_SIZE" = 3 && test "$LOCAL_WORLD_SIZE" = 3 && test "$RANK" = "$LOCAL_RANK" &&
            test "$RANK" -ge 0 && test "$RANK" -lt 3 && test "$MASTER_ADDR" = 127.0.0.1 &&
            test "$MASTER_PORT" -gt 0)"));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(LocalLauncherTest, AFailedWorkerStopsTheOthers) {
  const auto start = std::chrono::steady_clock::now();
  // Rank 1 fails at once; rank 0 would run for a minute.
  absl::StatusOr<int> code =
      LaunchLocalWorkers(Shell(2, R"(if test "$RANK" = 1; then exit 3; fi; sleep 60)"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 3);     // the first failure's status
  EXPECT_LT(seconds, 10);  // 0.5 s grace, then SIGTERM
}

TEST(LocalLauncherTest, ReportsASignalAsItsExitCode) {
  absl::StatusOr<int> code = LaunchLocalWorkers(Shell(1, "kill -9 $$"));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + 9);
}

TEST(LocalLauncherTest, RefusesNoWorkers) {
  absl::StatusOr<int> code = LaunchLocalWorkers(Shell(0, "true"));
  ASSERT_FALSE(code.ok());
  EXPECT_NE(code.status().message().find("--nproc_per_node: 0"), std::string::npos);
}

TEST(LocalLauncherTest, FindsAFreePort) {
  absl::StatusOr<int> port = FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace moelab
