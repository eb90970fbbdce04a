#include "data/text_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/utf8.h"

namespace mg::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "mambagrad-text-tokens-v1";

}  // namespace

// Why the first 8 KiB of `file` do not look like text, or "" when they do.
std::string TextDataset::binary_reason(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  char buf[8192];
  in.read(buf, sizeof(buf));
  const int64_t n = (int64_t)in.gcount();
  int64_t control = 0, not_utf8 = 0;
  for (int64_t i = 0; i < n;) {
    unsigned char c = (unsigned char)buf[i];
    if (c == 0) return detail::cat("a NUL byte at offset ", i);
    bool allowed = c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '\b' || c == 0x1b;
    if (c < 0x20 && !allowed) ++control;
    const size_t len = utf8_sequence_length(std::string_view(buf + i, (size_t)(n - i)));
    if (len == 0 && n - i >= 4) ++not_utf8;  // (a sequence cut by the 8 KiB end is not counted)
    i += len ? (int64_t)len : 1;
  }
  auto share = [&](int64_t k) { return detail::cat((k * 1000 / std::max<int64_t>(n, 1)) / 10.0, "%"); };
  const std::string first = detail::cat(" of its first ", n, " bytes are ");
  if (control * 10 > n) return share(control) + first + "control characters";
  if (not_utf8 * 10 > n) return share(not_utf8) + first + "not UTF-8";
  return "";
}

namespace {

std::string read_all(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  MG_CHECK(in.good(), "TextDataset: cannot open '", file, "' for reading: ", std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// 64-bit FNV-1a.
struct Fnv1a {
  uint64_t h = 1469598103934665603ull;
  void add(const std::string& s) {
    for (unsigned char c : s) { h ^= c; h *= 1099511628211ull; }
    h ^= 0xff; h *= 1099511628211ull;  // a field separator no byte string can forge
  }
};

std::string cache_key(const std::vector<std::string>& files) {
  Fnv1a f;
  f.add(kFormat);
  for (auto& file : files) {
    fs::path p = fs::absolute(file).lexically_normal();
    f.add(p.string());
    f.add(std::to_string(fs::file_size(p)));
    f.add(std::to_string(fs::last_write_time(p).time_since_epoch().count()));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)f.h);
  return hex;
}

// Writes bytes to `path` atomically: <path>.tmp.<pid>, fsync, rename.
void write_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  MG_CHECK(fd >= 0, "TextDataset: cannot create cache file '", tmp, "': ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(detail::cat("TextDataset: writing '", tmp, "' failed: ", std::strerror(e)));
    }
    done += (size_t)w;
  }
  bool ok = ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::cat("TextDataset: finishing cache file '", path, "' failed: ", std::strerror(e)));
  }
}

}  // namespace

// ---- files ----------------------------------------------------------------------------------

