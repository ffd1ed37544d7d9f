#include "models/expert_parallel.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cstdint>
#include <numeric>

#include "models/grouped_ffn.h"

namespace moelab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class ExchangeRowsFunction : public torch::autograd::Function<ExchangeRowsFunction> {
 public:
  // `exchange_address`: the ExpertExchange, which the MoE layer owns and
  // which outlives every graph built through it (saved_data holds only
  // IValues, hence the integer).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows,
                            const std::vector<int64_t>& send_rows,
                            const std::vector<int64_t>& receive_rows, int64_t exchange_address) {
    ctx->saved_data["send_rows"] = send_rows;
    ctx->saved_data["receive_rows"] = receive_rows;
    ctx->saved_data["exchange"] = exchange_address;
    auto* exchange = reinterpret_cast<ExpertExchange*>(exchange_address);
    return exchange->AllToAll(rows.contiguous(), send_rows, receive_rows);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* exchange = reinterpret_cast<ExpertExchange*>(ctx->saved_data["exchange"].toInt());
    const std::vector<int64_t> send_rows = ctx->saved_data["send_rows"].toIntVector();
    const std::vector<int64_t> receive_rows = ctx->saved_data["receive_rows"].toIntVector();
    at::Tensor grad = exchange->AllToAll(grad_outputs[0].contiguous(), receive_rows, send_rows);
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor ExchangeRows(ExpertExchange& exchange, const at::Tensor& rows,
                        const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& receive_rows) {
  return ExchangeRowsFunction::apply(rows, send_rows, receive_rows,
                                     reinterpret_cast<int64_t>(&exchange));
}

at::Tensor ExpertParallelFfn(ExpertExchange& exchange, const at::Tensor& x_sorted,
                             const std::vector<int64_t>& group_sizes, const at::Tensor& w1,
                             const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                             Activation activation) {
  const int64_t ranks = exchange.size();
  const int64_t num_experts = static_cast<int64_t>(group_sizes.size());
  const int64_t local = w1.size(0);
  TORCH_CHECK(local * ranks == num_experts, "ExpertParallelFfn: ", num_experts, " experts over ",
              ranks, " ranks, but this rank holds ", local);
  // Rows for each destination rank: the experts it holds are contiguous in
  // the global order, and so are their rows in x_sorted.
  std::vector<int64_t> send_rows(ranks, 0);
  for (int64_t e = 0; e < num_experts; ++e) send_rows[e / local] += group_sizes[e];
  // received[s * local + i]: rows rank s sends to this rank's expert i.
  const std::vector<int64_t> received = exchange.ExchangeCounts(group_sizes);
  std::vector<int64_t> receive_rows(ranks, 0), local_sizes(local, 0);
  for (int64_t s = 0; s < ranks; ++s) {
    for (int64_t i = 0; i < local; ++i) {
      receive_rows[s] += received[s * local + i];
      local_sizes[i] += received[s * local + i];
    }
  }
  const at::Tensor arrived = ExchangeRows(exchange, x_sorted, send_rows, receive_rows);  // [R, D]

  // The arrived rows are source-major; the experts want them grouped by
  // local expert: `order` lists, expert by expert, where each row arrived.
  const int64_t total = arrived.size(0);
  std::vector<int64_t> block_start(ranks * local);
  int64_t offset = 0;
  for (int64_t s = 0; s < ranks; ++s) {
    for (int64_t i = 0; i < local; ++i) {
      block_start[s * local + i] = offset;
      offset += received[s * local + i];
    }
  }
  at::Tensor order = at::empty({total}, at::kLong);
  at::Tensor inverse = at::empty({total}, at::kLong);
  int64_t* order_data = order.data_ptr<int64_t>();
  int64_t* inverse_data = inverse.data_ptr<int64_t>();
  int64_t position = 0;
  for (int64_t i = 0; i < local; ++i) {
    for (int64_t s = 0; s < ranks; ++s) {
      for (int64_t k = 0; k < received[s * local + i]; ++k, ++position) {
        order_data[position] = block_start[s * local + i] + k;
        inverse_data[block_start[s * local + i] + k] = position;
      }
    }
  }
  const at::Tensor x_local = arrived.index_select(0, order.to(arrived.device()));
  const at::Tensor y_local = GroupedExpertFfn(x_local, local_sizes, w1, b1, w2, b2, activation);
  const at::Tensor y_arrived = y_local.index_select(0, inverse.to(y_local.device()));
  return ExchangeRows(exchange, y_arrived, receive_rows, send_rows);  // [P, D]
}

}  // namespace moelab
