#include "train/interrupt.h"

#include <atomic>
#include <csignal>

namespace mg::train {

namespace {
std::atomic<int> g_signal{0};

extern "C" void on_interrupt(int sig) {
  int none = 0;
  if (!g_signal.compare_exchange_strong(none, sig)) {  // the second one: end now
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}
}  // namespace

InterruptGuard::InterruptGuard(bool install) : installed_(install) {
  g_signal.store(0);
  if (!installed_) return;
  old_int_ = std::signal(SIGINT, on_interrupt);
  old_term_ = std::signal(SIGTERM, on_interrupt);
}

InterruptGuard::~InterruptGuard() {
  if (!installed_) return;
  std::signal(SIGINT, old_int_ == SIG_ERR ? SIG_DFL : old_int_);
  std::signal(SIGTERM, old_term_ == SIG_ERR ? SIG_DFL : old_term_);
}

int InterruptGuard::signal() const { return g_signal.load(); }

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT (Ctrl-C)";
    case SIGTERM: return "SIGTERM";
    default: return "a signal";
  }
}

}  // namespace mg::train