std::vector<std::string> TextDataset::list_files(const std::string& path, bool allow_binary) {
  std::error_code ec;
  MG_CHECK(!path.empty() && fs::exists(path, ec), "TextDataset: '", path, "' does not exist");
  if (!fs::is_directory(path, ec)) {
    MG_CHECK(fs::is_regular_file(path, ec), "TextDataset: '", path, "' is not a regular file or a directory");
    if (!allow_binary) {
      const std::string why = binary_reason(path);
      MG_CHECK(why.empty(), "TextDataset: '", path, "' does not look like text (", why,
               "); to train on its bytes anyway, pass --data-binary (TextDatasetOptions::allow_binary)");
    }
    return {path};
  }
  std::vector<std::string> files;
  auto opts = fs::directory_options::skip_permission_denied;
  for (auto it = fs::recursive_directory_iterator(path, opts); it != fs::recursive_directory_iterator(); ++it) {
    const fs::directory_entry& e = *it;
    std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') {
      if (e.is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (e.is_symlink(ec) || !e.is_regular_file(ec)) continue;
    if (e.path().extension() == ".dat") continue;
    if (!allow_binary && !binary_reason(e.path().string()).empty()) continue;
    files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  MG_CHECK(!files.empty(), "TextDataset: no text files found in directory '", path, "'");
  return files;
}

std::string TextDataset::read_document(const std::string& file) {
  std::string text = read_all(file);
  std::error_code ec;
  if (!fs::exists(file + ".dat", ec)) return text;  // not a fortune file
  std::string out;
  out.reserve(text.size());
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    size_t end = nl == std::string::npos ? text.size() : nl + 1;
    std::string_view line(text.data() + start, (nl == std::string::npos ? text.size() : nl) - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line != "%") out.append(text, start, end - start);
    start = end;
  }
  return out;
}

std::string TextDataset::default_fortunes_dir() {
  const char* dir = "/usr/share/games/fortunes";
  std::error_code ec;
  MG_CHECK(fs::is_directory(dir, ec), "TextDataset: the fortunes corpus '", dir,
           "' is not installed; install it with `sudo apt-get install fortunes` (Debian/Ubuntu), "
           "or pass a text file or directory of your own");
  return dir;
}

std::string TextDataset::default_cache_dir() {
  if (const char* d = std::getenv("MG_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return (fs::path(d) / "mambagrad").string();
  if (const char* d = std::getenv("HOME"); d && *d) return (fs::path(d) / ".cache" / "mambagrad").string();
  return (fs::temp_directory_path() / "mambagrad-cache").string();
}

// ---- open: tokenise or reuse the cache, map, split ----------------------------------------------

TextDataset::TextDataset(const std::string& path, TextDatasetOptions options)
    : seed_(options.seed), gen_(options.seed) {
  MG_CHECK(options.val_fraction >= 0 && options.val_fraction < 1,
           "TextDataset: val_fraction must be in [0, 1), got ", options.val_fraction);
  files_ = list_files(path, options.allow_binary);
  std::string dir = options.cache_dir.empty() ? default_cache_dir() : options.cache_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  MG_CHECK(fs::is_directory(dir), "TextDataset: cannot create the cache directory '", dir, "'");
  cache_path_ = (fs::path(dir) / (cache_key(files_) + ".tokens")).string();

  from_cache_ = fs::exists(cache_path_, ec) && fs::file_size(cache_path_, ec) > 0;
  if (!from_cache_) {  // tokenise: byte value = token id, so the tokens ARE the bytes
    std::string all;
    for (auto& f : files_) {
      all += read_document(f);
      if (!all.empty() && all.back() != '\n') all += '\n';
    }
    MG_CHECK(!all.empty(), "TextDataset: '", path, "' holds no text (", files_.size(),
             " file(s), 0 bytes after removing fortune separators)");
    write_atomic(cache_path_, all);
  }

  int fd = ::open(cache_path_.c_str(), O_RDONLY);
  MG_CHECK(fd >= 0, "TextDataset: cannot open '", cache_path_, "': ", std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  size_ = (size_t)st.st_size;
  void* p = size_ > 0 ? ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  int e = errno;
  ::close(fd);
  MG_CHECK(p != MAP_FAILED, "TextDataset: cannot map '", cache_path_, "' (", size_, " bytes): ",
           std::strerror(e));
  data_ = static_cast<const uint8_t*>(p);

  // The split: blocks of S tokens, block i in validation when floor((i+1) f) > floor(i f).
  const int64_t n = (int64_t)size_;
  const int64_t S = std::clamp<int64_t>(n / 100, 1, 65536);
  const double f = options.val_fraction;
  for (int64_t i = 0, begin = 0; begin < n; ++i, begin += S) {
    bool is_val = std::floor((i + 1) * f) > std::floor(i * f);
    auto& segs = is_val ? val_ : train_;
    int64_t end = std::min(n, begin + S);
    if (!segs.empty() && segs.back().end == begin) segs.back().end = end;
    else segs.push_back({begin, end});
  }
}

void TextDataset::unmap() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

TextDataset::~TextDataset() { unmap(); }

TextDataset::TextDataset(TextDataset&& o) noexcept { *this = std::move(o); }

TextDataset& TextDataset::operator=(TextDataset&& o) noexcept {
  if (this == &o) return *this;
  unmap();
  files_ = std::move(o.files_);
  cache_path_ = std::move(o.cache_path_);
  from_cache_ = o.from_cache_;
  data_ = o.data_;
  size_ = o.size_;
  train_ = std::move(o.train_);
  val_ = std::move(o.val_);
  seed_ = o.seed_;
  gen_ = o.gen_;
  o.data_ = nullptr;
  o.size_ = 0;
  return *this;
}

int64_t TextDataset::num_train_tokens() const {
  int64_t s = 0;
  for (auto& g : train_) s += g.end - g.begin;
  return s;
}

int64_t TextDataset::num_val_tokens() const { return num_tokens() - num_train_tokens(); }

// ---- batches ----------------------------------------------------------------------------------

Tensor TextDataset::next_batch(int64_t B, int64_t L) {
  MG_CHECK(B > 0 && L > 0, "TextDataset::next_batch: B and L must be > 0, got B = ", B, ", L = ", L);
  // starts_before[k]: valid window starts in segments [0, k).
  std::vector<int64_t> starts_before{0};
  int64_t longest = 0;
  for (auto& s : train_) {
    starts_before.push_back(starts_before.back() + std::max<int64_t>(0, s.end - s.begin - L));
    longest = std::max(longest, s.end - s.begin);
  }
  const int64_t total = starts_before.back();
  MG_CHECK(total > 0, "TextDataset::next_batch: windows of L + 1 = ", L + 1,
           " tokens do not fit in any training segment (longest: ", longest,
           " tokens); use a shorter L or more data");
  Tensor out = Tensor::empty({B, L + 1}, DType::i32);
  int32_t* o = out.data<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t r = (int64_t)gen_.next_below((uint64_t)total);
    size_t k = std::upper_bound(starts_before.begin(), starts_before.end(), r) - starts_before.begin() - 1;
    int64_t start = train_[k].begin + (r - starts_before[k]);
    for (int64_t t = 0; t <= L; ++t) o[b * (L + 1) + t] = data_[start + t];
  }
  return out;
}

std::vector<Tensor> TextDataset::validation_batches(int64_t B, int64_t L, int64_t max_batches) const {
  MG_CHECK(B > 0 && L > 0, "TextDataset::validation_batches: B and L must be > 0, got B = ", B,
           ", L = ", L);
  MG_CHECK(!val_.empty(), "TextDataset::validation_batches: there is no validation split "
           "(val_fraction = 0)");
  std::vector<int64_t> starts;
  for (auto& s : val_)
    for (int64_t p = s.begin; p + L + 1 <= s.end; p += L) starts.push_back(p);
  MG_CHECK(!starts.empty(), "TextDataset::validation_batches: windows of L + 1 = ", L + 1,
           " tokens do not fit in any validation segment; use a shorter L or more data");
  const int64_t W = (int64_t)starts.size();
  if (max_batches > 0 && W > max_batches * B) {  // keep windows spread evenly over the split
    const int64_t keep = max_batches * B;
    std::vector<int64_t> kept(keep);
    for (int64_t j = 0; j < keep; ++j) kept[j] = starts[(size_t)((__int128)j * W / keep)];
    starts = std::move(kept);
  }
  std::vector<Tensor> batches;
  for (size_t i = 0; i < starts.size(); i += B) {
    int64_t rows = std::min<int64_t>(B, (int64_t)(starts.size() - i));
    Tensor t = Tensor::empty({rows, L + 1}, DType::i32);
    int32_t* o = t.data<int32_t>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k <= L; ++k) o[r * (L + 1) + k] = data_[starts[i + r] + k];
    batches.push_back(t);
  }
  return batches;
}

}  // namespace mg::data
