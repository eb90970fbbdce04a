// Bad input is refused before any work, naming what to change (issue 16, items 5-8, 13): the
// programs' flag parser (examples/cli.h) and the text loader's binary check.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "data/text_dataset.h"
#include "examples/cli.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

// Parses `args` with a Cli holding one flag of each kind; returns the error ("" when it parsed).
struct Parsed {
  int64_t steps = 10;
  double top_p = 0.9;
  std::string device = "cpu";
  bool flag = false;
  std::string error;
  int code = 0;
  bool ok = false;
};
Parsed parse(std::vector<std::string> args) {
  Parsed p;
  examples::Cli cli("prog", "A test program.");
  cli.add("--steps", &p.steps, "steps", {.min = 1});
  cli.add("--top-p", &p.top_p, "nucleus", {.min = 0, .min_open = true, .max = 1});
  cli.add("--device", &p.device, "device", {.choices = {"cpu", "cuda"}});
  cli.add("--flag", &p.flag, "a switch");
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::FILE* saved = stderr;  // the parser prints its error; keep the test output clean
  stderr = std::fopen("/dev/null", "w");
  p.ok = cli.parse((int)argv.size(), argv.data());
  std::fclose(stderr);
  stderr = saved;
  p.error = cli.last_error();
  p.code = cli.exit_code();
  return p;
}

}  // namespace

TEST_CASE("cli: values in range parse; every bad value is an error naming the flag") {
  Parsed good = parse({"--steps", "5", "--top-p=1", "--device", "cuda", "--flag"});
  CHECK(good.ok);
  CHECK(good.steps == 5);
  CHECK(good.top_p == 1.0);
  CHECK(good.device == "cuda");
  CHECK(good.flag);
  struct Case { std::vector<std::string> args; const char* message; };
  const Case cases[] = {
      {{"--steps", "-5"}, "prog: --steps -5: must be at least 1"},
      {{"--steps", "0"}, "prog: --steps 0: must be at least 1"},
      {{"--steps", "99999999999999999999999"}, "prog: --steps 99999999999999999999999: out of range (at most 9223372036854775807)"},
      {{"--steps", "10x"}, "prog: --steps 10x: not a whole number"},
      {{"--steps", "1e3"}, "prog: --steps 1e3: not a whole number"},
      {{"--steps", ""}, "prog: --steps : not a whole number"},
      {{"--top-p", "0"}, "prog: --top-p 0: must be in (0, 1]"},
      {{"--top-p", "1.5"}, "prog: --top-p 1.5: must be in (0, 1]"},
      {{"--top-p", "x"}, "prog: --top-p x: not a number"},
      {{"--top-p", "nan"}, "prog: --top-p nan: not a finite number in range"},
      {{"--top-p", "1e999"}, "prog: --top-p 1e999: not a finite number in range"},
      {{"--device", "gpu"}, "prog: --device gpu: must be one of cpu, cuda"},
      {{"--steps"}, "prog: --steps: needs a value (see --help)"},
      {{"--flag=1"}, "prog: --flag: a switch, it takes no value"},
      {{"--nope"}, "prog: --nope: unknown option (see --help)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args[0]);
    Parsed p = parse(c.args);
    CHECK(!p.ok);
    CHECK(p.code == 2);
    CHECK(p.error == c.message);
    CHECK(p.steps == 10);  // a refused value never lands in the variable
  }
}

TEST_CASE("data: a binary file named by --data is refused with the reason; allow_binary trains on it") {
  const fs::path dir = fs::temp_directory_path() / ("mg_binary_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const char* name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
    return (dir / name).string();
  };
  std::string text;
  for (int i = 0; i < 200; ++i) text += "caf\xc3\xa9 line " + std::to_string(i) + "\n";  // UTF-8 text
  std::string nul = text;
  nul[100] = '\0';
  std::string high;  // bytes 0x80.. in a pattern that is never valid UTF-8 (continuations alone)
  for (int i = 0; i < 4000; ++i) high += (char)(0x80 + i % 64);
  std::string control(4000, 'a');
  for (size_t i = 0; i < control.size(); i += 5) control[i] = '\x01';
  CHECK(data::TextDataset::binary_reason(write("text.txt", text)) == "");
  CHECK(data::TextDataset::binary_reason(write("nul.bin", nul)) == "a NUL byte at offset 100");
  CHECK(data::TextDataset::binary_reason(write("high.bin", high)) ==
        "99.9% of its first 4000 bytes are not UTF-8");
  CHECK(data::TextDataset::binary_reason(write("ctrl.bin", control)) ==
        "20% of its first 4000 bytes are control characters");
  data::TextDatasetOptions o;
  o.cache_dir = (dir.string() + "_cache");
  CHECK_THROWS_WITH_AS(data::TextDataset((dir / "high.bin").string(), o),
                       doctest::Contains("does not look like text (99.9% of its first 4000 bytes are "
                                         "not UTF-8); to train on its bytes anyway, pass --data-binary"),
                       Error);
  CHECK(data::TextDataset::list_files(dir.string()) == std::vector<std::string>{(dir / "text.txt").string()});
  o.allow_binary = true;
  data::TextDataset d((dir / "high.bin").string(), o);
  CHECK(d.num_tokens() == 4001);  // every byte, and the final newline
  CHECK(data::TextDataset::list_files(dir.string(), true).size() == 4);
  fs::remove_all(dir);
  fs::remove_all(o.cache_dir);
}
