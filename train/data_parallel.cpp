#include "train/data_parallel.h"

#include <unistd.h>

#include <cstring>
#include <sstream>

#include "core/allocator.h"
#include "core/parallel.h"
#include "ops/convert.h"
#include "ops/shape.h"

namespace mg::train {

namespace {

std::string serialize(const std::map<std::string, uint64_t>& m) {
  std::string s;
  for (auto& [k, v] : m) s += k + "=" + std::to_string(v) + "\n";
  return s;
}

std::map<std::string, uint64_t> parse(const std::string& s) {
  std::map<std::string, uint64_t> m;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) {
    size_t eq = line.rfind('=');
    if (eq != std::string::npos) m[line.substr(0, eq)] = std::stoull(line.substr(eq + 1));
  }
  return m;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

// 64-bit FNV-1a over 8-byte words (then the tail bytes): a fingerprint, not a checksum
// against an adversary.
void fnv_mix(uint64_t& h, const void* data, size_t n) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
}

}  // namespace

Tensor shard_rows(const Tensor& global, int rank, int world) {
  MG_CHECK(world >= 1 && rank >= 0 && rank < world, "shard_rows: rank ", rank, " outside a world of ", world);
  if (world == 1) return global;
  MG_CHECK(global.dim() >= 1 && global.size(0) % world == 0, "shard_rows: a global batch of ",
           global.dim() ? global.size(0) : 0, " rows does not split into ", world, " equal shards");
  const int64_t B = global.size(0) / world;
  return slice(global, 0, rank * B, (rank + 1) * B);
}

DataParallel::DataParallel(dist::Communicator& comm, std::vector<nn::NamedParam> params,
                           int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), bucket_bytes_(bucket_bytes) {
  MG_CHECK(bucket_bytes > 0, "DataParallel: bucket_bytes must be > 0, got ", bucket_bytes);
}

void DataParallel::broadcast_tensor(const Tensor& t, const std::string& what) {
  comm_.broadcast(dist::Buffer{t.raw_data(), t.numel(), t.dtype(), t.device()}, 0, what);
}

std::string DataParallel::start(int64_t tokens_per_micro_batch, int64_t sequences_per_micro_batch,
                                int64_t grad_accum) {
  // 1. The same model and task shape on every rank.
  std::string layout = "tokens per micro-batch " + std::to_string(tokens_per_micro_batch) +
                       ", grad-accum " + std::to_string(grad_accum) + "\n";
  for (auto& np : params_)
    layout += np.name + " " + shape_str(np.tensor.shape()) + " " + dtype_name(np.tensor.dtype()) +
              (np.tensor.device().is_cuda() ? " cuda" : " cpu") + "\n";
  std::vector<std::string> all = comm_.all_gather(layout, "the model check at start");
  for (int r = 1; r < (int)all.size(); ++r) {
    if (all[r] == all[0]) continue;
    std::vector<std::string> a = lines(all[0]), b = lines(all[r]);
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    std::string mine = i < b.size() ? b[i] : "(nothing)", lead = i < a.size() ? a[i] : "(nothing)";
    throw Error(detail::cat("data parallel: rank ", r, " builds a different model or task than rank 0 (",
                            "rank 0 has '", lead, "', rank ", r, " has '", mine, "', ", a.size() - 1,
                            " vs ", b.size() - 1, " parameters); start every rank with the same flags"));
  }
  // 2. Rank 0's values everywhere, checked.
  for (auto& np : params_) broadcast_tensor(np.tensor, "the parameter broadcast at start");
  check_identical("after the parameter broadcast at start");
  // 3. Who runs where.
  Device dev = params_.empty() ? Device::cpu() : params_[0].tensor.device();
  std::string gpu = dist::selected_gpu();
  std::string where = host_name() + ", " +
      (dev.is_cuda() ? (gpu.empty() ? dev.str() : gpu) : "cpu (" + std::to_string(num_threads()) + (num_threads() == 1 ? " thread)" : " threads)"));
  std::vector<std::string> places = comm_.all_gather(where, "the device exchange at start");
  const int W = comm_.size();
  std::string out = "data parallel: " + comm_.backend() + ", " + std::to_string(W) +
                    (W == 1 ? " rank" : " ranks") + "\n";
  for (int r = 0; r < W; ++r) out += "  rank " + std::to_string(r) + ": " + places[r] + "\n";
  if (sequences_per_micro_batch > 0)
    out += "  batch " + std::to_string(sequences_per_micro_batch) + " x grad-accum " +
           std::to_string(grad_accum) + " x world " + std::to_string(W) + " = global batch " +
           std::to_string(sequences_per_micro_batch * grad_accum * W) + " sequences, ";
  else
    out += "  ";
  out += std::to_string(tokens_per_micro_batch * grad_accum * W) + " tokens per step";
  return out;
}

