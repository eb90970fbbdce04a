// train/dist/nccl_backend.cpp — device-buffer collectives over NCCL (compiled when CMake finds
// NCCL in a CUDA build: MG_NCCL). One communicator per process group, on the GPU that is current
// when it is made (dist::select_local_gpu picks it from the local rank), every call enqueued on
// the CUDA backend's one stream (cuda::stream()), so it is ordered after the backward kernels
// that wrote the gradients and before the optimizer's kernels, without a host round trip.
//
// The wait: an event recorded after the group is polled (cudaEventQuery) together with
// ncclCommGetAsyncError until done or the timeout; then the communicator is aborted
// (ncclCommAbort) and the caller names the missing ranks over MPI.
#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "cuda/runtime.h"
#include "train/distributed.h"

namespace mg::dist::detail {

namespace {

#define MG_NCCL_CHECK(call)                                                                   \
  do {                                                                                        \
    ncclResult_t r_ = (call);                                                                 \
    MG_CHECK(r_ == ncclSuccess || r_ == ncclInProgress, "NCCL error: ", #call, " failed: ", \
             ncclGetErrorString(r_));                                                        \
  } while (0)

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::mean: return ncclAvg;  // NCCL >= 2.10
  }
  return ncclSum;
}

class Nccl final : public DeviceCollectives {
 public:
  Nccl(const std::vector<char>& id_bytes, int nranks, int rank) {
    MG_CHECK(id_bytes.size() == sizeof(ncclUniqueId), "NCCL: the unique id has ", id_bytes.size(),
             " bytes, expected ", sizeof(ncclUniqueId));
    ncclUniqueId id;
    std::memcpy(&id, id_bytes.data(), sizeof id);
    stream_ = static_cast<cudaStream_t>(cuda::stream());  // initialises the CUDA backend
    MG_NCCL_CHECK(ncclCommInitRank(&comm_, nranks, id, rank));
    MG_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming) == cudaSuccess,
             "NCCL: cudaEventCreate failed");
    int v = 0;
    ncclGetVersion(&v);
    name_ = "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
            std::to_string(v % 100);
  }
  // No destructor work: NCCL and the CUDA runtime are torn down with the process.

  std::string name() const override { return name_; }

  bool all_reduce(std::span<const Buffer> buffers, ReduceOp op, double timeout_s) override {
    MG_NCCL_CHECK(ncclGroupStart());
    for (const Buffer& b : buffers) {
      MG_CHECK(b.dtype == DType::f32 && b.device.is_cuda(), "NCCL all_reduce: f32 device buffers only");
      MG_NCCL_CHECK(ncclAllReduce(b.data, b.data, (size_t)b.n, ncclFloat32, nccl_op(op), comm_, stream_));
    }
    MG_NCCL_CHECK(ncclGroupEnd());
    return wait(timeout_s);
  }

  bool broadcast(const Buffer& b, int root, double timeout_s) override {
    size_t bytes = (size_t)(b.n * element_size(b.dtype));
    MG_NCCL_CHECK(ncclBroadcast(b.data, b.data, bytes, ncclInt8, root, comm_, stream_));
    return wait(timeout_s);
  }

 private:
  bool wait(double timeout_s) {
    MG_CHECK(cudaEventRecord(done_, stream_) == cudaSuccess, "NCCL: cudaEventRecord failed");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      cudaError_t e = cudaEventQuery(done_);
      if (e == cudaSuccess) return true;
      MG_CHECK(e == cudaErrorNotReady, "NCCL: waiting for the collective: ", cudaGetErrorString(e));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      MG_CHECK(async == ncclSuccess || async == ncclInProgress, "NCCL: asynchronous error: ",
               ncclGetErrorString(async));
      if (std::chrono::steady_clock::now() > deadline) {
        ncclCommAbort(comm_);
        return false;
      }
      sched_yield();
    }
  }

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  std::string name_;
};

}  // namespace

std::vector<char> nccl_unique_id() {
  ncclUniqueId id;
  MG_NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<char> out(sizeof id);
  std::memcpy(out.data(), &id, sizeof id);
  return out;
}

std::unique_ptr<DeviceCollectives> make_nccl(const std::vector<char>& id, int nranks, int rank) {
  return std::make_unique<Nccl>(id, nranks, rank);
}

}  // namespace mg::dist::detail
