// The training loop's run hygiene: one run per directory (run ids, --overwrite), pruning only
// the current run's checkpoints, no checkpoint while unhealthy, a checked log cut back on
// resume, and SIGTERM handled like Ctrl-C (issue 16, items 1-4).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>

#include "ops/arith.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "train/logger.h"
#include "train/run_dir.h"
#include "train/trainer.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

nn::MambaConfig small_config() {
  nn::MambaConfig c;
  c.d_model = 16;
  c.n_layer = 1;
  c.vocab_size = 20;
  c.d_state = 4;
  return c;
}

// Random tokens from a generator whose offset is the task's state; `hook(call)` runs before
// every micro-batch (call counts from 1) and may throw or raise a signal.
struct Task {
  Generator gen{3};
  int calls = 0;
  std::function<void(int)> hook = [](int) {};
  train::TrainTask make() {
    train::TrainTask t;
    t.tokens_per_micro_batch = 2 * 8;
    t.micro_batch_loss = [this](const nn::MambaLM& m) {
      hook(++calls);
      std::vector<int32_t> ids(2 * 9);
      for (auto& v : ids) v = (int32_t)gen.next_below(20);
      return m.loss(Tensor::from_vector(ids, {2, 9}));
    };
    t.save_state = [this] { return std::map<std::string, uint64_t>{{"offset", gen.offset()}}; };
    t.load_state = [this](const std::map<std::string, uint64_t>& s) { gen.set_state(3, s.at("offset")); };
    return t;
  }
};

train::TrainConfig config(const std::string& dir, int64_t steps) {
  train::TrainConfig c;
  c.steps = steps;
  c.run_dir = dir;
  c.quiet = true;
  c.schedule = train::LrSchedule::parse("constant", 1e-3);
  return c;
}

std::string fresh_dir(const char* name) {
  fs::path p = fs::temp_directory_path() / (std::string("mg_runs_") + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

std::set<std::string> checkpoints_in(const std::string& dir) {
  std::set<std::string> out;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("ckpt-", 0) == 0) out.insert(e.path().filename().string());
  return out;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);) out.push_back(l);
  return out;
}

// The "step" of every step line of a log (not the start or eval lines).
std::vector<int64_t> logged_steps(const std::string& path) {
  std::vector<int64_t> out;
  for (auto& l : lines_of(path))
    if (l.rfind("{\"step\": ", 0) == 0) out.push_back(std::stoll(l.substr(9)));
  return out;
}

}  // namespace

TEST_CASE("run dir: a fresh run refuses a directory that holds another run, naming the ways on") {
  const std::string d = fresh_dir("refuse");
  Task a;
  auto ta = a.make();
  auto ca = config(d, 6);
  ca.ckpt_every = 2;
  ca.keep_last = 2;
  nn::MambaLM ma(small_config(), 1);
  auto ra = train::train(ma, ca, ta);
  REQUIRE(checkpoints_in(d) == std::set<std::string>{"ckpt-000004", "ckpt-000006"});
  const auto log_before = lines_of(d + "/log.jsonl");

  // The case: a shorter fresh run in the same directory.
  Task b;
  auto tb = b.make();
  nn::MambaLM mb(small_config(), 2);
  try {
    train::train(mb, config(d, 2), tb);
    FAIL("a fresh run started in a directory holding another run");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("ckpt-000004, ckpt-000006") != std::string::npos);
    CHECK(msg.find("--resume latest") != std::string::npos);
    CHECK(msg.find("--run-dir") != std::string::npos);
    CHECK(msg.find("--overwrite") != std::string::npos);
  }
  CHECK(b.calls == 0);  // refused before any work
  CHECK(checkpoints_in(d) == std::set<std::string>{"ckpt-000004", "ckpt-000006"});
  CHECK(lines_of(d + "/log.jsonl") == log_before);
  CHECK(train::checkpoint_run_id(d + "/ckpt-000006") == ra.run_id);
  CHECK(ra.run_id.size() == 16);
  fs::remove_all(d);
}

