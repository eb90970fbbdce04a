#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "autograd/tape.h"
#include "ops/arith.h"
#include "core/allocator.h"
#include "train/data_parallel.h"
#include "train/grad_utils.h"
#include "train/logger.h"
#include "train/optimizer.h"
#include "train/run_checkpoint.h"

namespace mg::train {

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

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

}  // namespace

TrainResult train(nn::MambaLM& model, const TrainConfig& cfg, TrainTask& task) {
  MG_CHECK(cfg.grad_accum >= 1, "train: grad_accum must be >= 1, got ", cfg.grad_accum);
  MG_CHECK(task.micro_batch_loss != nullptr, "train: the task has no micro_batch_loss");
  const bool has_dir = !cfg.run_dir.empty();
  auto params = model.named_parameters();
  AdamW opt(params, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay);
  // [data parallel] Inactive in a plain single process (nothing below changes). With several
  // ranks only rank 0 logs and writes; see train/data_parallel.h for each call.
  DataParallel dp(cfg.comm ? *cfg.comm : dist::world(), params);
  const int64_t tokens_per_step =
      task.tokens_per_micro_batch * cfg.grad_accum * (dp.active() ? dp.world_size() : 1);
  const bool writes = has_dir && dp.lead();
  if (writes) std::filesystem::create_directories(cfg.run_dir);
  Logger log(writes ? (std::filesystem::path(cfg.run_dir) / "log.jsonl").string() : "",
             cfg.quiet ? INT64_MAX : cfg.log_every);
  if (dp.active()) {
    std::string line = dp.start(task.tokens_per_micro_batch, task.sequences_per_micro_batch, cfg.grad_accum);
    if (!cfg.quiet) log.message(line);
  }

  TrainResult res;
  int64_t step = 0;
  if (!cfg.resume.empty()) {  // weights, moments, step and the task's state
    std::string dir;
    RunState st;
    dp.on_lead([&] {  // [data parallel] rank 0 reads the checkpoint, dp.resume sends it on
      dir = cfg.resume == "latest" ? latest_checkpoint(cfg.run_dir) : cfg.resume;
      MG_CHECK(!dir.empty(), "train: --resume latest, but '", cfg.run_dir, "' has no checkpoint");
      st = load_run_checkpoint(dir, model, opt);
    }, "loading the checkpoint");
    if (dp.active() || !st.dist_state.empty()) {  // (one process resuming several ranks' run)
      auto r = dp.resume(opt, &st.step, st.task_state, st.dist_state, tokens_per_step);
      st.task_state = r.task_state;
      if (!r.note.empty()) log.message(r.note);
    }
    step = st.step;
    if (task.load_state) task.load_state(st.task_state);
    if (!cfg.quiet && dp.lead()) log.message("resumed from " + dir + " at step " + std::to_string(step));
  }
  res.first_step = step;
  auto save = [&] {
    if (!has_dir) return;
    RunState st{step, task.save_state ? task.save_state() : std::map<std::string, uint64_t>{}, {}};
    if (dp.active()) {  // [data parallel] every rank's data state; the replicas still agree
      st.dist_state = dp.checkpoint_state(st.task_state, tokens_per_step);
      dp.check_identical("at the checkpoint of step " + std::to_string(step));
    }
    std::string dir;
    dp.on_lead([&] { dir = save_run_checkpoint(cfg.run_dir, model, opt, st, cfg.keep_last); },
               "writing a checkpoint");
    if (!cfg.quiet && dp.lead()) log.message("checkpoint: " + dir);
  };
  auto evaluate = [&] {
    if (!task.evaluate) return;
    NoGradGuard no_grad;
    res.last_eval = task.evaluate(model);
    log.event("eval", step, res.last_eval);
  };

  std::map<std::string, std::string> shown = cfg.extra_config;
  shown["model"] = model.config().str();
  shown["steps"] = std::to_string(cfg.steps);
  shown["grad_accum"] = std::to_string(cfg.grad_accum);
  shown["max_grad_norm"] = std::to_string(cfg.max_grad_norm);
  shown["weight_decay"] = std::to_string(cfg.weight_decay);
  shown["schedule"] = cfg.schedule.describe();
  if (dp.active()) shown["world_size"] = std::to_string(dp.world_size());
  log.start(cfg.command_line, shown);
  if (!cfg.quiet) log.message(opt.describe_groups());

  using SigHandler = void (*)(int);
  SigHandler old_handler = cfg.handle_sigint ? std::signal(SIGINT, on_sigint) : nullptr;
  g_interrupted.store(false);
  auto t_start = Clock::now();
  int nonfinite_in_a_row = 0;

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
    bool interrupted = g_interrupted.load();
    if (dp.active()) {  // [data parallel] mean loss and gradients over the ranks; one Ctrl-C for all
      DataParallel::StepSync sync = dp.synchronize(loss_sum, interrupted, step + 1);
      loss_sum = sync.loss_sum;
      interrupted = sync.interrupted;
    }
    double loss = loss_sum / cfg.grad_accum;
    double lr = cfg.schedule.lr_at(step);
    double norm = global_grad_norm(params);

    StepRecord rec{step + 1, cfg.steps, loss, lr, norm, 0, 0, 0, false};
    // A finite norm proves every gradient finite (a NaN or Inf makes the sum of squares
    // non-finite), so the per-tensor search runs only when the norm is not finite.
    std::optional<std::string> bad;
    if (!std::isfinite(loss)) bad = "the loss";
    else if (!std::isfinite(norm)) bad = find_non_finite(params);
    if (bad) {  // the non-finite guard: report, skip the update, maybe stop
      rec.skipped = true;
      ++nonfinite_in_a_row;
      log.message("step " + std::to_string(step + 1) + ": non-finite value in " + *bad +
                  "; update skipped (" + std::to_string(nonfinite_in_a_row) + "/" +
                  std::to_string(cfg.max_nonfinite) + ")");
      if (nonfinite_in_a_row >= cfg.max_nonfinite) {
        model.zero_grad();
        if (cfg.handle_sigint) std::signal(SIGINT, old_handler);
        throw Error(detail::cat("train: stopped after ", nonfinite_in_a_row,
                                " consecutive non-finite steps (last: ", *bad, " at step ",
                                step + 1, "); the last checkpoint is intact"));
      }
    } else {
      nonfinite_in_a_row = 0;
      opt.step(lr, clip_scale(norm, cfg.max_grad_norm));
    }
    model.zero_grad();
    ++step;
    rec.ms = seconds_since(t_step) * 1e3;
    rec.tokens_per_s = tokens_per_step / (rec.ms / 1e3);  // every rank's tokens
    rec.peak_bytes = memory_stats(dev).peak_bytes;
    res.losses.push_back(rec.skipped ? NAN : loss);
    log.step(rec, seconds_since(t_start));

    if (dp.active() ? interrupted : g_interrupted.load()) {
      log.message("interrupted: saving a checkpoint at step " + std::to_string(step));
      save();
      res.interrupted = true;
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
  if (cfg.handle_sigint) std::signal(SIGINT, old_handler);
  if (!res.interrupted) {
    if (!res.stopped_early) evaluate();  // (an early stop has just evaluated these weights)
    save();
  }
  res.steps_done = step;
  res.seconds = seconds_since(t_start);
  return res;
}

}  // namespace mg::train
