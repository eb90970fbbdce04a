// examples/bench_tokenizer — how fast do our tokenizers encode and decode a real text?
//
// Encodes the whole text in one call (as `tokenize` does; the BPE word cache lives for one
// call, so every repeat starts cold), then decodes the ids; medians over --repeats. The byte
// tokenizer on the same text is the floor (one id per byte: the cost of touching the data).
//
//   ./build/examples/bench_tokenizer [--tokenizer tests/reference/tokenizers/neox_like.json]
//                                    [--data /usr/share/games/fortunes] [--repeats 5] [--json]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"
#include "examples/bench_util.h"
#include "examples/cli.h"

using namespace mg;
namespace fs = std::filesystem;

// A file, or every regular file of a directory (sorted; no symlinks, no strfile *.dat).
static std::string read_text(const std::string& path) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && !e.is_symlink() && e.path().extension() != ".dat") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::string text;
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    MG_CHECK(in.good(), "--data: cannot read ", f.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    text += ss.str();
  }
  MG_CHECK(!text.empty(), "--data: ", path, " holds no text");
  return text;
}

int main(int argc, char** argv) {
  std::string tokenizer = "tests/reference/tokenizers/neox_like.json", data_path = "/usr/share/games/fortunes";
  int64_t repeats = 5;
  bool json = false;
  examples::Cli cli("bench_tokenizer", "Encode and decode speed (MB/s of text) of a tokenizer on a text.");
  cli.add("--tokenizer", &tokenizer, "a tokenizer.json, a model directory holding one, or \"byte\"");
  cli.add("--data", &data_path, "a text file or a directory of them");
  cli.add("--repeats", &repeats, "timed runs (median reported)");
  cli.add("--json", &json, "one JSON object per line");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  try {
    MG_CHECK(repeats >= 1, "--repeats must be >= 1, got ", repeats);
    const std::string text = read_text(data_path);
    const double mb = text.size() / 1e6;
    if (!json) std::printf("text: %s, %.2f MB\n", data_path.c_str(), mb);
    for (const std::string& spec : {tokenizer, std::string("byte")}) {
      std::unique_ptr<data::Tokenizer> tok;
      try {
        tok = data::load_tokenizer(spec);
      } catch (const Error& e) {
        throw Error(std::string("--tokenizer: ") + e.what());
      }
      std::vector<int32_t> ids;
      double enc_ms = bench::median_ms([&] { ids = tok->encode(text); }, (int)repeats);
      std::string back;
      double dec_ms = bench::median_ms([&] { back = tok->decode(ids); }, (int)repeats);
      const char* name = spec == "byte" ? "byte" : "bpe";
      if (json) {
        std::printf("{\"tokenizer\": \"%s\", \"path\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"encode_ms\": %.2f, "
                    "\"encode_mb_per_s\": %.2f, \"decode_ms\": %.2f, \"decode_mb_per_s\": %.2f, \"roundtrip\": %s}\n",
                    name, spec.c_str(), text.size(), ids.size(), enc_ms, mb / (enc_ms / 1e3), dec_ms, mb / (dec_ms / 1e3),
                    back == text ? "true" : "false");
      } else {
        std::printf("%-5s %s\n      %zu tokens (%.2f bytes/token)  encode %8.1f ms %8.2f MB/s  decode %7.1f ms %8.1f MB/s  "
                    "round trip %s\n",
                    name, tok->describe().c_str(), ids.size(), (double)text.size() / std::max<size_t>(ids.size(), 1),
                    enc_ms, mb / (enc_ms / 1e3), dec_ms, mb / (dec_ms / 1e3), back == text ? "exact" : "DIFFERS");
      }
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
}
