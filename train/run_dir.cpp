#include "train/run_dir.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <random>
#include <cstdlib>

#include "core/error.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;

namespace mg::train {

namespace {

// "ckpt-000200" -> 200; -1 for any other name (".tmp" directories included).
int64_t checkpoint_step(const std::string& name) {
  if (name.rfind("ckpt-", 0) != 0 || name.size() == 5) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (INT64_MAX - 9) / 10) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

}  // namespace

std::string RunDirContents::describe() const {
  std::vector<std::string> parts;
  if (!checkpoints.empty()) {
    std::vector<std::string> names;
    for (auto& c : checkpoints) names.push_back(c.name);
    parts.push_back("checkpoint" + std::string(names.size() > 1 ? "s " : " ") + join_names(names));
  }
  if (!latest.empty()) parts.push_back("`latest` naming " + latest);
  if (has_log) parts.push_back("log.jsonl");
  return join_names(parts);
}

std::string checkpoint_run_id(const std::string& ckpt_dir) {
  auto meta = load_safetensors_metadata((fs::path(ckpt_dir) / "trainer.safetensors").string());
  auto it = meta.find("run_id");
  return it == meta.end() ? "" : it->second;
}

RunDirContents scan_run_dir(const std::string& dir) {
  RunDirContents c;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return c;
  for (auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const int64_t step = checkpoint_step(name);
    if (step < 0 || !e.is_directory()) continue;
    // Complete checkpoints only: a directory without its trainer state is not one (a crash
    // cannot leave that, as checkpoints are renamed into place whole, but a person can).
    if (!fs::exists(e.path() / "trainer.safetensors", ec)) continue;
    c.checkpoints.push_back({name, step, checkpoint_run_id(e.path().string())});
  }
  std::sort(c.checkpoints.begin(), c.checkpoints.end(),
            [](auto& a, auto& b) { return a.step < b.step; });
  std::ifstream latest(fs::path(dir) / "latest");
  latest >> c.latest;
  c.has_log = fs::exists(fs::path(dir) / "log.jsonl", ec);
  return c;
}

std::string new_run_id() {
  std::random_device rd;
  uint64_t x = ((uint64_t)rd() << 32) ^ rd();
  x ^= (uint64_t)std::chrono::system_clock::now().time_since_epoch().count() * 0x9E3779B97F4A7C15ull;
  x ^= (uint64_t)::getpid() << 17;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)x);
  return buf;
}

std::vector<std::string> claim_run_dir(const std::string& dir, bool resuming,
                                       const std::string& resumed_id, bool overwrite) {
  const RunDirContents c = scan_run_dir(dir);
  // Another run's checkpoints: for a fresh run, every one (and a log or `latest` too); for a
  // resumed one, those with a different id (id-less ones never block a resume).
  std::vector<std::string> others;
  for (auto& k : c.checkpoints)
    if (!resuming || (!k.run_id.empty() && k.run_id != resumed_id)) others.push_back(k.name);
  const bool taken = resuming ? !others.empty() : c.holds_a_run();
  if (!taken) return {};
  if (!overwrite) {
    throw Error(detail::cat(
        "train: the run directory '", dir, "' already holds ",
        resuming ? "checkpoints of another run (" + join_names(others) + ")"
                 : "a run (" + c.describe() + ")",
        ". To continue that run, add --resume latest; to start a new one next to it, give "
        "another --run-dir; to replace it, add --overwrite (its checkpoints are deleted once "
        "this run's first checkpoint is written; see docs/training.md)"));
  }
  std::error_code ec;
  if (!resuming && c.has_log) {
    fs::rename(fs::path(dir) / "log.jsonl", fs::path(dir) / "log.replaced.jsonl");
    std::printf("--overwrite: the earlier run's log.jsonl is now log.replaced.jsonl in '%s'; it "
                "and the earlier checkpoints (%s) are deleted after this run's first checkpoint\n",
                dir.c_str(), others.empty() ? "none" : join_names(others).c_str());
  } else {
    std::printf("--overwrite: the earlier run's checkpoints in '%s' (%s) are deleted after this "
                "run's first checkpoint\n", dir.c_str(), join_names(others).c_str());
  }
  fs::remove(fs::path(dir) / "loss_curve.svg", ec);
  return others;
}

std::vector<std::string> checkpoints_to_prune(const RunDirContents& contents,
                                              const std::string& run_id,
                                              const std::string& just_written,
                                              const std::string& latest_name, int keep_last) {
  std::vector<std::string> own;  // by step, oldest first
  for (auto& c : contents.checkpoints)
    if (!run_id.empty() && c.run_id == run_id) own.push_back(c.name);
  std::vector<std::string> out;
  const size_t keep = (size_t)std::max(keep_last, 1);
  for (size_t i = 0; i + keep < own.size(); ++i)
    if (own[i] != just_written && own[i] != latest_name) out.push_back(own[i]);
  return out;
}

int64_t cut_log_after_step(const std::string& log_path, int64_t step) {
  std::ifstream in(log_path, std::ios::binary);
  if (!in || !fs::is_regular_file(log_path)) return 0;  // (/dev/full in a test reads forever)
  std::string text((std::istreambuf_iterator<char>(in)), {});
  in.close();
  // Lines are written whole by the logger; its "step" field is a plain integer.
  size_t keep = 0, pos = 0;
  int64_t removed = 0;
  bool cut = false;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (cut || nl == std::string::npos) {  // after the cut, or a line a crash left unfinished
      ++removed;
      if (nl == std::string::npos) break;
      pos = nl + 1;
      continue;
    }
    const std::string_view line(text.data() + pos, nl - pos);
    const size_t at = line.find("\"step\": ");
    if (at != std::string_view::npos && std::strtoll(line.data() + at + 8, nullptr, 10) > step) {
      cut = true;
      ++removed;
    } else {
      keep = nl + 1;
    }
    pos = nl + 1;
  }
  if (removed > 0) fs::resize_file(log_path, keep);
  return removed;
}

}  // namespace mg::train
