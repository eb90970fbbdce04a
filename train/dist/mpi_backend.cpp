// train/dist/mpi_backend.cpp — the MPI communicator (compiled when CMake finds MPI: MG_MPI).
//
// Every collective is non-blocking (MPI_I*) and polled with MPI_Testall until it completes or
// MG_DIST_TIMEOUT passes; then the waiting ranks find out who is missing (on_timeout) and the
// job is aborted with a message naming those ranks. Errors are returned, not fatal
// (MPI_ERRORS_RETURN), so that the message says which call failed and on which rank; a failed
// collective cannot be recovered from, so the job is aborted then too.
//
// Device buffers: NCCL when the build has it (created at the first device collective, its id
// broadcast over MPI), else MPI itself when it reports CUDA awareness (sum and max; mean is a
// sum followed by a host-side scale, so it is staged), else staged through host memory.
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>  // Open MPI: MPIX_Query_cuda_support
#endif
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "train/distributed.h"

namespace mg::dist::detail {

namespace {

using Clock = std::chrono::steady_clock;

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::bf16: break;  // never reduced: gradients are f32 under every precision
  }
  throw Error(::mg::detail::cat("MPI all_reduce: no MPI type for ", dtype_name(t), " (f32, f64, i32)"));
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

constexpr int64_t kMaxCount = INT_MAX / 8;  // elements per MPI call (counts are int)
constexpr int kAliveTag = 7001;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const LaunchInfo& li) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;  // only the main thread calls MPI (OpenMP threads never do)
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    // Our own communicators: collectives, the liveness exchange, the end-of-job barrier.
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_dup(MPI_COMM_WORLD, &alive_comm_);
    MPI_Comm_dup(MPI_COMM_WORLD, &exit_comm_);
    for (MPI_Comm c : {comm_, alive_comm_, exit_comm_}) MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm local;
    MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
    (void)li;  // MPI's own numbers are authoritative; the environment only chose the backend

    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    std::string v(lib, (size_t)len);
    v = v.substr(0, v.find_first_of(",\n"));  // "Open MPI v4.1.4"
    backend_ = "MPI (" + v + ")";
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
    cuda_aware_ = MPIX_Query_cuda_support() == 1;