TEST_CASE("run dir: --overwrite keeps the earlier run until this run's first checkpoint, then deletes it") {
  const std::string d = fresh_dir("overwrite");
  Task a;
  auto ta = a.make();
  auto ca = config(d, 6);
  ca.ckpt_every = 2;
  ca.keep_last = 2;
  nn::MambaLM ma(small_config(), 1);
  auto ra = train::train(ma, ca, ta);

  Task b;
  bool earlier_intact_during_step_1 = false;
  b.hook = [&](int call) {
    if (call == 1)
      earlier_intact_during_step_1 =
          checkpoints_in(d) == std::set<std::string>{"ckpt-000004", "ckpt-000006"} &&
          train::latest_checkpoint(d) == d + "/ckpt-000006" && fs::exists(d + "/log.replaced.jsonl") &&
          !fs::exists(d + "/log.jsonl.tmp");
  };
  auto tb = b.make();
  auto cb = config(d, 3);
  cb.ckpt_every = 1;
  cb.keep_last = 2;
  cb.overwrite = true;
  nn::MambaLM mb(small_config(), 2);
  auto rb = train::train(mb, cb, tb);
  CHECK(earlier_intact_during_step_1);
  CHECK(rb.run_id != ra.run_id);
  // Only the new run's newest two remain; the earlier run and its log are gone.
  CHECK(checkpoints_in(d) == std::set<std::string>{"ckpt-000002", "ckpt-000003"});
  CHECK(train::latest_checkpoint(d) == d + "/ckpt-000003");
  CHECK(!fs::exists(d + "/log.replaced.jsonl"));
  CHECK(logged_steps(d + "/log.jsonl") == std::vector<int64_t>{1, 2, 3});
  CHECK(train::checkpoint_run_id(d + "/ckpt-000002") == rb.run_id);
  fs::remove_all(d);
}

TEST_CASE("run dir: pruning removes only the current run's oldest, never the new one or latest") {
  train::RunDirContents c;
  c.checkpoints = {{"ckpt-000002", 2, "mine"}, {"ckpt-000004", 4, "mine"}, {"ckpt-000006", 6, "mine"},
                   {"ckpt-001500", 1500, "other"}, {"ckpt-001550", 1550, ""}};
  c.latest = "ckpt-000006";
  CHECK(train::checkpoints_to_prune(c, "mine", "ckpt-000006", "ckpt-000006", 2) ==
        std::vector<std::string>{"ckpt-000002"});
  CHECK(train::checkpoints_to_prune(c, "mine", "ckpt-000006", "ckpt-000006", 1) ==
        std::vector<std::string>{"ckpt-000002", "ckpt-000004"});
  // A checkpoint just rewritten at an earlier step (a resume from it) is never deleted.
  CHECK(train::checkpoints_to_prune(c, "mine", "ckpt-000002", "ckpt-000002", 1) ==
        std::vector<std::string>{"ckpt-000004"});
  CHECK(train::checkpoints_to_prune(c, "other", "ckpt-001500", "ckpt-001500", 1).empty());
  CHECK(train::checkpoints_to_prune(c, "", "x", "x", 1).empty());  // no id: prune nothing
}

TEST_CASE("run dir: a resumed run continues its own id; another run's checkpoints block it") {
  const std::string d = fresh_dir("resume_id");
  Task a;
  auto ta = a.make();
  auto ca = config(d, 2);
  nn::MambaLM ma(small_config(), 1);
  auto ra = train::train(ma, ca, ta);
  Task a2;
  auto ta2 = a2.make();
  auto cr = config(d, 4);
  cr.resume = "latest";
  auto rr = train::train(ma, cr, ta2);
  CHECK(rr.run_id == ra.run_id);
  CHECK(rr.first_step == 2);
  // A checkpoint of another run, resumed into this directory: refused (unless --overwrite).
  const std::string e = fresh_dir("resume_other");
  Task c;
  auto tc = c.make();
  nn::MambaLM mc(small_config(), 3);
  train::train(mc, config(e, 1), tc);
  auto cx = config(d, 6);
  cx.resume = e + "/ckpt-000001";
  CHECK_THROWS_WITH_AS(train::train(mc, cx, tc), doctest::Contains("checkpoints of another run (ckpt-000002, ckpt-000004)"), Error);
  fs::remove_all(d);
  fs::remove_all(e);
}

