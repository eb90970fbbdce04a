// autograd/grad_mode.h — whether ops record themselves on the tape.
#pragma once

namespace mg {

bool grad_enabled();
void set_grad_enabled(bool on);

// While alive, ops record nothing (evaluation, optimizer updates, the backward pass itself).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace mg
