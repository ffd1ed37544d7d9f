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
#include "core/evaluation.h"
#include "core/train_step.h"
#include "experiments/testing/tiny_lm.h"
#include "google/protobuf/text_format.h"

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

// A worker's evaluation shared over the job equals its whole evaluation
// alone: 5 validation batches over 2 workers (the second's last round a
// stand-in), every figure summed back.
void ExpectShardedEvaluationWhole(Model& model, EvaluationShards& shards) {
  DatasetSpec spec;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(name: "synthetic_lm"
           synthetic_lm { vocab_size: 64 sequence_length: 16 num_sequences: 20 })pb",
      &spec));
  absl::StatusOr<std::unique_ptr<Dataset>> data = LoadDataset(spec);
  ASSERT_TRUE(data.ok()) << data.status();
  const c10::Device cpu(c10::kCPU);
  absl::StatusOr<Evaluation> sharded =
      Evaluate(model, **data, Split::kValid, /*batch_size=*/4, 0, cpu, &shards);
  absl::StatusOr<Evaluation> whole = Evaluate(model, **data, Split::kValid, 4, 0, cpu);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(sharded->targets, 5 * 4 * 16);
  EXPECT_EQ(sharded->targets, whole->targets);
  EXPECT_NEAR(sharded->loss, whole->loss, 1e-12 * whole->loss);
  EXPECT_NEAR(sharded->accuracy, whole->accuracy, 1e-12);
  ASSERT_EQ(sharded->layers.size(), whole->layers.size());
  for (size_t l = 0; l < whole->layers.size(); ++l) {
    for (int e = 0; e < whole->layers[l].expert_share_size(); ++e) {
      EXPECT_NEAR(sharded->layers[l].expert_share(e), whole->layers[l].expert_share(e), 1e-12);
    }
    EXPECT_NEAR(sharded->layers[l].values().at("gate_entropy"),
                whole->layers[l].values().at("gate_entropy"), 1e-9);
    EXPECT_NEAR(sharded->layers[l].values().at("dropped_fraction"),
                whole->layers[l].values().at("dropped_fraction"), 1e-12);
  }
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
  if (data_parallel) ExpectShardedEvaluationWhole(**model, data_parallel->evaluation_shards());
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
