#include "experiments/testing/tiny_run.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/spec.h"
#include "gtest/gtest.h"

namespace moelab {

ExperimentSpec TinyRunSpec(int epochs, const std::string& extra) {
  const std::string text =
      absl::StrCat(R"pb(
                     name: "tiny"
                     seed: 3
                     dataset {
                       name: "synthetic_lm"
                       synthetic_lm { vocab_size: 64 sequence_length: 16 num_sequences: 96 }
                     }
                     model {
                       name: "moe_transformer_lm"
                       preset: "cpu_tiny"
                       moe { num_experts: 4 expert_hidden: 32 }
                       transformer_lm { num_layers: 2 model_dim: 32 num_heads: 2 dense_hidden: 32 }
                     }
                     router { name: "token_choice" top_k: 2 load_balance_coef: 0.01 }
                     evaluation { probe_examples: 8 max_eval_batches: 2 }
                     runtime { threads: 1 }
                     training { learning_rate: 0.003 batch_size: 16 warmup_steps: 2 epochs:)pb",
                   epochs, " }\n", extra);
  absl::StatusOr<ExperimentSpec> spec = LoadSpecFromText(text, "tiny");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ExperimentSpec{};
}

}  // namespace moelab
