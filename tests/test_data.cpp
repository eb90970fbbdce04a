// Data: the byte-level text dataset (files, fortunes rules, cache, split, sampler resume) and
// the synthetic tasks (layouts, determinism, scoring).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "data/synthetic.h"
#include "data/text_dataset.h"

using namespace mg;
using data::TextDataset;
using data::TextDatasetOptions;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("mg_data_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write_file(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string as_string(std::span<const uint8_t> t) { return std::string(t.begin(), t.end()); }

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<int32_t>() == b.to_vector<int32_t>();
}

// 20,000 tokens: S = 200-token blocks, validation blocks 19, 39, 59, 79, 99 (val_fraction 0.05)
// hold 'V'; training blocks hold lowercase letters.
std::string split_probe_text() {
  std::string s(20000, 'a');
  for (int64_t i = 0; i < 20000; ++i) s[i] = (i / 200) % 20 == 19 ? 'V' : char('a' + (i * 7) % 26);
  s[19999] = '\n';  // ends with a newline, so none is appended (no validation window reaches it)
  return s;
}

}  // namespace

TEST_CASE("data: a text file becomes byte tokens; files are joined with a newline") {
  fs::path d = temp_dir("tok");
  write_file(d / "src" / "a.txt", "hello\n");
  write_file(d / "src" / "b.txt", "h\xC3\xA9llo");  // no trailing newline, UTF-8
  TextDataset ds((d / "src").string(), {.cache_dir = (d / "cache").string()});
  CHECK(ds.files().size() == 2);
  CHECK(as_string(ds.tokens()) == "hello\nh\xC3\xA9llo\n");
  CHECK(ds.num_tokens() == 13);
  CHECK(ds.tokens()[7] == 0xC3);  // ids are byte values
  CHECK(fs::path(ds.cache_path()).parent_path() == d / "cache");
  fs::remove_all(d);
}

TEST_CASE("data: the token cache is reused (no re-tokenising) and keyed by size and mtime") {
  fs::path d = temp_dir("cache");
  write_file(d / "t.txt", "abcdefgh\n");
  TextDatasetOptions o{.cache_dir = (d / "cache").string()};
  std::string path;
  {
    TextDataset first((d / "t.txt").string(), o);
    CHECK_FALSE(first.loaded_from_cache());
    path = first.cache_path();
    CHECK(fs::file_size(path) == 9);
  }
  // Tamper with the cache: a second open must map it as it is, reading no source file.
  write_file(path, "XYZXYZXYZ");
  TextDataset second((d / "t.txt").string(), o);
  CHECK(second.loaded_from_cache());
  CHECK(second.cache_path() == path);
  CHECK(as_string(second.tokens()) == "XYZXYZXYZ");
  // Changing the source (size) gives a new key and a fresh tokenisation.
  write_file(d / "t.txt", "abcdefghij\n");
  TextDataset third((d / "t.txt").string(), o);
  CHECK_FALSE(third.loaded_from_cache());
  CHECK(third.cache_path() != path);
  CHECK(as_string(third.tokens()) == "abcdefghij\n");
  size_t leftovers = 0;  // no temporary files left behind
  for (auto& e : fs::directory_iterator(d / "cache")) leftovers += e.path().string().find(".tmp") != std::string::npos;
  CHECK(leftovers == 0);
  fs::remove_all(d);
}

