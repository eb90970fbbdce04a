// data/text_dataset.h — a byte-level text corpus from a file or a directory, tokenised once,
// cached, memory-mapped, split into train/validation, and sampled as random windows.
//
// ---- Files --------------------------------------------------------------------------------
// A file path is used as given. A directory is walked recursively in sorted path order and
// keeps the regular files that look like text; it skips: hidden names (".git", ".x"), symlinks
// (Debian's fortunes ship `art.u8 -> art`; a symlinked file would only duplicate its target),
// strfile index files `*.dat`, and binary-looking files (binary_reason: in the first 8 KiB a NUL
// byte, more than 10% control bytes other than \t \n \r \f \v \b ESC, or more than 10% bytes
// that are not part of well-formed UTF-8). A binary-looking FILE named directly is an error
// naming the reason, unless options.allow_binary (train_lm --data-binary), which also keeps
// such files in directories.
// Fortune files (a sibling `<file>.dat` exists, as in /usr/share/games/fortunes) have their
// separator lines — a line that is exactly "%" — removed. Files are concatenated in order; a
// '\n' is inserted after a file that does not end with one.
//
// ---- Tokens and the cache ---------------------------------------------------------------------
// Byte-level: token id = byte value (0..255; data/byte_tokenizer.h, V = 256). The token stream
// is written once to `<cache_dir>/<key>.tokens` (raw uint8, one byte per token), where key is a
// 64-bit FNV-1a hash (16 hex digits) of the format version and every file's path, size and
// mtime; it is written atomically (temporary file, fsync, rename) and then memory-mapped
// read-only. Opening the same data again maps the cached file and reads no source file.
// Default cache_dir: $MG_CACHE_DIR, else $XDG_CACHE_HOME/mambagrad, else ~/.cache/mambagrad,
// else <temp dir>/mambagrad-cache.
//
// ---- The train/validation split (deterministic, a function of the token count only) ----------
// The stream of n tokens is cut into blocks of S = clamp(n / 100, 1, 65536) tokens (the last
// block may be shorter); block i belongs to validation when floor((i+1) f) > floor(i f),
// f = val_fraction (so every 20th block for f = 0.05: validation is spread over the whole corpus,
// not just its last file). Adjacent blocks of the same split form one segment; a window never
// crosses a segment boundary, so no training window contains a validation token.
//
// ---- Sampling and exact resume -----------------------------------------------------------------
// next_batch(B, L) draws B window starts uniformly over every position where L + 1 tokens fit
// inside a training segment, each with one Generator::next_below call (in row order). The
// generator's seed is options.seed and its offset is the cursor: cursor() after a batch,
// set_cursor() later, and the same batches follow exactly.
// validation_batches(B, L, max_batches) walks the validation segments with windows of L + 1
// tokens at stride L (consecutive windows share one token, so every validation token after a
// segment's first is a target exactly once); max_batches > 0 keeps max_batches * B windows
// spread evenly over all of them. The last batch may have fewer than B rows.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace mg::data {

struct TextDatasetOptions {
  std::string cache_dir;      // "" = the default above
  double val_fraction = 0.05; // in [0, 1); 0 = no validation split
  uint64_t seed = 0;          // seed of the window sampler
  bool allow_binary = false;  // train on files that do not look like text (see above)
};

class TextDataset {
 public:
  explicit TextDataset(const std::string& path, TextDatasetOptions options = {});
  ~TextDataset();
  TextDataset(const TextDataset&) = delete;
  TextDataset& operator=(const TextDataset&) = delete;
  TextDataset(TextDataset&& other) noexcept;
  TextDataset& operator=(TextDataset&& other) noexcept;

  // ---- the data --------------------------------------------------------------------------
  int64_t num_tokens() const { return (int64_t)size_; }
  int64_t num_train_tokens() const;
  int64_t num_val_tokens() const;
  std::span<const uint8_t> tokens() const { return {data_, size_}; }
  const std::vector<std::string>& files() const { return files_; }  // the sources, in order
  const std::string& cache_path() const { return cache_path_; }
  bool loaded_from_cache() const { return from_cache_; }  // false: tokenised by this open
  // [begin, end) token ranges of the split's segments.
  struct Segment { int64_t begin, end; };
  const std::vector<Segment>& train_segments() const { return train_; }
  const std::vector<Segment>& val_segments() const { return val_; }

  // ---- batches: i32 (B, L + 1); inputs = [:, :L], targets = [:, 1:] -------------------------
  Tensor next_batch(int64_t B, int64_t L);
  std::vector<Tensor> validation_batches(int64_t B, int64_t L, int64_t max_batches = 0) const;

  // ---- the sampler's state (exact resume) ---------------------------------------------------
  uint64_t cursor() const { return gen_.offset(); }
  void set_cursor(uint64_t cursor) { gen_.set_state(seed_, cursor); }
  uint64_t seed() const { return seed_; }

  // ---- helpers ------------------------------------------------------------------------------
  // /usr/share/games/fortunes if it exists, else an mg::Error saying to install `fortunes`.
  static std::string default_fortunes_dir();
  static std::string default_cache_dir();
  // The source files `path` resolves to (rules above), sorted. Throws for a missing path and,
  // unless allow_binary, for a single file that does not look like text.
  static std::vector<std::string> list_files(const std::string& path, bool allow_binary = false);
  // Why `file` does not look like text ("a NUL byte at offset 12", "31.2% of its first 8 KiB
  // are bytes that are not UTF-8", ...), or "" when it does.
  static std::string binary_reason(const std::string& file);
  // One file's contribution to the token stream (fortune separators removed).
  static std::string read_document(const std::string& file);

 private:
  void unmap();

  std::vector<std::string> files_;
  std::string cache_path_;
  bool from_cache_ = false;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<Segment> train_, val_;
  uint64_t seed_ = 0;
  Generator gen_;
};

}  // namespace mg::data
