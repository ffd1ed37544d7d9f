#ifndef MOELAB_CORE_DISTRIBUTED_C10D_EXPERT_EXCHANGE_H_
#define MOELAB_CORE_DISTRIBUTED_C10D_EXPERT_EXCHANGE_H_

// core/expert_exchange.h over c10d: ProcessGroup::alltoall_base on the
// expert-parallel group (ProcessGroups::experts()), counts first, then the
// rows with uneven splits.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/distributed/process_groups.h"
#include "core/expert_exchange.h"

namespace moelab {

class C10dExpertExchange : public ExpertExchange {
 public:
  // `groups` must outlive this object and have an expert group (expert
  // parallel degree > 1).
  explicit C10dExpertExchange(const ProcessGroups& groups);

  int size() const override;
  int rank() const override;
  std::vector<int64_t> ExchangeCounts(const std::vector<int64_t>& send) override;
  at::Tensor AllToAll(const at::Tensor& rows, const std::vector<int64_t>& send_rows,
                      const std::vector<int64_t>& receive_rows) override;

  // Seconds spent in the exchanges so far (counts and rows, forward and
  // backward), for benchmarks.
  double seconds() const { return nanoseconds_ * 1e-9; }
  // Bytes of rows sent to other ranks so far (what would cross a network).
  int64_t remote_bytes_sent() const { return remote_bytes_sent_; }

 private:
  const ProcessGroups& groups_;
  int64_t nanoseconds_ = 0;
  int64_t remote_bytes_sent_ = 0;
};

}  // namespace moelab

#endif  // MOELAB_CORE_DISTRIBUTED_C10D_EXPERT_EXCHANGE_H_
