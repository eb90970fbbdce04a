// ops/graph.cpp — CapturedGraph (ops/graph.h): capture once, replay, or fall back to eager.
#include "ops/graph.h"

#include <exception>

#include "core/dispatch.h"

namespace mg {

CapturedGraph::CapturedGraph(Device device, std::function<void()> fn)
    : device_(device), fn_(std::move(fn)) {
  if (!device_.is_cuda()) {
    why_not_ = "not a CUDA device (nothing to capture: replay runs the ops)";
    return;
  }
  if constexpr (kWithCuda) {
    std::string error;
    try {
      pool_ = cuda::graph_capture_begin();
    } catch (const std::exception& e) {
      why_not_ = std::string("cudaStreamBeginCapture failed: ") + e.what();
      return;
    }
    try {
      fn_();
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::string why;
    exec_ = cuda::graph_capture_end(&why);
    if (!error.empty()) {  // fn threw: part of its work was never recorded
      cuda::graph_destroy(exec_, nullptr);
      exec_ = nullptr;
      why = "the captured ops threw: " + error;
    }
    if (!exec_) {  // nothing replays from the pool's blocks: give them back now
      why_not_ = why;
      cuda::graph_destroy(nullptr, pool_);
      pool_ = nullptr;
    }
  } else {
    detail::throw_no_cuda("CapturedGraph", device_);
  }
}

CapturedGraph::~CapturedGraph() {
  if constexpr (kWithCuda) {
    if (exec_ || pool_) cuda::graph_destroy(exec_, pool_);
  }
}

void CapturedGraph::replay() {
  if (!exec_) {
    fn_();
    return;
  }
  if constexpr (kWithCuda) cuda::graph_launch(exec_);
}

}  // namespace mg
