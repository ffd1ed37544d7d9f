#include "core/distributed/worker_place.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

namespace moelab {
namespace {

using ::testing::HasSubstr;

EnvironmentLookup FakeEnvironment(std::map<std::string, std::string> variables) {
  return [variables](const std::string& name) -> std::optional<std::string> {
    auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

TEST(WorkerPlaceTest, NoLauncherIsOneProcess) {
  absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment(FakeEnvironment({}));
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->rank, 0);
  EXPECT_EQ(place->world_size, 1);
  EXPECT_FALSE(place->distributed());
  EXPECT_EQ(place->launcher, "single process");
}

TEST(WorkerPlaceTest, ReadsTorchrunVariables) {
  absl::StatusOr<WorkerPlace> place =
      WorkerPlaceFromEnvironment(FakeEnvironment({{"RANK", "3"},
                                                  {"WORLD_SIZE", "4"},
                                                  {"LOCAL_RANK", "1"},
                                                  {"MASTER_ADDR", "node7"},
                                                  {"MASTER_PORT", "23456"}}));
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->rank, 3);
  EXPECT_EQ(place->world_size, 4);
  EXPECT_EQ(place->local_rank, 1);
  EXPECT_EQ(place->master_addr, "node7");
  EXPECT_EQ(place->master_port, 23456);
  EXPECT_EQ(place->local_world_size, 1);  // unset
  EXPECT_TRUE(place->distributed());
}

TEST(WorkerPlaceTest, ReadsSlurmVariablesAndTorchrunWins) {
  const std::map<std::string, std::string> slurm = {{"SLURM_PROCID", "5"},
                                                    {"SLURM_NTASKS", "8"},
                                                    {"SLURM_LOCALID", "1"},
                                                    {"MASTER_ADDR", "10.0.0.2"}};
  absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment(FakeEnvironment(slurm));
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->rank, 5);
  EXPECT_EQ(place->world_size, 8);
  EXPECT_EQ(place->local_rank, 1);
  EXPECT_EQ(place->master_port, 29500);  // torchrun's default
  EXPECT_EQ(place->launcher, "Slurm");

  std::map<std::string, std::string> per_node = slurm;
  per_node["SLURM_NTASKS_PER_NODE"] = "4";
  EXPECT_EQ(WorkerPlaceFromEnvironment(FakeEnvironment(per_node))->local_world_size, 4);
  per_node["SLURM_NTASKS_PER_NODE"] = "2(x3)";
  EXPECT_EQ(WorkerPlaceFromEnvironment(FakeEnvironment(per_node))->local_world_size, 1);

  std::map<std::string, std::string> both = slurm;
  both["RANK"] = "0";
  both["WORLD_SIZE"] = "2";
  place = WorkerPlaceFromEnvironment(FakeEnvironment(both));
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->world_size, 2);
  EXPECT_EQ(place->launcher, "torchrun-style variables");
}

TEST(WorkerPlaceTest, RefusesBadVariablesNamingThem) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string message;
  };
  const Case cases[] = {
      {{{"WORLD_SIZE", "two"}}, "WORLD_SIZE='two' is not an integer"},
      {{{"WORLD_SIZE", "0"}}, "WORLD_SIZE=0: expected at least 1"},
      {{{"WORLD_SIZE", "2"}}, "RANK is not set"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "2"}}, "RANK=2: expected a rank in [0, 2)"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "-1"}}, "RANK=-1"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"LOCAL_RANK", "9"}}, "LOCAL_RANK=9"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_PORT", "70000"}},
       "MASTER_PORT=70000: expected a port in 1..65535"},
      {{{"SLURM_NTASKS", "2"}, {"SLURM_PROCID", "1"}}, "MASTER_ADDR is not set"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment(FakeEnvironment(c.env));
    ASSERT_FALSE(place.ok()) << c.message;
    EXPECT_EQ(place.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(place.status().message()), HasSubstr(c.message));
  }
}

TEST(WorkerPlaceTest, OneWorkerNeedsNoRank) {
  absl::StatusOr<WorkerPlace> place =
      WorkerPlaceFromEnvironment(FakeEnvironment({{"WORLD_SIZE", "1"}}));
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->rank, 0);
  EXPECT_FALSE(place->distributed());
}

}  // namespace
}  // namespace moelab