TEST_CASE("data: train/validation split is disjoint, spread, and windows respect it") {
  fs::path d = temp_dir("split");
  write_file(d / "t.txt", split_probe_text());
  TextDataset ds((d / "t.txt").string(), {.cache_dir = (d / "cache").string(), .seed = 3});
  REQUIRE(ds.num_tokens() == 20000);
  CHECK(ds.num_val_tokens() == 1000);
  CHECK(ds.num_train_tokens() == 19000);
  REQUIRE(ds.val_segments().size() == 5);
  CHECK(ds.val_segments()[0].begin == 3800);
  CHECK(ds.val_segments()[0].end == 4000);
  // Segments tile [0, n) without overlap.
  std::vector<int> cover(20000, 0);
  for (auto* segs : {&ds.train_segments(), &ds.val_segments()})
    for (auto s : *segs)
      for (int64_t i = s.begin; i < s.end; ++i) ++cover[i];
  CHECK(std::all_of(cover.begin(), cover.end(), [](int c) { return c == 1; }));

  for (int k = 0; k < 20; ++k) {
    auto w = ds.next_batch(8, 63).to_vector<int32_t>();
    CHECK(std::count(w.begin(), w.end(), 'V') == 0);
  }
  auto val = ds.validation_batches(8, 49);
  REQUIRE(val.size() == 3);  // 4 windows per 200-token segment, 20 windows: 8 + 8 + 4
  CHECK(val[0].shape() == Shape{8, 50});
  CHECK(val[2].shape() == Shape{4, 50});
  for (auto& b : val) {
    auto v = b.to_vector<int32_t>();
    CHECK(std::count(v.begin(), v.end(), 'V') == (int64_t)v.size());
  }
  auto capped = ds.validation_batches(8, 49, 1);
  REQUIRE(capped.size() == 1);
  CHECK(capped[0].shape() == Shape{8, 50});
  CHECK(same(ds.validation_batches(8, 49)[1], val[1]));  // deterministic
  CHECK_THROWS_WITH_AS(ds.validation_batches(2, 200), doctest::Contains("validation segment"), Error);
  CHECK_THROWS_WITH_AS(ds.next_batch(2, 5000), doctest::Contains("training segment"), Error);
  fs::remove_all(d);
}

TEST_CASE("data: validation windows overlap by exactly one token (every token is a target once)") {
  fs::path d = temp_dir("valwin");
  std::string text(1000, 'x');
  for (int i = 0; i < 1000; ++i) text[i] = char(32 + (i * 37) % 90);
  write_file(d / "t.txt", text);
  TextDataset ds((d / "t.txt").string(), {.cache_dir = (d / "cache").string(), .val_fraction = 0.5});
  auto seg = ds.val_segments()[0];  // S = 10; block i is validation when floor((i+1)/2) > floor(i/2)
  CHECK(seg.begin == 10);            // so blocks 1, 3, 5, ... are validation
  CHECK(seg.end == 20);
  auto b = ds.validation_batches(100, 3);
  auto v = b[0].to_vector<int32_t>();
  // Segment [10, 20) with L = 3: windows at 10, 13, 16 (16 + 4 = 20 fits).
  CHECK(v[0] == (uint8_t)text[10]);
  CHECK(v[4] == (uint8_t)text[13]);
  CHECK(v[3] == v[4]);
  CHECK(v[8] == (uint8_t)text[16]);
  CHECK(v[11] == (uint8_t)text[19]);
  CHECK(v[12] == (uint8_t)text[30]);  // the next validation segment starts at 30
  fs::remove_all(d);
}

TEST_CASE("data: windows are deterministic by seed, and set_cursor resumes them exactly") {
  fs::path d = temp_dir("resume");
  write_file(d / "t.txt", split_probe_text());
  std::string cache = (d / "cache").string();
  TextDataset a((d / "t.txt").string(), {.cache_dir = cache, .seed = 42});
  TextDataset b((d / "t.txt").string(), {.cache_dir = cache, .seed = 42});
  TextDataset c((d / "t.txt").string(), {.cache_dir = cache, .seed = 43});
  Tensor a1 = a.next_batch(4, 16), b1 = b.next_batch(4, 16), c1 = c.next_batch(4, 16);
  CHECK(a1.shape() == Shape{4, 17});
  CHECK(a1.dtype() == DType::i32);
  CHECK(same(a1, b1));
  CHECK_FALSE(same(a1, c1));

  uint64_t cur = a.cursor();
  CHECK(cur == 4);  // one draw per row
  Tensor a2 = a.next_batch(4, 16), a3 = a.next_batch(4, 16);
  CHECK_FALSE(same(a2, a3));
  TextDataset resumed((d / "t.txt").string(), {.cache_dir = cache, .seed = 42});
  resumed.set_cursor(cur);
  CHECK(same(resumed.next_batch(4, 16), a2));
  CHECK(same(resumed.next_batch(4, 16), a3));
  a.set_cursor(cur);
  CHECK(same(a.next_batch(4, 16), a2));
  fs::remove_all(d);
}

