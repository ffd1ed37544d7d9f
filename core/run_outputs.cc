#include "core/run_outputs.h"

#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/atomic_file.h"
#include "core/layer_metric.h"
#include "core/progress.h"
#include "core/routing_metrics.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace moelab {
namespace {

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / v.size();
}

// The mean over MoE layers of the epoch's top-1 fluctuation, "7.1%"; "-"
// when no layer has one.
std::string MeanFluctuation(const EpochMetrics& epoch) {
  std::vector<double> fluct;
  for (const LayerRoutingMetrics& layer : epoch.layers()) {
    if (layer.has_fluctuation()) fluct.push_back(layer.fluctuation_top1());
  }
  return fluct.empty() ? "-" : absl::StrFormat("%.1f%%", 100 * Mean(fluct));
}

}  // namespace

std::string JsonOf(const RunResult& result) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  google::protobuf::util::MessageToJsonString(result, &json, options);
  return json;
}

namespace {

// The old fields of a LayerRoutingMetrics (a JSON object) moved into its
// "values". Every one was written with every field printed, so an old
// layer has all of them: entropies, drops and experts per token always,
// aggregated entropy above 0 only for routers with p, the aggregation pair
// only where has_aggregation was true.
// The old fields of a LayerRoutingMetrics (a JSON object) moved into its
// "values" by LegacyLayerValues' rules. JSON writes a non-finite double as
// the string "NaN", "Infinity" or "-Infinity", in both directions.
void MoveLegacyJsonFields(google::protobuf::Value* layer) {
  if (!layer->has_struct_value()) return;
  auto& fields = *layer->mutable_struct_value()->mutable_fields();
  std::map<std::string, double> old_fields;
  for (const auto& [number, name] : kLegacyLayerFields) {
    const auto found = fields.find(name);
    if (found == fields.end()) continue;
    const google::protobuf::Value& value = found->second;
    if (value.has_bool_value()) {
      old_fields[name] = value.bool_value() ? 1 : 0;
    } else if (value.has_string_value()) {
      double parsed = std::numeric_limits<double>::quiet_NaN();
      if (value.string_value() == "Infinity") parsed = std::numeric_limits<double>::infinity();
      if (value.string_value() == "-Infinity") parsed = -std::numeric_limits<double>::infinity();
      old_fields[name] = parsed;
    } else {
      old_fields[name] = value.number_value();
    }
    fields.erase(found);
  }
  if (old_fields.empty()) return;
  auto& values = *fields["values"].mutable_struct_value()->mutable_fields();
  for (const auto& [metric, value] : LegacyLayerValues(old_fields)) {
    if (values.contains(metric)) continue;
    if (std::isfinite(value)) {
      values[metric].set_number_value(value);
    } else {
      values[metric].set_string_value(std::isnan(value) ? "NaN"
                                      : value > 0       ? "Infinity"
                                                        : "-Infinity");
    }
  }
}

void MoveLegacyFieldsOfLayers(google::protobuf::Value* owner) {
  if (!owner->has_struct_value()) return;
  auto& fields = *owner->mutable_struct_value()->mutable_fields();
  const auto layers = fields.find("layers");
  if (layers == fields.end() || !layers->second.has_list_value()) return;
  for (google::protobuf::Value& layer : *layers->second.mutable_list_value()->mutable_values()) {
    MoveLegacyJsonFields(&layer);
  }
}

}  // namespace

