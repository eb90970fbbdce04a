#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "autograd/tape.h"
#include "ops/arith.h"
#include "core/allocator.h"
#include "core/settings.h"
#include "train/data_parallel.h"
#include "train/grad_utils.h"
#include "train/interrupt.h"
#include "train/logger.h"
#include "train/loss_curve.h"
#include "train/optimizer.h"
#include "train/run_checkpoint.h"
#include "train/run_dir.h"

namespace fs = std::filesystem;

namespace mg::train {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
// backward(loss) consumes the loss's graph only. Nodes the task recorded that the loss does
// not depend on (e.g. an accuracy computed from logits with grad on) would stay on the tape,
// with their saved activations, every step: drop them, and say so once.
void drop_nodes_outside_the_loss(size_t tape_before, Logger& log) {
  Tape& t = tape();
  if (t.size() <= tape_before) return;
  static bool warned = false;
  if (!warned) {
    warned = true;
    log.message("note: the task's micro_batch_loss recorded " +
                std::to_string(t.size() - tape_before) + " tape node(s) the loss does not depend "
                "on (first: '" + t.nodes()[tape_before].name + "'); they are dropped after each "
                "step. Compute such values under NoGradGuard to save the work.");
  }
  std::vector<size_t> extra(t.size() - tape_before);
  for (size_t i = 0; i < extra.size(); ++i) extra[i] = tape_before + i;
  t.erase(std::move(extra));
}

// A streak of non-finite steps: where it began and what was non-finite first.
struct Streak {
  int length = 0;
  int64_t first_step = 0;
  std::string first_what;
};

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

// The checkpoint cfg.resume names ("" for a fresh run).
static std::string resume_dir_of(const TrainConfig& cfg) {
  if (cfg.resume.empty()) return "";
  std::string dir = cfg.resume == "latest" ? latest_checkpoint(cfg.run_dir) : cfg.resume;
  MG_CHECK(!dir.empty(), "train: --resume latest, but '", cfg.run_dir, "' has no checkpoint");
  MG_CHECK(fs::exists(fs::path(dir) / "trainer.safetensors"), "train: --resume ", cfg.resume,
           ": '", dir, "' is not a checkpoint directory (no trainer.safetensors)");
  return dir;
}

void check_run_dir(const TrainConfig& cfg) {
  const std::string dir = resume_dir_of(cfg);
  if (!cfg.run_dir.empty() && !cfg.overwrite)
    claim_run_dir(cfg.run_dir, !dir.empty(), dir.empty() ? "" : checkpoint_run_id(dir), false);
}

TrainResult train(nn::MambaLM& model, const TrainConfig& cfg, TrainTask& task) {
  MG_CHECK(cfg.grad_accum >= 1, "train: grad_accum must be >= 1, got ", cfg.grad_accum);
  MG_CHECK(task.micro_batch_loss != nullptr, "train: the task has no micro_batch_loss");
  cfg.schedule.validate();
  const bool has_dir = !cfg.run_dir.empty();
  auto params = model.named_parameters();
  AdamW opt(params, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay);
  // [data parallel] Inactive in a plain single process (nothing below changes). With several
  // ranks only rank 0 (the lead) reads and writes the run directory and logs; see
  // train/data_parallel.h for each call.
  DataParallel dp(cfg.comm ? *cfg.comm : dist::world(), params);
  const bool writes = has_dir && dp.lead();

  // Which run this is, and whether it may use the directory: before any work or any write.
  TrainResult res;
  int64_t step = 0;
  std::string resume_dir;
  std::vector<std::string> replaced;  // --overwrite: deleted after our first checkpoint
  dp.on_lead([&] {
    resume_dir = resume_dir_of(cfg);
    if (!resume_dir.empty()) res.run_id = checkpoint_run_id(resume_dir);
    if (has_dir) replaced = claim_run_dir(cfg.run_dir, !cfg.resume.empty(), res.run_id, cfg.overwrite);
  }, "checking the run directory");
  if (res.run_id.empty()) res.run_id = new_run_id();  // (only the lead's is ever written)

  const int64_t tokens_per_step =
      task.tokens_per_micro_batch * cfg.grad_accum * (dp.active() ? dp.world_size() : 1);
  RunState st;
  if (!cfg.resume.empty()) {  // weights, moments, step and the task's state
    // [data parallel] rank 0 reads the checkpoint, dp.resume sends it on
    dp.on_lead([&] { st = load_run_checkpoint(resume_dir, model, opt); }, "loading the checkpoint");
    res.last_checkpoint = resume_dir;
  }
  const fs::path log_path = writes ? fs::path(cfg.run_dir) / "log.jsonl" : fs::path();
  int64_t log_lines_cut = 0;
  if (writes) {
    fs::create_directories(cfg.run_dir);
    if (!resume_dir.empty()) log_lines_cut = cut_log_after_step(log_path.string(), st.step);
  }
  Logger log(log_path.string(), cfg.quiet ? INT64_MAX : cfg.log_every);
  if (dp.active()) {
    std::string line = dp.start(task.tokens_per_micro_batch, task.sequences_per_micro_batch, cfg.grad_accum);
    if (!cfg.quiet) log.message(line);
  }
  if (!cfg.resume.empty()) {
    if (dp.active() || !st.dist_state.empty()) {  // (one process resuming several ranks' run)
      auto r = dp.resume(opt, &st.step, st.task_state, st.dist_state, tokens_per_step);
      st.task_state = r.task_state;
      if (!r.note.empty()) log.message(r.note);
    }
    step = st.step;
    if (task.load_state) task.load_state(st.task_state);
  }
  res.first_step = step;
  if (!cfg.quiet && !resume_dir.empty()) {
    log.message("resumed from " + resume_dir + " at step " + std::to_string(step));
    if (log_lines_cut > 0)
      log.message("log.jsonl: removed " + std::to_string(log_lines_cut) + " line(s) after step " +
                  std::to_string(step) + " (written after that checkpoint, before the run stopped)");
  }
  auto plot = [&] {
    if (writes) write_loss_curve_svg(log_path.string(), (fs::path(cfg.run_dir) / "loss_curve.svg").string());
  };

  Streak streak;  // the current run of skipped steps (length 0: healthy)
  auto save = [&] {
    if (!has_dir) return;
    if (streak.length > 0) {  // never a checkpoint of weights that stopped training normally
      log.message("no checkpoint at step " + std::to_string(step) + ": the last " +
                  std::to_string(streak.length) + " step(s) were non-finite" +
                  (res.last_checkpoint.empty() ? std::string(" (no checkpoint of this run exists yet)")
                                               : "; the last good one is " + res.last_checkpoint));
      return;
    }
    RunState st{step, task.save_state ? task.save_state() : std::map<std::string, uint64_t>{},
                res.run_id, {}};
    if (dp.active()) {  // [data parallel] every rank's data state; the replicas still agree
      st.dist_state = dp.checkpoint_state(st.task_state, tokens_per_step);
      dp.check_identical("at the checkpoint of step " + std::to_string(step));
    }
    dp.on_lead([&] { res.last_checkpoint = save_run_checkpoint(cfg.run_dir, model, opt, st, cfg.keep_last); },
               "writing a checkpoint");
    if (!dp.lead()) return;
    if (!cfg.quiet) log.message("checkpoint: " + res.last_checkpoint);
    for (const std::string& name : replaced) {
      if (name == fs::path(res.last_checkpoint).filename().string()) continue;  // just replaced
      fs::remove_all(fs::path(cfg.run_dir) / name);
      log.message("--overwrite: deleted the earlier run's " + name);
    }
    std::error_code ec;
    if (!replaced.empty() && fs::remove(fs::path(cfg.run_dir) / "log.replaced.jsonl", ec))
      log.message("--overwrite: deleted the earlier run's log.replaced.jsonl");
    replaced.clear();
    plot();
  };
  auto evaluate = [&] {
    if (!task.evaluate) return;
    NoGradGuard no_grad;
    res.last_eval = task.evaluate(model);
    log.event("eval", step, res.last_eval, "", step * tokens_per_step);
  };

  std::map<std::string, std::string> shown = cfg.extra_config;
  shown["model"] = model.config().str();
  shown["steps"] = std::to_string(cfg.steps);
  shown["grad_accum"] = std::to_string(cfg.grad_accum);
  shown["max_grad_norm"] = std::to_string(cfg.max_grad_norm);
  shown["weight_decay"] = std::to_string(cfg.weight_decay);
  shown["schedule"] = cfg.schedule.describe();
  shown["settings"] = describe_settings();
  shown["run_id"] = res.run_id;
  if (!resume_dir.empty()) shown["resumed_from"] = resume_dir;
  if (dp.active()) shown["world_size"] = std::to_string(dp.world_size());
  log.start(cfg.command_line, shown);
  if (!cfg.quiet) log.message(opt.describe_groups());

  InterruptGuard interrupts(cfg.handle_sigint);
  auto t_start = Clock::now();

  // The model's device (its parameters are all on one, AdamW checks that): the peak memory
  // shown per step is that device's. On CUDA each step syncs with the host where it reads a
  // value: the targets' range check, the loss, and the global gradient norm (one double).
  const Device dev = opt.device();
  while (step < cfg.steps) {
    auto t_step = Clock::now();
    reset_peak_memory(dev);
    // K micro-batches, each loss scaled by 1/K: the summed gradients are those of the mean
    // loss over one K-times-larger batch.
    double loss_sum = 0;
    const size_t tape_before = tape().size();
    for (int64_t k = 0; k < cfg.grad_accum; ++k) {
      Tensor loss = task.micro_batch_loss(model);
      loss_sum += loss.item();
      backward(cfg.grad_accum == 1 ? loss : mul(loss, 1.0 / cfg.grad_accum));
    }
    drop_nodes_outside_the_loss(tape_before, log);
    int sig = interrupts.signal();
    if (dp.active()) {  // [data parallel] mean loss and gradients over the ranks; one Ctrl-C for all
      DataParallel::StepSync sync = dp.synchronize(loss_sum, sig != 0, step + 1);
      loss_sum = sync.loss_sum;
      if (sync.interrupted && !sig) sig = SIGINT;  // another rank's signal (mpirun forwards it)
    }
    double loss = loss_sum / cfg.grad_accum;
    double lr = cfg.schedule.lr_at(step);
    double norm = global_grad_norm(params);

    StepRecord rec{step + 1, cfg.steps, (step + 1) * tokens_per_step, loss, lr, norm, 0, 0, 0, false};
    // A finite norm proves every gradient finite (a NaN or Inf makes the sum of squares
    // non-finite), so the per-tensor search runs only when the norm is not finite.
    std::optional<std::string> bad;
    if (!std::isfinite(loss)) {
      bad = "the loss (" + fmt(loss) + "; " + describe_weights(params) + ")";
    } else if (!std::isfinite(norm)) {
      std::optional<std::string> p = find_non_finite(params);
      bad = "the gradient of " + p.value_or("some parameter");
    }
    if (bad) {  // the non-finite guard: report, skip the update, maybe stop
      rec.skipped = true;
      if (streak.length++ == 0) {
        streak.first_step = step + 1;
        streak.first_what = *bad;
      }
      log.message("step " + std::to_string(step + 1) + ": non-finite value in " + *bad +
                  "; update skipped (" + std::to_string(streak.length) + "/" +
                  std::to_string(cfg.max_nonfinite) + ")");
      if (streak.length >= cfg.max_nonfinite) {
        model.zero_grad();
        ++step;
        rec.ms = seconds_since(t_step) * 1e3;
        rec.tokens_per_s = tokens_per_step / (rec.ms / 1e3);
        rec.peak_bytes = memory_stats(dev).peak_bytes;
        log.step(rec, seconds_since(t_start));
        plot();
        throw Error(detail::cat(
            "train: stopped at step ", step, " after ", streak.length,
            " consecutive steps with non-finite values. The first was step ", streak.first_step,
            ": ", streak.first_what, ". Try a lower learning rate (--lr; the peak is now ",
            fmt(cfg.schedule.peak_lr), ") or a tighter gradient clip (--grad-clip; now ",
            cfg.max_grad_norm > 0 ? fmt(cfg.max_grad_norm) : std::string("off"), "). ",
            res.last_checkpoint.empty()
                ? std::string("No checkpoint of this run exists.")
                : "The last good checkpoint is " + res.last_checkpoint +
                      " (`latest` names it; no checkpoint was written after the first "
                      "non-finite step)."));
      }
    } else {
      streak = Streak{};
      opt.step(lr, clip_scale(norm, cfg.max_grad_norm));
    }
    model.zero_grad();
    ++step;
    rec.ms = seconds_since(t_step) * 1e3;
    rec.tokens_per_s = tokens_per_step / (rec.ms / 1e3);  // every rank's tokens
    rec.peak_bytes = memory_stats(dev).peak_bytes;
    res.losses.push_back(rec.skipped ? NAN : loss);
    log.step(rec, seconds_since(t_start));

    if (sig) {
      log.message(std::string("interrupted by ") + signal_name(sig) + " at step " +
                  std::to_string(step) + (streak.length ? "" : ": saving a checkpoint"));
      save();
      res.interrupted = true;
      res.signal = sig;
      break;
    }
    if (cfg.eval_every > 0 && step % cfg.eval_every == 0 && step < cfg.steps) {
      evaluate();
      if (task.should_stop && dp.from_lead(task.should_stop(res.last_eval), "the early-stop decision")) {
        log.message("stopping early at step " + std::to_string(step) + " (the task's should_stop)");
        res.stopped_early = true;
        break;
      }
    }
    if (cfg.ckpt_every > 0 && step % cfg.ckpt_every == 0 && step < cfg.steps) save();
  }
  if (!res.interrupted) {
    if (!res.stopped_early) evaluate();  // (an early stop has just evaluated these weights)
    save();
  }
  plot();
  res.steps_done = step;
  res.seconds = seconds_since(t_start);
  return res;
}

}  // namespace mg::train