TEST_CASE("data: a fortunes-like directory: .dat, .u8 links, hidden and binary files skipped; % removed") {
  fs::path d = temp_dir("fortunes");
  fs::path f = d / "fortunes";
  write_file(f / "jokes", "A joke.\n%\nAnother\none.\n%\nLast.\n%");
  write_file(f / "jokes.dat", std::string("\0\0\0\2\0\0\0\3", 8));
  fs::create_symlink("jokes", f / "jokes.u8");
  write_file(f / "plain", "100%\n%\nkept\n");  // no .dat sibling: not a fortune file
  write_file(f / "blob", std::string("abc\0def", 7));
  write_file(f / ".hidden", "secret\n");
  write_file(f / "sub" / "more", "more text");
  write_file(f / "sub" / "more.dat", std::string("\0\1", 2));
  auto files = TextDataset::list_files(f.string());
  std::vector<std::string> want = {(f / "jokes").string(), (f / "plain").string(), (f / "sub" / "more").string()};
  CHECK(files == want);
  CHECK(TextDataset::read_document((f / "jokes").string()) == "A joke.\nAnother\none.\nLast.\n");
  TextDataset ds(f.string(), {.cache_dir = (d / "cache").string()});
  CHECK(as_string(ds.tokens()) == "A joke.\nAnother\none.\nLast.\n100%\n%\nkept\nmore text\n");

  // The real corpus, where installed: plain text files only.
  std::error_code ec;
  if (fs::is_directory("/usr/share/games/fortunes", ec)) {
    auto real = TextDataset::list_files(TextDataset::default_fortunes_dir());
    CHECK(!real.empty());
    for (auto& r : real) {
      CHECK(fs::path(r).extension() != ".dat");
      CHECK(fs::path(r).extension() != ".u8");
    }
  } else {
    CHECK_THROWS_WITH_AS(TextDataset::default_fortunes_dir(), doctest::Contains("apt-get install fortunes"), Error);
  }
  fs::remove_all(d);
}

TEST_CASE("data: missing paths and empty data are clear errors") {
  fs::path d = temp_dir("errors");
  std::string missing = (d / "nope.txt").string();
  const std::string missing_msg = missing + "' does not exist";
  CHECK_THROWS_WITH_AS(TextDataset(missing, {.cache_dir = (d / "c").string()}),
                       doctest::Contains(missing_msg.c_str()), Error);
  write_file(d / "empty" / "e.txt", "");
  CHECK_THROWS_WITH_AS(TextDataset((d / "empty").string(), {.cache_dir = (d / "c").string()}),
                       doctest::Contains("holds no text"), Error);
  write_file(d / "bin" / "x.bin", std::string("\0\0\0", 3));
  CHECK_THROWS_WITH_AS(TextDataset::list_files((d / "bin").string()), doctest::Contains("no text files"), Error);
  write_file(d / "t.txt", "abc\n");
  CHECK_THROWS_WITH_AS(TextDataset((d / "t.txt").string(), {.cache_dir = (d / "c").string(), .val_fraction = 1.0}),
                       doctest::Contains("val_fraction"), Error);
  fs::remove_all(d);
}

// ---- synthetic tasks ---------------------------------------------------------------------------

TEST_CASE("synthetic: selective copying layout, answers, vocabulary and determinism") {
  data::SelectiveCopyingConfig cfg{.region_len = 50, .num_data = 6, .vocab_size = 16};
  Generator gen(9);
  auto batch = data::selective_copying_batch(cfg, 5, gen);
  CHECK(gen.offset() == 5 * 2 * 6);
  REQUIRE(batch.inputs.shape() == Shape{5, 56});
  REQUIRE(batch.targets.shape() == Shape{5, 56});
  auto in = batch.inputs.to_vector<int32_t>(), tg = batch.targets.to_vector<int32_t>();
  std::set<int32_t> values_seen;
  for (int b = 0; b < 5; ++b) {
    std::vector<int32_t> data_tokens;
    for (int t = 0; t < 50; ++t) {
      int32_t x = in[b * 56 + t];
      CHECK(x >= 0);
      CHECK(x <= 14);  // noise or data, never the delimiter
      if (x != 0) data_tokens.push_back(x);
      CHECK(tg[b * 56 + t] == -100);
    }
    REQUIRE(data_tokens.size() == 6);
    for (int i = 0; i < 6; ++i) {
      CHECK(in[b * 56 + 50 + i] == 15);
      CHECK(tg[b * 56 + 50 + i] == data_tokens[i]);  // in order of position
      values_seen.insert(data_tokens[i]);
    }
  }
  CHECK(values_seen.size() > 5);  // values really vary

  Generator same_seed(9), other_seed(10);
  auto again = data::selective_copying_batch(cfg, 5, same_seed);
  CHECK(same(again.inputs, batch.inputs));
  CHECK(same(again.targets, batch.targets));
  CHECK_FALSE(same(data::selective_copying_batch(cfg, 5, other_seed).inputs, batch.inputs));
  CHECK_FALSE(same(data::selective_copying_batch(cfg, 5, same_seed).inputs, batch.inputs));  // next batch

  data::SelectiveCopyingConfig dense{.region_len = 6, .num_data = 6, .vocab_size = 16};
  auto full = data::selective_copying_batch(dense, 3, gen).inputs.to_vector<int32_t>();
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 6; ++t) CHECK(full[b * 12 + t] != 0);  // every region slot holds data
  CHECK_THROWS_AS(data::selective_copying_batch({.region_len = 5, .num_data = 6}, 1, gen), Error);
  CHECK(data::SelectiveCopyingConfig{}.seq_len() == 4096);
}

