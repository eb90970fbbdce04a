// ops/graph.h — a sequence of ops recorded once and replayed (a CUDA graph).
//
// Decoding a 130m Mamba at batch 1 runs ~20 small kernels per layer, ~500 per token, each a
// few microseconds of work: the CPU's launch overhead, not the GPU, sets the speed. A CUDA
// graph records the launches once (cudaStreamBeginCapture ... cudaStreamEndCapture,
// cudaGraphInstantiate) and replays them all with one cudaGraphLaunch.
//
//   CapturedGraph g(device, [&] { out = model.step_trusted(ids, state); });
//   g.replay();   // runs the recorded kernels again, reading and writing the same addresses
//
// What `fn` may do: enqueue ops on tensors whose addresses stay put between replays (inputs
// copied INTO a fixed tensor, state updated in place, outputs kept by the caller). What it
// must not do: anything that waits for the GPU or reads device memory on the host (an id range
// check, item(), a D2H copy), copy from host memory (the graph would copy the same host bytes
// every replay), or depend on host-side values that change between replays.
//
// Memory: while capturing, every block a tensor frees is kept for the graph (the caching
// allocator's graph pool, cuda/allocator.cu) instead of being handed to the next allocation,
// since the replays keep writing there; the blocks return to the cache when the graph dies.
//
// Fallback: when capture fails — an op synchronised (MG_CUDA_SYNC_CHECK=1 does that after
// every launch), an API call not allowed while capturing, a driver without graph support, an
// exception from fn — the capture is ended and its error cleared, captured() is false,
// why_not() says what failed, and replay() runs fn eagerly from then on (same results, more
// launch overhead). On the CPU nothing is captured: replay() calls fn.
#pragma once
#include <functional>
#include <string>

#include "core/device.h"

namespace mg {

// The CUDA side (cuda/graph.cu); declared in every build, defined in a CUDA build.
namespace cuda {
// Starts capturing the stream (relaxed mode) and the allocator's graph pool; returns the pool.
void* graph_capture_begin();
// Ends the capture and instantiates it: the executable graph, or nullptr with *why set (the
// capture then ended, the error is cleared). Stops the pool either way.
void* graph_capture_end(std::string* why);
void graph_launch(void* exec);
// Destroys the executable graph (may be null) and gives the pool's blocks back to the cache.
void graph_destroy(void* exec, void* pool);
}  // namespace cuda

class CapturedGraph {
 public:
  CapturedGraph(Device device, std::function<void()> fn);
  ~CapturedGraph();
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  void replay();
  bool captured() const { return exec_ != nullptr; }
  const std::string& why_not() const { return why_not_; }  // "" when captured

 private:
  Device device_;
  std::function<void()> fn_;
  void* exec_ = nullptr;  // cudaGraphExec_t
  void* pool_ = nullptr;  // the allocator's graph pool
  std::string why_not_;
};

}  // namespace mg
