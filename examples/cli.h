// examples/cli.h — a tiny command-line parser for the example programs: every flag is
// declared once with its default and help text, so `--help` always lists all of them.
//
//   Cli cli("train_lm", "Trains a character-level Mamba LM.");
//   int64_t steps = 1000;  cli.add("--steps", &steps, "optimizer steps");
//   if (!cli.parse(argc, argv)) return cli.exit_code();
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace mg::examples {

class Cli {
 public:
  Cli(std::string program, std::string about) : program_(std::move(program)), about_(std::move(about)) {}

  void add(const std::string& flag, int64_t* v, const std::string& help) {
    flags_.push_back({flag, help, std::to_string(*v), true, [v, flag](const std::string& s) {
                        char* end = nullptr;
                        long long x = std::strtoll(s.c_str(), &end, 10);
                        if (s.empty() || *end) return bad(flag, s, "an integer");
                        *v = x;
                        return true;
                      }});
  }
  void add(const std::string& flag, double* v, const std::string& help) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", *v);
    flags_.push_back({flag, help, buf, true, [v, flag](const std::string& s) {
                        char* end = nullptr;
                        double x = std::strtod(s.c_str(), &end);
                        if (s.empty() || *end) return bad(flag, s, "a number");
                        *v = x;
                        return true;
                      }});
  }
  void add(const std::string& flag, std::string* v, const std::string& help) {
    flags_.push_back({flag, help, v->empty() ? "\"\"" : *v, true, [v](const std::string& s) {
                        *v = s;
                        return true;
                      }});
  }
  void add(const std::string& flag, bool* v, const std::string& help) {  // a switch
    flags_.push_back({flag, help, *v ? "on" : "off", false, [v](const std::string&) {
                        *v = true;
                        return true;
                      }});
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
        std::fprintf(stderr, "%s: unknown option '%s' (see --help)\n", program_.c_str(), a.c_str());
        code_ = 2;
        return false;
      }
      if (f->takes_value && !has_value) {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "%s: option '%s' needs a value\n", program_.c_str(), a.c_str());
          code_ = 2;
          return false;
        }
        value = argv[++i];
      }
      if (!f->set(value)) {
        code_ = 2;
        return false;
      }
    }
    for (int i = 0; i < argc; ++i) command_line_ += (i ? " " : "") + std::string(argv[i]);
    return true;
  }
  int exit_code() const { return code_; }
  const std::string& command_line() const { return command_line_; }

  void print_help() const {
    std::printf("usage: %s [options]\n\n%s\n\noptions:\n", program_.c_str(), about_.c_str());
    for (auto& f : flags_)
      std::printf("  %-24s %s (default: %s)\n", (f.flag + (f.takes_value ? " V" : "")).c_str(),
                  f.help.c_str(), f.default_text.c_str());
    std::printf("  %-24s %s\n", "-h, --help", "show this help");
  }

 private:
  struct Flag {
    std::string flag, help, default_text;
    bool takes_value;
    std::function<bool(const std::string&)> set;
  };
  static bool bad(const std::string& flag, const std::string& v, const char* what) {
    std::fprintf(stderr, "option '%s': '%s' is not %s\n", flag.c_str(), v.c_str(), what);
    return false;
  }
  Flag* find(const std::string& name) {
    for (auto& f : flags_)
      if (f.flag == name) return &f;
    return nullptr;
  }
  std::string program_, about_, command_line_;
  std::vector<Flag> flags_;
  int code_ = 0;
};

}  // namespace mg::examples
