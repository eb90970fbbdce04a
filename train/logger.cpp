#include "train/logger.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/json.h"

namespace mg::train {

// The JSON string body of s (core/json's writer, without the quotes).
std::string json_escape(const std::string& s) {
  const std::string quoted = json::dump(json::Value(s));
  return quoted.substr(1, quoted.size() - 2);
}

std::string format_bytes(int64_t b) {
  char buf[32];
  if (b >= (int64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1073741824.0);
  else std::snprintf(buf, sizeof buf, "%.1f MB", b / 1048576.0);
  return buf;
}

static std::string num(double v) {
  if (!std::isfinite(v)) return "null";  // JSON has no NaN/Inf
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

Logger::Logger(const std::string& path, int64_t log_every)
    : path_(path), log_every_(log_every < 1 ? 1 : log_every), tty_(isatty(fileno(stdout)) == 1) {
  if (!path.empty()) {
    file_ = std::fopen(path.c_str(), "a");
    MG_CHECK(file_ != nullptr, "Logger: cannot open log file '", path, "' for appending: ",
             std::strerror(errno));
  }
}

void Logger::write_line(const std::string& line) {
  if (!file_) return;
  errno = 0;
  const bool ok = std::fputs(line.c_str(), file_) >= 0 && std::fputc('\n', file_) != EOF &&
                  std::fflush(file_) == 0;
  if (!ok) {
    const int e = errno;
    std::clearerr(file_);
    throw Error(detail::cat("Logger: writing '", path_, "' failed: ",
                            e ? std::strerror(e) : "unknown error",
                            " (training stops here: a run whose log is incomplete cannot be "
                            "plotted or audited; free space and resume from the last checkpoint)"));
  }
}

Logger::~Logger() {
  end_bar();
  if (file_) std::fclose(file_);
}

void Logger::end_bar() {
  if (bar_open_) std::printf("\n");
  bar_open_ = false;
}

void Logger::start(const std::string& cmd, const std::map<std::string, std::string>& config) {
  if (!file_) return;
  std::string line = "{\"event\": \"start\", \"command\": \"" + json_escape(cmd) + "\", \"config\": {";
  bool first = true;
  for (auto& [k, v] : config) {
    line += (first ? "" : ", ") + std::string("\"") + json_escape(k) + "\": \"" + json_escape(v) + "\"";
    first = false;
  }
  write_line(line + "}}");
}

void Logger::step(const StepRecord& r, double elapsed_s) {
  if (file_) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "{\"step\": %lld, \"tokens\": %lld, \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, "
                  "\"tokens_per_s\": %s, \"ms\": %s, \"peak_bytes\": %lld%s}",
                  (long long)r.step, (long long)r.tokens, num(r.loss).c_str(), num(r.lr).c_str(),
                  num(r.grad_norm).c_str(), num(r.tokens_per_s).c_str(), num(r.ms).c_str(),
                  (long long)r.peak_bytes, r.skipped ? ", \"skipped\": true" : "");
    write_line(buf);
  }
  if (log_every_ == INT64_MAX) return;  // quiet: the file only
  bool last = r.step == r.total_steps;
  if (!tty_ && r.step % log_every_ != 0 && !last && !r.skipped) return;
  char line[256];
  std::snprintf(line, sizeof line,
                "step %6lld/%lld | loss %.4f | lr %.2e | gnorm %6.3f | %7.0f tok/s | %6.1f ms | peak %s%s",
                (long long)r.step, (long long)r.total_steps, r.loss, r.lr, r.grad_norm,
                r.tokens_per_s, r.ms, format_bytes(r.peak_bytes).c_str(),
                r.skipped ? " | SKIPPED (non-finite)" : "");
  if (tty_) {
    // A progress bar with an ETA, rewritten in place; every log_every-th step stays on screen.
    double frac = r.total_steps > 0 ? (double)r.step / r.total_steps : 1.0;
    double eta = frac > 0 ? elapsed_s * (1 - frac) / frac : 0;
    int filled = (int)(frac * 20);
    std::string bar(22, '.');  // "[####......]"
    bar.front() = '[';
    bar.back() = ']';
    std::fill(bar.begin() + 1, bar.begin() + 1 + std::clamp(filled, 0, 20), '#');
    std::printf("\r%s %s ETA %02d:%02d\033[K", line, bar.c_str(), (int)eta / 60, (int)eta % 60);
    bar_open_ = true;
    if (r.step % log_every_ == 0 || last || r.skipped) end_bar();
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
}

void Logger::event(const std::string& kind, int64_t step, const std::map<std::string, double>& values,
                   const std::string& text, int64_t tokens) {
  end_bar();
  std::string shown = kind + " @ step " + std::to_string(step);
  std::string json = "{\"event\": \"" + json_escape(kind) + "\", \"step\": " + std::to_string(step);
  if (tokens >= 0) json += ", \"tokens\": " + std::to_string(tokens);
  for (auto& [k, v] : values) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " | %s %.4f", k.c_str(), v);
    shown += buf;
    json += ", \"" + json_escape(k) + "\": " + num(v);
  }
  if (!text.empty()) {
    shown += " | " + text;
    json += ", \"text\": \"" + json_escape(text) + "\"";
  }
  std::printf("%s\n", shown.c_str());
  std::fflush(stdout);
  write_line(json + "}");
}

void Logger::message(const std::string& text) {
  end_bar();
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace mg::train
