#include "core/distributed/c10d_expert_exchange.h"

#include <ATen/ATen.h>

#include <numeric>

#include "core/distributed/communication_timer.h"

namespace moelab {

C10dExpertExchange::C10dExpertExchange(const ProcessGroups& groups) : groups_(groups) {
  TORCH_CHECK(groups_.experts(), "C10dExpertExchange needs an expert-parallel group");
}

int C10dExpertExchange::size() const { return groups_.experts()->getSize(); }

int C10dExpertExchange::rank() const { return groups_.experts()->getRank(); }

std::vector<int64_t> C10dExpertExchange::ExchangeCounts(const std::vector<int64_t>& send) {
  ScopedNanoseconds timer(nanoseconds_);
  at::Tensor input = at::tensor(send, at::kLong);
  at::Tensor output = at::empty_like(input);
  std::vector<int64_t> equal_splits;  // empty: every rank gets send.size() / size()
  WaitForCollectiveOrThrow(
      groups_.experts()->alltoall_base(output, input, equal_splits, equal_splits), groups_,
      "the expert all-to-all of counts");
  return std::vector<int64_t>(output.data_ptr<int64_t>(),
                              output.data_ptr<int64_t>() + output.numel());
}

at::Tensor C10dExpertExchange::AllToAll(const at::Tensor& rows,
                                        const std::vector<int64_t>& send_rows,
                                        const std::vector<int64_t>& receive_rows) {
  ScopedNanoseconds timer(nanoseconds_);
  std::vector<int64_t> shape = rows.sizes().vec();
  shape[0] = std::accumulate(receive_rows.begin(), receive_rows.end(), int64_t{0});
  at::Tensor input = rows.contiguous();
  at::Tensor output = at::empty(shape, rows.options());
  const int64_t row_bytes = rows.numel() == 0 ? 0 : rows.nbytes() / rows.size(0);
  for (int r = 0; r < size(); ++r) {
    if (r != rank()) remote_bytes_sent_ += send_rows[r] * row_bytes;
  }
  std::vector<int64_t> output_splits = receive_rows, input_splits = send_rows;
  WaitForCollectiveOrThrow(
      groups_.experts()->alltoall_base(output, input, output_splits, input_splits), groups_,
      "the expert all-to-all of token rows");
  return output;
}

}  // namespace moelab