#endif
    // Every rank's host and pid, for the messages that name a rank.
    char host[MPI_MAX_PROCESSOR_NAME];
    MPI_Get_processor_name(host, &len);
    host_ = std::string(host, (size_t)len);
    // Processes start with some skew (more across machines): this first exchange waits longer.
    startup_ = true;
    peers_ = all_gather(host_ + " pid " + std::to_string(::getpid()), "the start-up exchange");
    startup_ = false;
  }

  // The end of the job: wait (bounded) until every rank gets here, then finalise. A rank
  // that ends while the others still train would otherwise block in MPI_Finalize forever.
  ~MpiCommunicator() override {
    MPI_Request r;
    if (MPI_Ibarrier(exit_comm_, &r) == MPI_SUCCESS)
      wait(&r, 1, "the end of the program (every rank finishing)", exit_comm_);
    MPI_Finalize();  // NCCL's communicator is left to the process's end (CUDA may be gone)
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  bool distributed() const override { return true; }
  std::string backend() const override {
    std::string b = backend_;
    if (nccl_) b += " + " + nccl_->name();
    else if (nccl_compiled()) b += " + NCCL for GPU buffers";
    else if (cuda_aware_) b += ", CUDA-aware";
    return b;
  }

  void all_reduce(std::span<const Buffer> buffers, ReduceOp op, const std::string& what) override {
    std::vector<Buffer> host, device;
    for (const Buffer& b : buffers) (b.device.is_cuda() ? device : host).push_back(b);
    if (!device.empty()) device_all_reduce(device, op, what);
    std::vector<MPI_Request> reqs;
    for (const Buffer& b : host) {
      MG_CHECK(b.dtype != DType::i32, "all_reduce: i32 buffers are not reduced (", what, ")");
      for (int64_t off = 0; off < b.n; off += kMaxCount) {
        int count = (int)std::min(kMaxCount, b.n - off);
        char* p = static_cast<char*>(b.data) + off * element_size(b.dtype);
        reqs.emplace_back();
        check(MPI_Iallreduce(MPI_IN_PLACE, p, count, mpi_type(b.dtype), mpi_op(op), comm_,
                             &reqs.back()), "MPI_Iallreduce", what);
      }
    }
    wait(reqs.data(), (int)reqs.size(), what, comm_);
    if (op == ReduceOp::mean)
      for (const Buffer& b : host) scale_host(b, 1.0 / size_);
  }

  void broadcast(const Buffer& b, int root, const std::string& what) override {
    if (b.device.is_cuda()) {
      if (ensure_nccl(what)) {
        if (!nccl_->broadcast(b, root, timeout_seconds())) on_timeout(what, "NCCL broadcast");
        return;
      }
      if (!cuda_aware_) {
        std::vector<char> stage((size_t)(b.n * element_size(b.dtype)));
        if (rank_ == root) copy_device_to_host(stage.data(), b);
        host_broadcast(stage.data(), (int64_t)stage.size(), root, what);
        if (rank_ != root) copy_host_to_device(b, stage.data());
        return;
      }
    }
    host_broadcast(b.data, b.n * element_size(b.dtype), root, what);
  }

  std::vector<std::string> all_gather(const std::string& mine, const std::string& what) override {
    std::vector<int> lens((size_t)size_);
    int my_len = (int)mine.size();
    MPI_Request r;
    check(MPI_Iallgather(&my_len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_, &r), "MPI_Iallgather", what);
    wait(&r, 1, what, comm_);
    std::vector<int> displs((size_t)size_, 0);
    for (int i = 1; i < size_; ++i) displs[i] = displs[i - 1] + lens[i - 1];
    std::string all((size_t)(displs.back() + lens.back()), '\0');
    check(MPI_Iallgatherv(mine.data(), my_len, MPI_CHAR, all.data(), lens.data(), displs.data(),
                          MPI_CHAR, comm_, &r), "MPI_Iallgatherv", what);
    wait(&r, 1, what, comm_);
    std::vector<std::string> out;
    for (int i = 0; i < size_; ++i) out.push_back(all.substr((size_t)displs[i], (size_t)lens[i]));
    return out;
  }

  void barrier(const std::string& what) override {
    MPI_Request r;
    check(MPI_Ibarrier(comm_, &r), "MPI_Ibarrier", what);
    wait(&r, 1, what, comm_);
  }

  [[noreturn]] void abort_job(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; in case it does
  }

 private:
  void host_broadcast(void* data, int64_t bytes, int root, const std::string& what) {
    std::vector<MPI_Request> reqs;
    for (int64_t off = 0; off < bytes; off += kMaxCount) {
      reqs.emplace_back();
      check(MPI_Ibcast(static_cast<char*>(data) + off, (int)std::min(kMaxCount, bytes - off),
                       MPI_BYTE, root, comm_, &reqs.back()), "MPI_Ibcast", what);
    }
    wait(reqs.data(), (int)reqs.size(), what, comm_);
  }

  void device_all_reduce(const std::vector<Buffer>& device, ReduceOp op, const std::string& what) {
    for (const Buffer& b : device)
      MG_CHECK(b.dtype == DType::f32, "all_reduce: device buffers must be f32 (", what, ")");
    if (ensure_nccl(what)) {
      if (!nccl_->all_reduce(device, op, timeout_seconds())) on_timeout(what, "NCCL all-reduce");
      return;
    }
    if (cuda_aware_ && op != ReduceOp::mean) {  // device pointers straight to MPI
      std::vector<Buffer> as_host = device;
      for (Buffer& b : as_host) b.device = Device::cpu();
      all_reduce(as_host, op, what);
      return;
    }
    // Staged: device -> host, reduce on the host, host -> device.
    std::vector<std::vector<float>> stage(device.size());
    std::vector<Buffer> host(device.size());
    for (size_t i = 0; i < device.size(); ++i) {
      stage[i].resize((size_t)device[i].n);
      copy_device_to_host(stage[i].data(), device[i]);
      host[i] = Buffer{stage[i].data(), device[i].n, DType::f32, Device::cpu()};
    }
    all_reduce(host, op, what);
    for (size_t i = 0; i < device.size(); ++i) copy_host_to_device(device[i], stage[i].data());
  }

  // NCCL for device buffers, created collectively at the first device collective.
  bool ensure_nccl(const std::string& what) {
    if (!nccl_compiled()) return false;
    if (!nccl_) {
      std::vector<char> id = rank_ == 0 ? nccl_unique_id() : std::vector<char>(128);
      host_broadcast(id.data(), (int64_t)id.size(), 0, "the NCCL id for " + what);
      nccl_ = make_nccl(id, size_, rank_);
    }
    return true;
  }

  static void scale_host(const Buffer& b, double s) {
    if (b.dtype == DType::f32) {
      float* p = static_cast<float*>(b.data);
      const float sf = (float)s;
      for (int64_t i = 0; i < b.n; ++i) p[i] *= sf;
    } else {
      double* p = static_cast<double*>(b.data);
      for (int64_t i = 0; i < b.n; ++i) p[i] *= s;
    }
  }

  void check(int rc, const char* call, const std::string& what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    std::fprintf(stderr, "mambagrad: %s (host %s): %s failed in %s: %s. Aborting the job.\n",
                 who().c_str(), host_.c_str(), call, what.c_str(), std::string(text, (size_t)len).c_str());
    abort_job(3);
  }

  // Polls until every request completes, or the timeout passes (then on_timeout aborts).
  // Spins for the first 20 ms (a collective progresses only inside MPI calls: yielding
  // between the fragments of a large message would stretch it by a time slice each on a busy
  // machine), then yields the core between polls: a rank that waits long (for a checkpoint
  // being written) must not take the core from the ranks that work.
  void wait(MPI_Request* reqs, int n, const std::string& what, MPI_Comm comm) {
    if (n == 0) return;
    const auto start = Clock::now();
    const auto spin_until = start + std::chrono::milliseconds(20);
    const auto deadline = start + std::chrono::duration<double>(bound());
    bool spinning = true;
    for (int64_t polls = 1;; ++polls) {
      int done = 0;
      int rc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) check(rc, "MPI_Testall", what);
      if (done) return;
      if ((polls & 255) == 0) {
        const auto now = Clock::now();
        spinning = now < spin_until;
        if (now > deadline) on_timeout(what, comm == exit_comm_ ? "exit" : "");
      }
      if (!spinning) sched_yield();
    }
  }

  // Who is missing: every waiting rank tells every other that it is alive and listens for a
  // grace period; the ranks not heard from did not reach `what`. The lowest live rank prints
  // the verdict, then the job is aborted.
  double bound() const { return startup_ ? std::max(timeout_seconds(), 120.0) : timeout_seconds(); }

  [[noreturn]] void on_timeout(const std::string& what, const std::string& kind) {
    const double grace = std::min(10.0, std::max(1.0, timeout_seconds() / 2));
    std::vector<int> heard((size_t)size_, 0), one(1, 1);
    std::vector<MPI_Request> reqs;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      reqs.emplace_back();
      MPI_Irecv(&heard[p], 1, MPI_INT, p, kAliveTag, alive_comm_, &reqs.back());
      MPI_Request s;
      MPI_Isend(one.data(), 1, MPI_INT, p, kAliveTag, alive_comm_, &s);
      MPI_Request_free(&s);
    }
    heard[rank_] = 1;
    const auto until = Clock::now() + std::chrono::duration<double>(grace);
    while (Clock::now() < until) {
      int done = 0;
      MPI_Testall((int)reqs.size(), reqs.data(), &done, MPI_STATUSES_IGNORE);
      if (done) break;
      sched_yield();
    }
    std::string missing, waiting;
    int lowest_live = rank_;
    for (int p = 0; p < size_; ++p) {
      std::string& list = heard[p] ? waiting : missing;
      list += (list.empty() ? "rank " : ", rank ") + std::to_string(p) + " (" +
              (p < (int)peers_.size() ? peers_[p] : std::string("host unknown")) + ")";
      if (heard[p]) lowest_live = std::min(lowest_live, p);
    }
    if (rank_ == lowest_live) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", bound());
      std::string msg;
      if (!missing.empty())
        msg = missing + " did not reach " + what + " within " + secs + " s (MG_DIST_TIMEOUT): it died, "
              "hangs, or is far slower than the others. Waiting: " + waiting + ".";
      else
        msg = std::string("every rank is alive, but ") + what + " did not complete within " + secs +
              " s (MG_DIST_TIMEOUT)" + (kind.empty() ? "" : " [" + kind + "]") +
              "; the ranks may have called different collectives.";
      std::fprintf(stderr, "mambagrad: %s: %s Aborting the job.\n", who().c_str(), msg.c_str());
    } else {
      // The lowest live rank reports and aborts; the others follow only if it does not.
      std::this_thread::sleep_for(std::chrono::duration<double>(grace));
    }
    abort_job(kind == "exit" ? 4 : 3);
  }

  MPI_Comm comm_ = MPI_COMM_NULL, alive_comm_ = MPI_COMM_NULL, exit_comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool cuda_aware_ = false;
  bool startup_ = false;
  std::string backend_, host_;
  std::vector<std::string> peers_;  // "host pid N" of every rank
  std::unique_ptr<DeviceCollectives> nccl_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const LaunchInfo& info) {
  return std::make_unique<MpiCommunicator>(info);
}

}  // namespace mg::dist::detail
