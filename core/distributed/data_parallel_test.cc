// Data parallelism against one process: 2 workers, each on half of every
// batch, must take the same steps as one process on the whole batch. The
// test starts its own workers (this binary again, through the local
// launcher) on loopback; they find WORLD_SIZE set and run the worker half.

#include "core/distributed/data_parallel.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/distributed/local_launcher.h"
#include "core/distributed/process_groups.h"
#include "core/distributed/worker_place.h"
#include "core/train_step.h"
#include "experiments/testing/tiny_lm.h"

namespace moelab {
namespace {

constexpr int kSteps = 3;
constexpr double kClipNorm = 0.5;
constexpr char kOutputVariable[] = "MOELAB_DATA_PARALLEL_TEST_OUTPUT";

struct Case {
  std::string name;
  std::string router;
  // 0: dropless. At 0.75 each of the 4 experts keeps 24 of the batch's 128
  // (token, expert) pairs, 96 in all: every step drops some.
  double capacity_factor;
  DropPolicy drop_policy;
};

// What a run of kSteps steps leaves: the losses of each step (means over
// the ranks), the gradients of the first step and the final parameters.
struct Trace {
  std::vector<double> losses;
  std::vector<at::Tensor> first_gradients;
  std::vector<at::Tensor> final_parameters;
};

ExperimentSpec CaseSpec(const Case& c) {
  ExperimentSpec spec = TinyMoeLmSpec(c.router, /*top_k=*/2);
  RouterSpec* router = spec.mutable_router();
  router->set_load_balance_coef(0.01);
  if (c.router == "token_choice") {
    router->mutable_token_choice()->set_capacity_factor(c.capacity_factor);
    router->mutable_token_choice()->set_drop_policy(c.drop_policy);
  } else if (c.router == "unified") {
    // A selection across the batch's sequences: the shards' scores are
    // gathered (core/batch_collective.h).
    router->mutable_unified()->set_scope(PER_POSITION);
  }
  return spec;
}

// One process (`groups` null) on whole batches, or one worker of a job on
// its shard of each.
Trace Train(const Case& c, const ProcessGroups* groups) {
  ExperimentSpec spec = CaseSpec(c);
  absl::StatusOr<std::shared_ptr<Model>> model = MakeTinyMoeLm(&spec, /*seed=*/1);
  EXPECT_TRUE(model.ok()) << model.status();
  std::vector<at::Tensor> parameters = (*model)->parameters();
  std::unique_ptr<DataParallel> data_parallel;
  std::optional<ScopedBatchCollective> collective;
  if (groups != nullptr) {
    data_parallel = std::make_unique<DataParallel>(*groups, parameters, std::vector<at::Tensor>{},
                                                   DataParallelOptions{});
    absl::Status synced = data_parallel->SyncInitialState((*model)->buffers());
    EXPECT_TRUE(synced.ok()) << synced;
    collective.emplace(&data_parallel->batch_collective());
  }
  torch::optim::SGD sgd(parameters, torch::optim::SGDOptions(0.5));
  Trace trace;
  for (int step = 0; step < kSteps; ++step) {
    Batch batch = TinyLmBatch(/*seed=*/100 + step);  // [4, 16]
    if (data_parallel) batch = ShardOf(batch, data_parallel->shard(), data_parallel->shards());
    absl::StatusOr<StepLosses> losses =
        TrainStep(**model, sgd, batch, kClipNorm, data_parallel.get());
    EXPECT_TRUE(losses.ok()) << losses.status();
    if (!losses.ok()) return trace;
    trace.losses.push_back(losses->loss + losses->aux_loss);
    if (step == 0) {
      for (const at::Tensor& p : parameters) trace.first_gradients.push_back(p.grad().clone());
    }
  }
  for (const at::Tensor& p : parameters) trace.final_parameters.push_back(p.detach().clone());
  return trace;
}

// The worker half: join the job the launcher described, train on this
// rank's shards, and (rank 0) save the trace where the parent reads it.
void RunWorker(const Case& c) {
  absl::StatusOr<WorkerPlace> place = WorkerPlaceFromEnvironment();
  ASSERT_TRUE(place.ok()) << place.status();
  absl::StatusOr<std::unique_ptr<ProcessGroups>> groups =
      ProcessGroups::Join(*place, {.timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(groups.ok()) << groups.status();
  const Trace trace = Train(c, groups->get());
  if ((*groups)->rank() != 0) return;
  std::vector<at::Tensor> saved = {at::tensor(trace.losses, at::kDouble)};
  saved.insert(saved.end(), trace.first_gradients.begin(), trace.first_gradients.end());
  saved.insert(saved.end(), trace.final_parameters.begin(), trace.final_parameters.end());
  torch::save(saved, std::getenv(kOutputVariable));
}

class DataParallelTest : public ::testing::TestWithParam<Case> {};

TEST_P(DataParallelTest, TwoWorkersOnHalfBatchesMatchOneProcessOnWholeBatches) {
  const Case& c = GetParam();
  if (std::getenv("WORLD_SIZE") != nullptr) {
    RunWorker(c);
    return;
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string output = std::string(tmp ? tmp : "/tmp") + "/dp_" + c.name + ".pt";
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  LaunchOptions launch{
      .nproc = 2,
      .argv = {"/proc/self/exe",
               absl::StrCat("--gtest_filter=", info->test_suite_name(), ".", info->name())},
      .grace = std::chrono::seconds(10),
      .environment = {absl::StrCat(kOutputVariable, "=", output), "OMP_NUM_THREADS=1",
                      "OPENBLAS_NUM_THREADS=1"},
      .unset_environment = TestRunnerVariables()};
  absl::StatusOr<int> code = LaunchLocalWorkers(launch);
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(*code, 0) << "a worker failed";

  const Trace reference = Train(c, nullptr);
  std::vector<at::Tensor> saved;
  torch::load(saved, output);
  const size_t n = reference.final_parameters.size();
  ASSERT_EQ(saved.size(), 1 + 2 * n);
  // fp32: the shard-then-average order of the sums differs from one
  // process's, so agreement is to rounding, not to the bit.
  constexpr double kTolerance = 2e-5;
  const at::Tensor losses = saved[0];
  for (int step = 0; step < kSteps; ++step) {
    EXPECT_NEAR(losses[step].item<double>(), reference.losses[step],
                kTolerance * std::abs(reference.losses[step]))
        << "step " << step;
  }
  for (size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(at::allclose(saved[1 + i], reference.first_gradients[i], kTolerance, 1e-6))
        << "first-step gradient of parameter " << i << ": max difference "
        << (saved[1 + i] - reference.first_gradients[i]).abs().max().item<double>();
    EXPECT_TRUE(at::allclose(saved[1 + n + i], reference.final_parameters[i], kTolerance, 1e-6))
        << "final parameter " << i << ": max difference "
        << (saved[1 + n + i] - reference.final_parameters[i]).abs().max().item<double>();
  }
  // The run was not trivially equal: training moved the parameters.
  double moved = 0;
  ExperimentSpec spec = CaseSpec(c);
  absl::StatusOr<std::shared_ptr<Model>> initial = MakeTinyMoeLm(&spec, /*seed=*/1);
  ASSERT_TRUE(initial.ok());
  const std::vector<at::Tensor> start = (*initial)->parameters();
  for (size_t i = 0; i < n; ++i) {
    moved += (reference.final_parameters[i] - start[i]).abs().max().item<double>();
  }
  EXPECT_GT(moved, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(
    Routers, DataParallelTest,
    ::testing::Values(Case{"dropless", "token_choice", 0, DROP_BY_SCORE},
                      Case{"capacity_by_score", "token_choice", 0.75, DROP_BY_SCORE},
                      Case{"capacity_by_position", "token_choice", 0.75, DROP_BY_POSITION},
                      Case{"unified_per_position", "unified", 0, DROP_BY_SCORE}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace moelab
