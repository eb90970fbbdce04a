// cuda/graph.cu — the CUDA side of ops/graph.h: stream capture into a graph, instantiate,
// launch, destroy; with the caching allocator's graph pool (cuda/allocator.cu) around the
// capture so the blocks the graph uses are not handed out again while it lives.
//
// Relaxed capture mode: cudaMalloc (the caching allocator's miss path) is allowed while
// capturing; an API call that would wait for the stream (cudaStreamSynchronize, a D2H copy)
// still fails, which invalidates the capture: graph_capture_end then reports why, ends the
// capture and clears the error, and the caller runs eagerly instead.
#include "ops/graph.h"

#include <cuda_runtime.h>

#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mg::cuda {

void* graph_capture_begin() {
  MG_CUDA_CHECK(cudaStreamBeginCapture(cuda_stream(), cudaStreamCaptureModeRelaxed));
  return graph_pool_begin();
}

void* graph_capture_end(std::string* why) {
  graph_pool_end();
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamEndCapture(cuda_stream(), &graph);
  if (err != cudaSuccess || !graph) {
    if (why)
      *why = std::string("cudaStreamEndCapture: ") +
             (err != cudaSuccess ? cudaGetErrorString(err) : "no graph");
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();  // clear the capture's error so later calls work
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    if (why) *why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(err);
    (void)cudaGetLastError();
    return nullptr;
  }
  return exec;
}

void graph_launch(void* exec) {
  MG_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), cuda_stream()));
}

void graph_destroy(void* exec, void* pool) {
  if (exec) MG_CUDA_CHECK(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)));
  graph_pool_release(pool);  // stream order: later work runs after any pending replay
}

}  // namespace mg::cuda
