// examples/tokenize — text to token ids and back, with any tokenizer mambagrad speaks.
//
//   ./build/examples/tokenize --tokenizer models/mamba-130m-hf < text.txt     # ids, one line
//   ./build/examples/tokenize --tokenizer tokenizer.json --decode < ids.txt  # the text back
//   echo -n "héllo" | ./build/examples/tokenize --tokenizer byte             # 104 195 169 ...
//
// Encode reads stdin as bytes (newlines included; invalid UTF-8 as the tokenizer documents)
// and prints the ids of the whole input on one line, separated by spaces. --decode reads ids
// separated by whitespace and prints the decoded text and nothing else (no newline added).
// --tokenizer: a tokenizer.json, a model directory holding one, or "byte" (data/tokenizer.h).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"
#include "examples/cli.h"

using namespace mg;

static std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  std::cin >> std::noskipws;
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

static std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  for (size_t n = 1; in >> word; ++n) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(word.c_str(), &end, 10);
    MG_CHECK(*end == 0 && errno == 0 && v >= 0 && v <= INT32_MAX, "--decode: input word ", n, " ('", word,
             "') is not a token id (a non-negative integer below 2^31)");
    ids.push_back((int32_t)v);
  }
  return ids;
}

int main(int argc, char** argv) {
  std::string tokenizer;
  bool decode = false, verbose = false;
  examples::Cli cli("tokenize",
                    "Encodes stdin (bytes) into token ids printed on one line, or with --decode reads ids\n"
                    "and prints the decoded text (no newline added).");
  cli.add("--tokenizer", &tokenizer, "a tokenizer.json, a model directory holding one, or \"byte\"");
  cli.add("--decode", &decode, "read ids from stdin and print the text");
  cli.add("--verbose", &verbose, "describe the tokenizer and the counts on stderr");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  try {
    MG_CHECK(!tokenizer.empty(), "--tokenizer is required (a tokenizer.json, a model directory, or \"byte\")");
    std::unique_ptr<data::Tokenizer> tok;
    try {
      tok = data::load_tokenizer(tokenizer);
    } catch (const Error& e) {
      throw Error(std::string("--tokenizer: ") + e.what());
    }
    if (verbose) std::fprintf(stderr, "%s\n", tok->describe().c_str());
    const std::string input = read_stdin();
    if (decode) {
      std::vector<int32_t> ids = parse_ids(input);
      std::string text = tok->decode(ids);
      std::fwrite(text.data(), 1, text.size(), stdout);
      if (verbose) std::fprintf(stderr, "%zu ids -> %zu bytes\n", ids.size(), text.size());
    } else {
      std::vector<int32_t> ids = tok->encode(input);
      std::string line;
      line.reserve(ids.size() * 6);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) line += ' ';
        line += std::to_string(ids[i]);
      }
      line += '\n';
      std::fwrite(line.data(), 1, line.size(), stdout);
      if (verbose) std::fprintf(stderr, "%zu bytes -> %zu ids\n", input.size(), ids.size());
    }
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "tokenize: %s\n", e.what());
    return 1;
  }
}
