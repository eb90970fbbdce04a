#include "train/run_checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "train/run_dir.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace mg::train {

static std::string ckpt_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "ckpt-%06lld", (long long)step);
  return buf;
}

// Replaces `path` with `text` atomically (write a temporary file, then rename over).
static void write_text_atomic(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    MG_CHECK(f.good(), "checkpoint: cannot write '", tmp.string(), "'");
    f << text << "\n";
    f.flush();
    MG_CHECK(f.good(), "checkpoint: error writing '", tmp.string(), "'");
  }
  fs::rename(tmp, path);
}

std::string latest_checkpoint(const std::string& run_dir) {
  std::ifstream f(fs::path(run_dir) / "latest");
  std::string name;
  if (!(f >> name)) return "";
  fs::path dir = fs::path(run_dir) / name;
  MG_CHECK(fs::is_directory(dir), "checkpoint: '", (fs::path(run_dir) / "latest").string(),
           "' names '", name, "', which does not exist");
  return dir.string();
}

std::string save_run_checkpoint(const std::string& run_dir, const nn::MambaLM& model,
                                const AdamW& opt, const RunState& st, int keep_last) {
  fs::create_directories(run_dir);
  fs::path final_dir = fs::path(run_dir) / ckpt_name(st.step);
  fs::path tmp_dir = final_dir;
  tmp_dir += ".tmp";
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);

  // The model alone, in the layout every loader reads, with its config in the metadata.
  save_safetensors((tmp_dir / "model.safetensors").string(), model.state_dict(),
                   model.config().to_metadata());
  // Everything else the next step reads. For a CUDA model, state_dict() and opt.state() hold
  // device tensors: save_safetensors copies each to the host as it writes it.
  std::map<std::string, std::string> meta = {{"format", "mambagrad-trainer-1"},
                                             {"step", std::to_string(st.step)}};
  if (!st.run_id.empty()) meta["run_id"] = st.run_id;
  for (auto& [k, v] : st.task_state) meta["task." + k] = std::to_string(v);
  for (auto& [k, v] : st.dist_state) meta["dist." + k] = std::to_string(v);
  save_safetensors((tmp_dir / "trainer.safetensors").string(), opt.state(), meta);

  // A same-named checkpoint can only be this run's own (a resume from an earlier step redoes
  // it) or one --overwrite is replacing: train/run_dir.h.
  fs::path old_dir = final_dir;
  old_dir += ".old";
  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(tmp_dir, final_dir);
  fs::remove_all(old_dir);
  write_text_atomic(fs::path(run_dir) / "latest", ckpt_name(st.step));

  for (const std::string& name : checkpoints_to_prune(scan_run_dir(run_dir), st.run_id,
                                                      ckpt_name(st.step), ckpt_name(st.step),
                                                      keep_last))
    fs::remove_all(fs::path(run_dir) / name);
  return final_dir.string();
}

RunState load_run_checkpoint(const std::string& ckpt_dir, nn::MambaLM& model, AdamW& opt) {
  fs::path dir(ckpt_dir);
  SafetensorsFile m = load_safetensors((dir / "model.safetensors").string());
  SafetensorsFile t = load_safetensors((dir / "trainer.safetensors").string());
  MG_CHECK(t.metadata.count("format") && t.metadata.at("format") == "mambagrad-trainer-1",
           "checkpoint: '", (dir / "trainer.safetensors").string(),
           "' is not a mambagrad trainer state (metadata 'format' missing or unknown)");
  nn::MambaConfig saved = nn::MambaConfig::from_metadata(m.metadata);
  MG_CHECK(saved.to_metadata() == model.config().to_metadata(), "checkpoint: '", ckpt_dir,
           "' holds a model of config ", saved.str(), ", but this run builds ",
           model.config().str());
  model.load_state_dict(m.tensors, /*strict=*/true);  // into the handles the optimizer holds
  opt.load_state(t.tensors);  // copies into the existing (device) state tensors
  RunState st;
  for (auto& [k, v] : t.metadata) {
    try {
      if (k == "step") st.step = std::stoll(v);
      else if (k == "run_id") st.run_id = v;
      else if (k.rfind("task.", 0) == 0) st.task_state[k.substr(5)] = std::stoull(v);
      else if (k.rfind("dist.", 0) == 0) st.dist_state[k.substr(5)] = std::stoull(v);
    } catch (const std::exception&) {
      throw Error(detail::cat("checkpoint: bad value '", v, "' for '", k, "' in ", ckpt_dir));
    }
  }
  return st;
}

}  // namespace mg::train