absl::StatusOr<RunResult> ParseRunResultJson(const std::string& json, const std::string& source,
                                             bool ignore_unknown_fields) {
  google::protobuf::Value root;
  if (!google::protobuf::util::JsonStringToMessage(json, &root).ok() || !root.has_struct_value()) {
    return absl::DataLossError(absl::StrCat(source, ": not a JSON object (corrupt result file)"));
  }
  auto& fields = *root.mutable_struct_value()->mutable_fields();
  if (const auto epochs = fields.find("epochs");
      epochs != fields.end() && epochs->second.has_list_value()) {
    for (google::protobuf::Value& epoch : *epochs->second.mutable_list_value()->mutable_values()) {
      MoveLegacyFieldsOfLayers(&epoch);
    }
  }
  if (const auto final = fields.find("final"); final != fields.end()) {
    MoveLegacyFieldsOfLayers(&final->second);
  }
  std::string upgraded;
  if (!google::protobuf::util::MessageToJsonString(root, &upgraded).ok()) {
    return absl::DataLossError(absl::StrCat(source, ": cannot be re-encoded"));
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = ignore_unknown_fields;
  RunResult result;
  if (const auto s = google::protobuf::util::JsonStringToMessage(upgraded, &result, options);
      !s.ok()) {
    return absl::DataLossError(absl::StrCat(source, ": not a moelab result (", s.ToString(), ")"));
  }
  return result;
}

std::string MetricsCsv(const RunResult& result) {
  std::string csv =
      "epoch,step,train_loss,train_aux_loss,valid_loss,valid_perplexity,"
      "valid_accuracy,learning_rate,tokens_per_s,examples_per_s,epoch_wall_s,"
      "peak_rss_mb,rss_mb";
  const int layers = result.epochs_size() > 0 ? result.epochs(0).layers_size() : 0;
  // The registered layer metrics any layer of any epoch has, in name order.
  std::set<std::string> registered;
  for (const EpochMetrics& e : result.epochs()) {
    for (const LayerRoutingMetrics& m : e.layers()) {
      for (const auto& [name, value] : m.values()) registered.insert(name);
    }
  }
  for (int l = 0; l < layers; ++l) {
    absl::StrAppendFormat(
        &csv,
        ",l%d_fluct_top1,l%d_fluct_topk,l%d_load_cv,l%d_max_over_mean,l%d_dead,l%d_head_change", l,
        l, l, l, l, l);
    for (const std::string& name : registered) absl::StrAppendFormat(&csv, ",l%d_%s", l, name);
  }
  csv += "\n";
  for (const EpochMetrics& e : result.epochs()) {
    absl::StrAppendFormat(&csv, "%d,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.4g,%.1f,%.1f",
                          e.epoch(), e.step(), e.train_loss(), e.train_aux_loss(), e.valid_loss(),
                          e.valid_perplexity(), e.valid_accuracy(), e.learning_rate(),
                          e.tokens_per_s(), e.examples_per_s(), e.epoch_wall_s(), e.peak_rss_mb(),
                          e.rss_mb());
    for (const LayerRoutingMetrics& m : e.layers()) {
      auto optional = [](bool present, double value) {
        return present ? absl::StrFormat("%.6g", value) : std::string();
      };
      absl::StrAppendFormat(
          &csv, ",%s,%s,%.6g,%.6g,%d,%s", optional(m.has_fluctuation(), m.fluctuation_top1()),
          optional(m.has_fluctuation(), m.fluctuation_topk()), m.load_cv(), m.load_max_over_mean(),
          m.dead_experts(), optional(m.has_head_change(), m.head_change()));
      for (const std::string& name : registered) {
        const auto value = m.values().find(name);
        csv += "," +
               (value == m.values().end() ? std::string() : absl::StrFormat("%.6g", value->second));
      }
    }
    csv += "\n";
  }
  return csv;
}

absl::Status WriteOutputs(const std::string& dir, const RunResult& result) {
  if (absl::Status s = WriteFileAtomically(dir + "/result.json", JsonOf(result)); !s.ok()) {
    return s;
  }
  return WriteFileAtomically(dir + "/metrics.csv", MetricsCsv(result));
}

std::string FormatEpochLine(const EpochMetrics& epoch, const Task& task) {
  const Headline valid = task.ValidHeadline(epoch);
  const ThroughputUnit unit = task.Unit();
  return absl::StrFormat("epoch %d: train loss %.4f  valid %s %.4f  fluctuation %s  %.0f %s/s\n",
                         epoch.epoch(), epoch.train_loss(), valid.name, valid.value,
                         MeanFluctuation(epoch), epoch.examples_per_s() * unit.per_example,
                         unit.name);
}

std::string FormatRunSummary(const RunResult& result, const Task& task) {
  const ExperimentSpec& spec = result.spec();
  const ThroughputUnit unit = task.Unit();
  std::string out =
      absl::StrFormat("\n== %s  (router %s, spec %s, source %s, %d threads, %s) ==\n", spec.name(),
                      spec.router().name(), result.spec_hash(),
                      result.source().revision().empty() ? "unknown" : result.source().revision(),
                      result.versions().threads(), FormatDuration(result.wall_time_s()));
  absl::StrAppendFormat(&out, "%5s  %10s  %10s  %12s  %12s  %12s\n", "epoch", "train loss",
                        "valid " + task.ValidFigureName(), "fluct top-1", "gate entropy",
                        unit.name + "/s");
  for (const EpochMetrics& e : result.epochs()) {
    std::vector<double> entropy;
    for (const auto& l : e.layers()) {
      if (const std::optional<double> h = LayerValue(l, kGateEntropyMetric)) entropy.push_back(*h);
    }
    absl::StrAppendFormat(&out, "%5d  %10.4f  %10.4f  %12s  %12.4f  %12.0f\n", e.epoch(),
                          e.train_loss(), task.ValidHeadline(e).value, MeanFluctuation(e),
                          Mean(entropy), e.examples_per_s() * unit.per_example);
  }
  const FinalMetrics& f = result.final();
  out += task.FormatFinal(result);
  for (const CorruptedMetrics& c : f.corrupted()) {
    const std::string what =
        c.corruption().severity() > 0
            ? absl::StrFormat("%s severity %d", CorruptionKind_Name(c.corruption().kind()),
                              c.corruption().severity())
            : absl::StrFormat("%s rate %.2f", CorruptionKind_Name(c.corruption().kind()),
                              c.corruption().rate());
    const Headline figure = task.CorruptedHeadline(c);
    absl::StrAppendFormat(&out, "under %s: %s %.4f", what, figure.name, figure.value);
    if (c.expert_change() >= 0) {
      absl::StrAppendFormat(&out, "  (experts changed for %.1f%% of tokens)",
                            100 * c.expert_change());
    }
    out += "\n";
  }
  for (const LayerRoutingMetrics& layer : f.layers()) {
    const std::optional<double> self_weight = LayerValue(layer, kAggregationSelfWeightMetric);
    const std::optional<double> neighbours =
        LayerValue(layer, kAggregationEffectiveNeighboursMetric);
    if (!self_weight || !neighbours) continue;
    absl::StrAppendFormat(
        &out,
        "aggregation, MoE layer %d: mean self-weight %.4f, effective "
        "neighbours %.2f%s\n",
        layer.layer(), *self_weight, *neighbours,
        *self_weight > kIdentityAggregationSelfWeight ? "  (IDENTITY: p = r)" : "");
  }
  absl::StrAppendFormat(&out,
                        "experts/token %.2f  parameters %d (active/token %d)  "
                        "GFLOPs/token %.4f  peak RSS %.0f MB\n",
                        f.experts_per_token(), f.total_parameters(),
                        f.active_parameters_per_token(), f.flops_per_token() / 1e9,
                        result.epochs_size() ? result.epochs().rbegin()->peak_rss_mb() : 0.0);
  return out;
}

}  // namespace moelab