DataParallel::StepSync DataParallel::synchronize(double local_loss_sum, bool local_interrupted,
                                                 int64_t step) {
  const std::string at = " of step " + std::to_string(step);
  // 1. Loss sums, interrupt flags and which gradients exist, in one small all-reduce.
  const size_t P = params_.size();
  std::vector<double> v(2 + P, 0.0);
  v[0] = local_loss_sum;
  v[1] = local_interrupted ? 1 : 0;
  for (size_t i = 0; i < P; ++i) v[2 + i] = params_[i].tensor.grad().defined() ? 1 : 0;
  comm_.all_reduce(v.data(), (int64_t)v.size(), dist::ReduceOp::sum, "the loss all-reduce" + at);
  // A gradient another rank has and this one lacks is zero here: every rank sends the same buckets.
  for (size_t i = 0; i < P; ++i) {
    Tensor& p = params_[i].tensor;
    if (v[2 + i] > 0 && !p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  }

  // 2. The gradients, averaged in buckets (parameters in list order; large ones in place).
  struct Bucket { DType dtype; Device device; int64_t n; };
  struct Slot { Tensor grad; size_t bucket; int64_t offset; };
  std::vector<Bucket> buckets;
  std::vector<Slot> slots;
  std::vector<dist::Buffer> buffers;
  for (auto& np : params_) {
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    const int64_t es = (int64_t)dtype_size(g.dtype());
    if ((int64_t)g.nbytes() >= bucket_bytes_) {
      buffers.push_back({g.raw_data(), g.numel(), g.dtype(), g.device()});
      continue;
    }
    if (buckets.empty() || buckets.back().dtype != g.dtype() || buckets.back().device != g.device() ||
        (buckets.back().n + g.numel()) * es > bucket_bytes_)
      buckets.push_back({g.dtype(), g.device(), 0});
    slots.push_back({g, buckets.size() - 1, buckets.back().n});
    buckets.back().n += g.numel();
  }
  host_buckets_.resize(buckets.size());
  device_buckets_.resize(buckets.size());
  std::vector<void*> base(buckets.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    const Bucket& k = buckets[b];
    if (k.device.is_cpu()) {
      host_buckets_[b].resize((size_t)k.n * dtype_size(k.dtype));
      base[b] = host_buckets_[b].data();
    } else {
      Tensor& t = device_buckets_[b];
      if (!t.defined() || t.numel() < k.n || t.dtype() != k.dtype || t.device() != k.device)
        t = Tensor::empty({k.n}, k.dtype, k.device);
      base[b] = t.raw_data();
    }
    buffers.push_back({base[b], k.n, k.dtype, k.device});
  }
  auto at_offset = [&](const Slot& s) {
    return static_cast<char*>(base[s.bucket]) + s.offset * (int64_t)dtype_size(s.grad.dtype());
  };
  for (const Slot& s : slots) {  // pack
    if (s.grad.device().is_cpu()) std::memcpy(at_offset(s), s.grad.raw_data(), s.grad.nbytes());
    else allocator_for(s.grad.device()).copy_on_device(at_offset(s), s.grad.raw_data(), s.grad.nbytes());
  }
  comm_.all_reduce(buffers, dist::ReduceOp::mean, "the gradient all-reduce" + at);
  for (const Slot& s : slots) {  // unpack
    if (s.grad.device().is_cpu()) std::memcpy(s.grad.raw_data(), at_offset(s), s.grad.nbytes());
    else allocator_for(s.grad.device()).copy_on_device(s.grad.raw_data(), at_offset(s), s.grad.nbytes());
  }
  return {v[0] / comm_.size(), v[1] > 0};
}

uint64_t DataParallel::parameter_fingerprint() const {
  uint64_t h = 1469598103934665603ull;
  for (auto& np : params_) {
    Tensor host = np.tensor.device().is_cpu() ? np.tensor : to(np.tensor, Device::cpu());
    fnv_mix(h, host.raw_data(), host.nbytes());
  }
  return h;
}

void DataParallel::check_identical(const std::string& when) {
  std::vector<std::string> all =
      comm_.all_gather(std::to_string(parameter_fingerprint()), "the parameter check " + when);
  std::string differ;
  for (int r = 1; r < (int)all.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  MG_CHECK(differ.empty(), "data parallel: the parameters of rank(s) ", differ,
           " differ from rank 0's ", when, " (they must be bitwise equal on every rank)");
}

void DataParallel::on_lead(const std::function<void()>& fn, const std::string& what) {
  if (!active()) return fn();
  std::string err;
  if (lead()) {
    try {
      fn();
    } catch (const std::exception& e) {
      err = *e.what() ? e.what() : "unknown error";
    }
  }
  err = comm_.broadcast_string(err, 0, what);
  if (!err.empty()) throw Error(lead() ? err : "rank 0: " + err);
}

bool DataParallel::from_lead(bool flag, const std::string& what) {
  if (!active()) return flag;
  double v = flag ? 1 : 0;
  comm_.broadcast(dist::Buffer{&v, 1, DType::f64, Device::cpu()}, 0, what);
  return v != 0;
}

std::map<std::string, uint64_t> DataParallel::checkpoint_state(
    const std::map<std::string, uint64_t>& mine, int64_t tokens_per_step) {
  std::vector<std::string> all = comm_.all_gather(serialize(mine), "the task-state gather for a checkpoint");
  std::map<std::string, uint64_t> out{{"world_size", (uint64_t)comm_.size()},
                                      {"tokens_per_step", (uint64_t)tokens_per_step}};
  for (int r = 0; r < (int)all.size(); ++r)
    for (auto& [k, v] : parse(all[r])) out["rank" + std::to_string(r) + "." + k] = v;
  return out;
}

DataParallel::Resumed DataParallel::resume(Optimizer& opt, int64_t* step,
                                           const std::map<std::string, uint64_t>& task_state,
                                           const std::map<std::string, uint64_t>& dist_state,
                                           int64_t tokens_per_step) {
  const int W = comm_.size();
  Resumed out;
  std::string packed;  // rank 0: every rank's serialized state, separated by '\x1e'
  on_lead([&] {
    const uint64_t saved_w = dist_state.count("world_size") ? dist_state.at("world_size") : 1;
    // Every rank's recorded task state: the rank<r>.* entries, or (a checkpoint of one
    // process) the task state itself.
    std::vector<std::map<std::string, uint64_t>> recorded(saved_w);
    bool per_rank = false;
    for (auto& kv : dist_state) per_rank |= kv.first.rfind("rank", 0) == 0;
    if (!per_rank)
      for (auto& r : recorded) r = task_state;
    for (auto& [k, v] : dist_state) {
      if (k.rfind("rank", 0) != 0) continue;
      size_t dot = k.find('.');
      uint64_t r = std::stoull(k.substr(4, dot - 4));
      MG_CHECK(r < saved_w, "checkpoint: '", k, "' names a rank outside its world of ", saved_w);
      recorded[r][k.substr(dot + 1)] = v;
    }
    std::vector<std::string> per(W);
    if (saved_w == (uint64_t)W) {
      for (int r = 0; r < W; ++r) per[r] = serialize(recorded[r]);
    } else {
      for (uint64_t r = 1; r < saved_w; ++r)
        MG_CHECK(recorded[r] == recorded[0], "resume: the checkpoint was written by ", saved_w,
                 " ranks whose data states differ (rank ", r, " vs rank 0), so it cannot be "
                 "re-sharded over ", W, " ranks; resume with mpirun -np ", saved_w);
      for (int r = 0; r < W; ++r) per[r] = serialize(task_state);
      const uint64_t saved_tokens = dist_state.count("tokens_per_step") ? dist_state.at("tokens_per_step") : 0;
      out.note = "resume: the checkpoint was written by " + std::to_string(saved_w) + " rank(s), this run has " +
                 std::to_string(W) + ": every rank continues rank 0's data stream (the global batch is re-sharded)";
      if (saved_tokens && saved_tokens != (uint64_t)tokens_per_step)
        out.note += "; the global batch changes from " + std::to_string(saved_tokens) + " to " +
                    std::to_string(tokens_per_step) + " tokens per step";
    }
    for (int r = 0; r < W; ++r) packed += per[r] + "\x1e";
  }, "resuming from the checkpoint");
  packed = comm_.broadcast_string(packed, 0, "the task states on resume");
  size_t begin = 0;
  for (int r = 0; r < comm_.rank(); ++r) begin = packed.find('\x1e', begin) + 1;
  out.task_state = parse(packed.substr(begin, packed.find('\x1e', begin) - begin));

  double s = (double)*step;
  comm_.broadcast(dist::Buffer{&s, 1, DType::f64, Device::cpu()}, 0, "the step on resume");
  *step = (int64_t)s;
  for (auto& np : params_) broadcast_tensor(np.tensor, "the weights on resume");
  std::map<std::string, Tensor> state = opt.state(), received;
  for (auto& [k, t] : state) {
    if (lead()) {
      broadcast_tensor(t, "the optimizer state on resume");
    } else {
      Tensor r = Tensor::empty(t.shape(), t.dtype(), t.device());
      broadcast_tensor(r, "the optimizer state on resume");
      received[k] = r;
    }
  }
  if (!lead()) opt.load_state(received);
  check_identical("after resuming");
  return out;
}

}  // namespace mg::train
