#include "core/tasks/language_modeling.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/data/token_stream_dataset.h"
#include "core/evaluation.h"

namespace moelab {
namespace {

// [N, T] per-token NLL (float64) of logits [N, T, V] (or [N, V]) at targets
// [N, T] (or [N]); the log-softmax runs in the logits' precision so that no
// float64 copy of the vocabulary-wide tensor is made.
at::Tensor TokenNll(const at::Tensor& logits, const at::Tensor& targets) {
  return -at::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(at::kDouble);
}

}  // namespace

ThroughputUnit LanguageModeling::Unit() const {
  return {.label = "tok", .name = "tokens", .per_example = sequence_length_};
}

void LanguageModeling::CompleteEpoch(EpochMetrics* epoch) const {
  epoch->set_valid_perplexity(std::exp(epoch->valid_loss()));
  epoch->set_tokens_per_s(epoch->examples_per_s() * sequence_length_);
}

void LanguageModeling::CompleteFinal(const EvaluationSpec& evaluation,
                                     FinalMetrics* final_metrics) const {
  final_metrics->set_valid_perplexity(std::exp(final_metrics->valid_loss()));
  if (evaluation.test_at_end()) {
    final_metrics->set_test_perplexity(std::exp(final_metrics->test_loss()));
  }
}

void LanguageModeling::CompleteCorrupted(CorruptedMetrics* corrupted) const {
  corrupted->set_perplexity(std::exp(corrupted->loss()));
}

absl::Status LanguageModeling::EvaluateFinal(const TaskEvaluationContext& context,
                                             FinalMetrics* final_metrics) const {
  // The add-one unigram model of the training stream, or of the training
  // subset's windows (TokenStreamDataset::UnigramPerplexity); a dataset that
  // is not a token stream has none, and the summary says so.
  if (absl::StatusOr<double> unigram = UnigramPerplexity(context.data, Split::kValid);
      unigram.ok()) {
    final_metrics->set_unigram_perplexity(*unigram);
  }
  if (context.model.IsCausal() && context.evaluation.generation_eval_sequences() > 0) {
    const SubsetPerplexities subset = PerplexitiesOnValidSubset(
        context.model, context.data, context.evaluation.generation_eval_sequences(),
        context.batch_size, context.leaks_future, context.device);
    final_metrics->set_generation_perplexity(subset.generation);
    final_metrics->set_teacher_forced_perplexity_same_subset(subset.teacher_forced);
    final_metrics->set_leak_nll_gap(subset.leak.mean);
    final_metrics->set_leak_nll_gap_ci95(context.leaks_future ? subset.leak.half_width : 0);
    final_metrics->set_leak_sequences(subset.leak.n);
  }
  return absl::OkStatus();
}

double LanguageModeling::ValidFigure(const EpochMetrics& epoch) const {
  return epoch.valid_perplexity();
}

Headline LanguageModeling::CorruptedHeadline(const CorruptedMetrics& corrupted) const {
  return {.name = "perplexity", .value = corrupted.perplexity()};
}

std::string LanguageModeling::FormatFinal(const RunResult& result) const {
  const FinalMetrics& f = result.final();
  std::string out = absl::StrFormat("valid perplexity %.2f", f.valid_perplexity());
  if (f.test_perplexity() > 0) {
    absl::StrAppendFormat(&out, "  test perplexity %.2f", f.test_perplexity());
  }
  out += f.unigram_perplexity() > 0
             ? absl::StrFormat("  (unigram baseline %.2f)\n", f.unigram_perplexity())
             : "  (no unigram baseline: the dataset is not a token stream)\n";
  if (result.non_causal_router_in_causal_model() && f.generation_perplexity() > 0) {
    absl::StrAppendFormat(&out,
                          "NON-CAUSAL ROUTER: generation-time perplexity %.2f vs "
                          "teacher-forced %.2f on the same %d sequences; leak %+.4f "
                          "nats/token, 95%% interval [%+.4f, %+.4f]\n",
                          f.generation_perplexity(), f.teacher_forced_perplexity_same_subset(),
                          f.leak_sequences(), f.leak_nll_gap(),
                          f.leak_nll_gap() - f.leak_nll_gap_ci95(),
                          f.leak_nll_gap() + f.leak_nll_gap_ci95());
  }
  return out;
}

SubsetPerplexities PerplexitiesOnValidSubset(Model& model, const Dataset& data, int sequences,
                                             int64_t batch_size, bool prefix_only_routing,
                                             const c10::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t n = std::min<int64_t>(sequences, data.NumExamples(Split::kValid));
  // Per sequence: mean NLL per token, teacher-forced and generation-time.
  std::vector<double> teacher(n), generation(n);
  double teacher_sum = 0, generation_sum = 0;
  int64_t tokens = 0;
  // batch_size sequences at a time, so memory stays that of one evaluation
  // batch whatever `sequences` asks for.
  for (int64_t start = 0; start < n; start += batch_size) {
    std::vector<int64_t> indices;
    for (int64_t i = start; i < std::min(n, start + batch_size); ++i) indices.push_back(i);
    const Batch batch = ToDevice(data.GetExamples(Split::kValid, indices), device);
    const int64_t length = batch.inputs.size(1);
    const at::Tensor teacher_nll =  // [b, T]
        TokenNll(model.Forward(batch, ForwardOptions{}).logits, batch.targets);
    at::Tensor generation_nll = teacher_nll;
    if (prefix_only_routing) {
      generation_nll = at::empty_like(teacher_nll);
      for (int64_t t = 0; t < length; ++t) {
        const Batch prefix{batch.inputs.slice(1, 0, t + 1), batch.targets.slice(1, 0, t + 1)};
        generation_nll.select(1, t).copy_(
            TokenNll(model.Forward(prefix, ForwardOptions{}).logits.select(1, t),
                     batch.targets.select(1, t)));
      }
    }
    const at::Tensor teacher_mean = teacher_nll.mean(1).contiguous().cpu();
    const at::Tensor generation_mean = generation_nll.mean(1).contiguous().cpu();
    for (size_t i = 0; i < indices.size(); ++i) {
      teacher[start + i] = teacher_mean.data_ptr<double>()[i];
      generation[start + i] = generation_mean.data_ptr<double>()[i];
    }
    teacher_sum += teacher_nll.sum().item<double>();
    generation_sum += generation_nll.sum().item<double>();
    tokens += teacher_nll.numel();
  }
  SubsetPerplexities out;
  if (tokens == 0) return out;
  out.teacher_forced = std::exp(teacher_sum / tokens);
  out.generation = std::exp(generation_sum / tokens);
  std::vector<double> gap(n);
  for (int64_t i = 0; i < n; ++i) gap[i] = generation[i] - teacher[i];
  out.leak = MeanWithInterval95(gap);
  return out;
}

MOELAB_REGISTER_TASK(kLanguageModelingTask,
                     {.description = "next-token prediction, reported as perplexity",
                      .inputs = TaskInputs::kTokens,
                      .create = [](const DatasetInfo& info) -> std::unique_ptr<Task> {
                        return std::make_unique<LanguageModeling>(info);
                      }});

}  // namespace moelab
