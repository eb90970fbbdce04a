// examples/cli.h — the one command-line parser of every example program: each flag is declared
// once with its default, its help text and its valid range, so `--help` lists all of them in
// one layout and every value is checked before the program does any work.
//
//   Cli cli("train_lm", "Trains a byte-level Mamba LM.");
//   int64_t steps = 1000;  cli.add("--steps", &steps, "optimizer steps", {.min = 1});
//   double top_p = 0.95;   cli.add("--top-p", &top_p, "nucleus threshold", {.min = 0, .min_open = true, .max = 1});
//   std::string dev = "cpu"; cli.add("--device", &dev, "where to run", {.choices = {"cpu", "cuda"}});
//   if (!cli.parse(argc, argv)) return cli.exit_code();       // 0 after --help, 2 on an error
//   if (warmup >= steps) return cli.error("--warmup", "must be less than --steps");  // 2
//
// Errors name the program and the flag and say what was expected:
//   train_lm: --steps -5: must be at least 1
//   train_lm: --steps 99999999999999999999999: out of range (at most 9223372036854775807)
//   generate: --temperature x: not a number
// Integers must be whole decimal numbers (no "10x", no "1e3"); numbers must be finite.
//
// --help: "usage: <program> [options]" (or the lines given to usage()), the description, then
// one line per flag in declaration order, "  --flag VALUE   help (default: d; range)", under the
// headings given with section(), then any note().
#pragma once
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace mg::examples {

struct IntRange {  // inclusive bounds
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
};
struct RealRange {
  double min = -INFINITY;
  bool min_open = false;  // min itself is not allowed
  double max = INFINITY;
  bool max_open = false;
};
struct TextSpec {
  std::vector<std::string> choices;  // empty: any text
  std::string default_text;          // shown instead of the default value (e.g. "fortunes")
  std::string placeholder = "TEXT";
};

class Cli {
 public:
  Cli(std::string program, std::string about) : program_(std::move(program)), about_(std::move(about)) {}

  // Replaces the default "usage: <program> [options]" (one or more lines, without "usage: ").
  void usage(std::vector<std::string> lines) { usage_ = std::move(lines); }
  void section(const std::string& title) { flags_.push_back({"", title}); }  // a help heading
  void note(const std::string& text) { notes_.push_back(text); }             // after the flags

  void add(const std::string& flag, int64_t* v, const std::string& help, IntRange r = {}) {
    std::string range;
    if (r.min != IntRange{}.min && r.max != IntRange{}.max)
      range = std::to_string(r.min) + ".." + std::to_string(r.max);
    else if (r.min != IntRange{}.min) range = ">= " + std::to_string(r.min);
    else if (r.max != IntRange{}.max) range = "<= " + std::to_string(r.max);
    add_flag(flag, help, "N", std::to_string(*v), range, [this, v, flag, r](const std::string& s) {
      char* end = nullptr;
      errno = 0;
      long long x = std::strtoll(s.c_str(), &end, 10);
      if (s.empty() || *end || std::isspace((unsigned char)s[0])) return bad(flag, s, "not a whole number");
      if (errno == ERANGE)
        return bad(flag, s, "out of range (at most " + std::to_string(r.max) + ")");
      if (x < r.min) return bad(flag, s, "must be at least " + std::to_string(r.min));
      if (x > r.max) return bad(flag, s, "must be at most " + std::to_string(r.max));
      *v = x;
      return true;
    });
  }
  void add(const std::string& flag, double* v, const std::string& help, RealRange r = {}) {
    std::string range;
    if (std::isfinite(r.min)) range = (r.min_open ? "> " : ">= ") + num(r.min);
    if (std::isfinite(r.max))
      range = std::isfinite(r.min) ? std::string(r.min_open ? "(" : "[") + num(r.min) + ", " +
                                         num(r.max) + (r.max_open ? ")" : "]")
                                   : (r.max_open ? "< " : "<= ") + num(r.max);
    add_flag(flag, help, "X", num(*v), range, [this, v, flag, r, range](const std::string& s) {
      char* end = nullptr;
      errno = 0;
      double x = std::strtod(s.c_str(), &end);
      if (s.empty() || *end || std::isspace((unsigned char)s[0])) return bad(flag, s, "not a number");
      if (!std::isfinite(x) || errno == ERANGE) return bad(flag, s, "not a finite number in range");
      const bool low = r.min_open ? x <= r.min : x < r.min;
      const bool high = r.max_open ? x >= r.max : x > r.max;
      if (low || high) return bad(flag, s, "must be " + (range[0] == '(' || range[0] == '[' ? "in " + range : range));
      *v = x;
      return true;
    });
  }
  void add(const std::string& flag, std::string* v, const std::string& help, TextSpec t = {}) {
    std::string placeholder = t.placeholder;
    if (!t.choices.empty()) {
      placeholder.clear();
      for (auto& c : t.choices) placeholder += (placeholder.empty() ? "" : "|") + c;
    }
    std::string shown = !t.default_text.empty() ? t.default_text
                        : v->empty()              ? "none"
                        : v->front() == ' ' || v->back() == ' ' ? "\"" + *v + "\""
                                                                : *v;
    add_flag(flag, help, placeholder, shown, "", [this, v, flag, t](const std::string& s) {
      if (!t.choices.empty()) {
        bool ok = false;
        for (auto& c : t.choices) ok = ok || c == s;
        if (!ok) {
          std::string list;
          for (auto& c : t.choices) list += (list.empty() ? "" : ", ") + c;
          return bad(flag, s, "must be one of " + list);
        }
      }
      *v = s;
      return true;
    });
  }
  void add(const std::string& flag, bool* v, const std::string& help) {  // a switch
    Flag f{flag, help, "", *v ? "on" : "off", "", false, [v](const std::string&) {
             *v = true;
             return true;
           }};
    flags_.push_back(std::move(f));
  }

  // False when the program should exit now (after --help, or on an error: see exit_code()).
  bool parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        print_help();
        code_ = 0;
        return false;
      }
      std::string value;
      bool has_value = false;
      if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_value = true;
      }
      Flag* f = find(a);
      if (!f) {
        report(a, "unknown option (see --help)");
        code_ = 2;
        return false;
      }
      if (!f->takes_value && has_value) {
        report(a, "a switch, it takes no value");
        code_ = 2;
        return false;
      }
      if (f->takes_value && !has_value) {
        if (i + 1 >= argc) {
          report(a, "needs a value (see --help)");
          code_ = 2;
          return false;
        }
        value = argv[++i];
      }
      if (!f->set(value)) {
        code_ = 2;
        return false;
      }
      f->given = true;
    }
    for (int i = 0; i < argc; ++i) command_line_ += (i ? " " : "") + std::string(argv[i]);
    return true;
  }
  int exit_code() const { return code_; }
  const std::string& command_line() const { return command_line_; }
  bool given(const std::string& flag) const {  // was the flag on the command line?
    for (auto& f : flags_)
      if (f.flag == flag) return f.given;
    return false;
  }

  // A check across flags that failed: prints "<program>: <flag>: <what>" and returns 2.
  int error(const std::string& flag, const std::string& what) {
    report(flag, what);
    return 2;
  }
  const std::string& last_error() const { return last_error_; }  // what was printed (tests)

  void print_help() const {
    if (usage_.empty()) std::printf("usage: %s [options]\n", program_.c_str());
    for (size_t i = 0; i < usage_.size(); ++i)
      std::printf("%s %s\n", i == 0 ? "usage:" : "      ", usage_[i].c_str());
    std::printf("\n");
    std::string about = about_;
    std::replace(about.begin(), about.end(), '\n', ' ');
    for (std::string rest = about; !rest.empty();) {  // the description, wrapped at 96 columns
      size_t cut = rest.size() <= 96 ? rest.size() : rest.rfind(' ', 96);
      if (cut == std::string::npos || cut == 0) cut = std::min<size_t>(rest.size(), 96);
      std::printf("%s\n", rest.substr(0, cut).c_str());
      rest = cut < rest.size() ? rest.substr(cut + 1) : "";
    }
    std::printf("\n");
    if (flags_.empty() || !flags_[0].flag.empty()) std::printf("options:\n");
    for (auto& f : flags_) {
      if (f.flag.empty()) {  // a section heading
        std::printf("%s%s:\n", &f == &flags_[0] ? "" : "\n", f.help.c_str());
        continue;
      }
      std::string lhs = f.flag + (f.takes_value ? " " + f.placeholder : "");
      std::string rhs = f.help + " (default: " + f.default_text;
      if (!f.range.empty()) rhs += "; " + f.range;
      // A range or a default is never split across lines: its spaces are '\1' until printed.
      for (size_t at = rhs.find(" (default: "); at != std::string::npos && at < rhs.size(); ++at)
        if (rhs[at] == ' ' && at > rhs.find(" (default: ") + 9) rhs[at] = '\1';
      rhs += ")";
      if (lhs.size() > 24) std::printf("  %s\n", lhs.c_str());
      // The text wrapped at word boundaries into a column of kWidth characters.
      constexpr size_t kWidth = 72;
      bool first = true;
      while (!rhs.empty()) {
        size_t cut = rhs.size() <= kWidth ? rhs.size() : rhs.rfind(' ', kWidth);
        if (cut == std::string::npos || cut == 0) cut = std::min(rhs.size(), kWidth);
        std::string line = rhs.substr(0, cut);
        std::replace(line.begin(), line.end(), '\1', ' ');
        std::printf("  %-24s %s\n", first && lhs.size() <= 24 ? lhs.c_str() : "", line.c_str());
        rhs = cut < rhs.size() ? rhs.substr(cut + 1) : "";
        first = false;
      }
    }
    std::printf("  %-24s %s\n", "-h, --help", "show this help");
    for (auto& n : notes_) std::printf("\n%s\n", n.c_str());
  }

 private:
  struct Flag {
    std::string flag, help, placeholder, default_text, range;
    bool takes_value = true;
    std::function<bool(const std::string&)> set;
    bool given = false;
  };
  void add_flag(const std::string& flag, const std::string& help, const std::string& placeholder,
                const std::string& default_text, const std::string& range,
                std::function<bool(const std::string&)> set) {
    flags_.push_back({flag, help, placeholder, default_text, range, true, std::move(set)});
  }
  static std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  }
  bool bad(const std::string& flag, const std::string& v, const std::string& what) {
    report(flag + " " + v, what);
    return false;
  }
  void report(const std::string& subject, const std::string& what) {
    last_error_ = program_ + ": " + subject + ": " + what;
    std::fprintf(stderr, "%s\n", last_error_.c_str());
  }
  Flag* find(const std::string& name) {
    for (auto& f : flags_)
      if (!f.flag.empty() && f.flag == name) return &f;
    return nullptr;
  }
  std::string program_, about_, command_line_, last_error_;
  std::vector<std::string> usage_, notes_;
  std::vector<Flag> flags_;
  int code_ = 0;
};

}  // namespace mg::examples