TEST_CASE("synthetic: induction heads: two triggers, target X only at the last position") {
  data::InductionHeadsConfig cfg{.seq_len = 32, .vocab_size = 16};
  Generator gen(4);
  auto batch = data::induction_heads_batch(cfg, 64, gen);
  CHECK(gen.offset() == 64 * 33);
  auto in = batch.inputs.to_vector<int32_t>(), tg = batch.targets.to_vector<int32_t>();
  std::set<int64_t> first_positions;
  for (int b = 0; b < 64; ++b) {
    const int32_t* s = in.data() + b * 32;
    CHECK(std::count(s, s + 32, 15) == 2);
    CHECK(s[31] == 15);
    int64_t p = std::find(s, s + 32, 15) - s;
    first_positions.insert(p);
    CHECK(p <= 29);
    for (int t = 0; t < 32; ++t) {
      CHECK(s[t] >= 0);
      CHECK(s[t] < 16);
      CHECK(tg[b * 32 + t] == (t == 31 ? s[p + 1] : -100));
    }
  }
  CHECK(first_positions.size() > 10);
  Generator again(4);
  CHECK(same(data::induction_heads_batch(cfg, 64, again).inputs, batch.inputs));
  auto tiny = data::induction_heads_batch({.seq_len = 3, .vocab_size = 16}, 2, gen).inputs.to_vector<int32_t>();
  CHECK(tiny[0] == 15);  // T = 3: trigger, X, trigger
  CHECK(tiny[2] == 15);
  CHECK_THROWS_AS(data::induction_heads_batch({.seq_len = 2}, 1, gen), Error);
}

TEST_CASE("synthetic: accuracy and exact-match on hand-made logits") {
  // B = 2, T = 3, V = 4. Row 0: t=1 target 2 (argmax 2, right), t=2 target 3 (argmax 1, wrong).
  // Row 1: t=0 target 0 (all-equal logits: the first maximum, 0, right); t=1, t=2 ignored.
  std::vector<float> lg = {0, 0, 0, 1,   0, 0, 5, 1,   0, 9, 0, 1,
                           2, 2, 2, 2,   9, 0, 0, 0,   0, 0, 0, 9};
  Tensor logits = Tensor::from_vector(lg, {2, 3, 4});
  Tensor targets = Tensor::from_vector<int32_t>({-100, 2, 3, 0, -100, -100}, {2, 3});
  auto s = data::score_answers(logits, targets);
  CHECK(s.correct == 2);
  CHECK(s.answers == 3);
  CHECK(s.sequences_all_correct == 1);
  CHECK(data::accuracy(logits, targets) == doctest::Approx(2.0 / 3.0));
  CHECK(data::exact_match_rate(logits, targets) == 0.5);
  CHECK(data::accuracy(logits.cast(DType::f64), targets) == doctest::Approx(2.0 / 3.0));
  s += s;
  CHECK(s.accuracy() == doctest::Approx(2.0 / 3.0));
  CHECK(s.sequences == 4);

  Tensor bad = Tensor::from_vector<int32_t>({-100, 4, 3, 0, -100, -100}, {2, 3});
  CHECK_THROWS_WITH_AS(data::accuracy(logits, bad), doctest::Contains("outside the vocabulary"), Error);
  CHECK_THROWS_AS(data::accuracy(logits, Tensor::zeros({2, 4}, DType::i32)), Error);
}