TEST_CASE("non-finite guard: no checkpoint ever while unhealthy; the stop names the loss, the step, --lr, --grad-clip") {
  const std::string d = fresh_dir("lr500");
  Task t;
  auto task = t.make();
  auto c = config(d, 30);
  c.ckpt_every = 1;
  c.schedule = train::LrSchedule::parse("constant", 500.0);  // the issue's --lr 500
  c.max_nonfinite = 3;
  nn::MambaLM m(small_config(), 1);
  std::string msg;
  try {
    train::train(m, c, task);
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO(msg);
  REQUIRE(!msg.empty());
  CHECK(msg.find("the loss (") != std::string::npos);
  CHECK(msg.find("the largest |w| is") != std::string::npos);  // the weights' size, named
  CHECK(msg.find("--lr; the peak is now 500") != std::string::npos);
  CHECK(msg.find("--grad-clip") != std::string::npos);
  // Every checkpoint on disk is of a healthy step: the last one is the step before the first
  // non-finite one (named in the message), and nothing after it.
  const auto cps = checkpoints_in(d);
  REQUIRE(!cps.empty());
  const int64_t last_good = std::stoll(cps.rbegin()->substr(5));
  CHECK(msg.find("The first was step " + std::to_string(last_good + 1) + ":") != std::string::npos);
  CHECK(msg.find("The last good checkpoint is " + d + "/" + *cps.rbegin()) != std::string::npos);
  CHECK(train::latest_checkpoint(d) == d + "/" + *cps.rbegin());
  fs::remove_all(d);
}

TEST_CASE("non-finite guard: with no checkpoint yet the stop says so; a NaN gradient is named by parameter") {
  const std::string d = fresh_dir("nan_grad");
  Task t;
  auto task = t.make();
  auto inner = task.micro_batch_loss;
  // A finite loss whose gradient is NaN in one parameter: sqrt(0 * w) is 0, but its backward
  // is (1 / (2 sqrt 0)) * 0 = inf * 0 = NaN.
  task.micro_batch_loss = [&](const nn::MambaLM& m) {
    Tensor w = m.parameter("backbone.norm_f.weight");
    return add(inner(m), sum(sqrt(mul(w, 0.0))));
  };
  auto c = config(d, 10);
  c.ckpt_every = 1;
  c.max_nonfinite = 2;
  nn::MambaLM m(small_config(), 1);
  CHECK_THROWS_WITH_AS(train::train(m, c, task),
                       doctest::Contains("The first was step 1: the gradient of backbone.norm_f.weight. "
                                         "Try a lower learning rate"),
                       Error);
  CHECK_THROWS_WITH_AS(train::train(m, [&] { auto x = c; x.overwrite = true; return x; }(), task),
                       doctest::Contains("No checkpoint of this run exists."), Error);
  CHECK(checkpoints_in(d).empty());
  CHECK(!fs::exists(d + "/latest"));
  fs::remove_all(d);
}

TEST_CASE("log: a failed write is an error naming the file and the reason (a full disk)") {
  // /dev/full accepts the open and fails every flush with ENOSPC.
  train::Logger log("/dev/full", INT64_MAX);
  CHECK_THROWS_WITH_AS(log.start("cmd", {{"a", "b"}}), doctest::Contains("'/dev/full' failed: No space left on device"), Error);
  train::StepRecord r;
  r.step = 1;
  CHECK_THROWS_WITH_AS(log.step(r, 0.0), doctest::Contains("No space left on device"), Error);
  CHECK_THROWS_WITH_AS(log.event("eval", 1, {{"val_loss", 1.0}}), doctest::Contains("No space left"), Error);
  // In a run: a resumed run whose log.jsonl is on a full disk stops before its first step.
  const std::string d = fresh_dir("fulldisk");
  Task t;
  auto task = t.make();
  nn::MambaLM m(small_config(), 1);
  train::train(m, config(d, 1), task);
  fs::remove(d + "/log.jsonl");
  fs::create_symlink("/dev/full", d + "/log.jsonl");
  auto c = config(d, 3);
  c.resume = "latest";
  const int calls_before = t.calls;
  CHECK_THROWS_WITH_AS(train::train(m, c, task), doctest::Contains("No space left on device"), Error);
  CHECK(t.calls == calls_before);
  fs::remove_all(d);
}

TEST_CASE("log: after a crash and a resume the log is one history (strictly increasing steps)") {
  const std::string d = fresh_dir("logcut");
  Task t;
  t.hook = [](int call) {
    if (call == 6) throw std::runtime_error("simulated crash during step 6");
  };
  auto task = t.make();
  auto c = config(d, 8);
  c.ckpt_every = 2;
  c.eval_every = 2;
  task.evaluate = [](const nn::MambaLM&) { return std::map<std::string, double>{{"val_loss", 1.0}}; };
  nn::MambaLM m(small_config(), 1);
  CHECK_THROWS_AS(train::train(m, c, task), std::runtime_error);
  REQUIRE(logged_steps(d + "/log.jsonl") == std::vector<int64_t>{1, 2, 3, 4, 5});
  { std::ofstream(d + "/log.jsonl", std::ios::app) << "{\"step\": 6, \"los"; }  // torn by the crash
  REQUIRE(train::latest_checkpoint(d) == d + "/ckpt-000004");

  Task t2;
  auto task2 = t2.make();
  task2.evaluate = task.evaluate;
  c.resume = "latest";
  nn::MambaLM m2(small_config(), 9);
  train::train(m2, c, task2);
  CHECK(logged_steps(d + "/log.jsonl") == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8});
  // Every line is whole JSON; the evaluations are those at steps 2, 4 (kept), 6 and 8.
  int evals = 0, starts = 0;
  for (auto& l : lines_of(d + "/log.jsonl")) {
    CHECK(l.back() == '}');
    evals += l.find("\"event\": \"eval\"") != std::string::npos;
    starts += l.find("\"event\": \"start\"") != std::string::npos;
  }
  CHECK(evals == 4);
  CHECK(starts == 2);
  // Cut at 3: steps 4-8, the evaluations at 4, 6 and 8, and the resumed run's start line.
  CHECK(train::cut_log_after_step(d + "/log.jsonl", 3) == 9);
  CHECK(logged_steps(d + "/log.jsonl") == std::vector<int64_t>{1, 2, 3});
  fs::remove_all(d);
}

TEST_CASE("signals: SIGTERM saves a checkpoint and returns like Ctrl-C, naming the signal") {
  const std::string d = fresh_dir("sigterm");
  for (int sig : {SIGTERM, SIGINT}) {
    CAPTURE(sig);
    fs::remove_all(d);
    Task t;
    t.hook = [sig](int call) {
      if (call == 3) std::raise(sig);  // during step 3
    };
    auto task = t.make();
    nn::MambaLM m(small_config(), 1);
    auto before = std::signal(sig, SIG_DFL);  // (doctest installs its own)
    std::signal(sig, before);
    auto r = train::train(m, config(d, 100), task);
    CHECK(r.interrupted);
    CHECK(r.signal == sig);
    CHECK(r.steps_done == 3);
    CHECK(train::latest_checkpoint(d) == d + "/ckpt-000003");
    // The handlers are restored afterwards.
    const bool restored = std::signal(sig, before) == before;
    CHECK(restored);
  }
  fs::remove_all(d);
}
