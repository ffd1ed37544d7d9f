#ifndef MOELAB_CORE_TASKS_LANGUAGE_MODELING_H_
#define MOELAB_CORE_TASKS_LANGUAGE_MODELING_H_

// The language-modelling task (kLanguageModelingTask): next-token
// prediction, reported as perplexity exp(mean NLL per token), with the
// add-one unigram baseline of the training tokens and, for causal models,
// generation-time perplexity (each position routed with only its prefix in
// view) beside the teacher-forced one.

#include <c10/core/Device.h>

#include <cstdint>

#include "core/dataset.h"
#include "core/model.h"
#include "core/statistics.h"
#include "core/task.h"
#include "core/tasks/language_modeling_name.h"

namespace moelab {

class LanguageModeling : public Task {
 public:
  explicit LanguageModeling(const DatasetInfo& info) : sequence_length_(info.sequence_length) {}

  ThroughputUnit Unit() const override;
  void CompleteEpoch(EpochMetrics* epoch) const override;
  void CompleteFinal(const EvaluationSpec& evaluation, FinalMetrics* final_metrics) const override;
  void CompleteCorrupted(CorruptedMetrics* corrupted) const override;
  // The unigram baseline on the validation split (0 when the dataset is not
  // a token stream) and, for a causal model, generation-time perplexity on
  // the first evaluation.generation_eval_sequences validation sequences.
  absl::Status EvaluateFinal(const TaskEvaluationContext& context,
                             FinalMetrics* final_metrics) const override;
  std::string ValidFigureName() const override { return "ppl"; }
  double ValidFigure(const EpochMetrics& epoch) const override;
  Headline CorruptedHeadline(const CorruptedMetrics& corrupted) const override;
  // Perplexities, the unigram baseline, and for a router that sees later
  // tokens the generation-time perplexity and the leak.
  std::string FormatFinal(const RunResult& result) const override;

 private:
  int64_t sequence_length_;
};

// Perplexity on the first `sequences` validation sequences, teacher-forced
// and, when `prefix_only_routing`, generation-time: every position routed
// with only its prefix visible (each prefix run on its own). A causal
// router routes a position the same way with or without the future, so its
// generation-time perplexity is the teacher-forced one on the same
// sequences; every row of a table then reports it on the same subset. The
// leak is the per-sequence difference of mean NLLs (generation-time minus
// teacher-forced), with its 95% interval over the sequences.
struct SubsetPerplexities {
  double generation = 0;
  double teacher_forced = 0;
  MeanInterval leak;
};
SubsetPerplexities PerplexitiesOnValidSubset(Model& model, const Dataset& data, int sequences,
                                             int64_t batch_size, bool prefix_only_routing,
                                             const c10::Device& device);

}  // namespace moelab

#endif  // MOELAB_CORE_TASKS_LANGUAGE_MODELING_H_
