// train/distributed.h — the processes of a data-parallel run and how they talk: rank, world
// size, all-reduce, broadcast, gather, barrier. docs/distributed.md is the user's guide.
//
// Backends (chosen once per process, from the environment the launcher sets):
//   single process   no launcher (or one that starts a single rank without MPI): rank 0 of 1,
//                    every collective is the identity. distributed() is false and the trainer
//                    skips all data-parallel work, so a program started without mpirun behaves
//                    exactly as before.
//   MPI              started by mpirun/mpiexec/srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
//                    PMIX_RANK is set) in a build with MG_MPI (train/dist/mpi_backend.cpp).
//                    Host buffers go to MPI. Device (CUDA) buffers go to NCCL when the build has
//                    it (MG_NCCL), on the backend's stream; else to MPI directly when it reports
//                    CUDA awareness (sum and max); else they are staged through host memory.
//   MG_DIST=nccl     (single process, a build with NCCL) a 1-rank NCCL communicator for device
//                    buffers, so one GPU exercises the NCCL path; host buffers are the identity.
// A process started by a launcher as one of several ranks in a build WITHOUT MPI stops with an
// error at start: each rank would otherwise train alone and write the same run directory.
//
// Failure (docs/distributed.md): every wait is bounded by MG_DIST_TIMEOUT seconds (default
// 600). A rank that does not reach a collective in time is named: the waiting ranks tell each
// other that they are alive, and the missing ones are those not heard from; then the job is
// aborted (MPI_Abort). A rank that dies is normally noticed first by the launcher (Open MPI
// aborts the job and names the rank). A rank that fails with an error calls abort_job() (the
// programs do, in their error handler) so that the others do not wait for it.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"

namespace mg::dist {

enum class ReduceOp { sum, max, mean };

// One buffer of a collective: n elements of f32, f64 (or i32 for broadcast) in host memory, or
// in device memory when `device` is a CUDA device (f32 only for reductions).
struct Buffer {
  void* data = nullptr;
  int64_t n = 0;
  DType dtype = DType::f32;
  Device device = Device::cpu();
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const { return 0; }  // among the ranks on this machine
  virtual int local_size() const { return 1; }
  // True when a distributed backend runs (MPI, even with one rank; MG_DIST=nccl). False for the
  // plain single process: callers skip their data-parallel work.
  virtual bool distributed() const = 0;
  // "single process", "MPI (Open MPI v4.1.4)", "MPI (Open MPI v4.1.4) + NCCL 2.28.9", ...
  virtual std::string backend() const = 0;

  // Every collective is called by every rank, in the same order. `what` names it in errors
  // ("the gradient all-reduce of step 7").
  // In place over all ranks: sum, max, or mean (sum / size). Buffers are processed as one
  // group (they may overlap in flight), in order; all must be valid until it returns.
  virtual void all_reduce(std::span<const Buffer> buffers, ReduceOp op, const std::string& what) = 0;
  // Root's bytes into every rank's buffer (host or device memory).
  virtual void broadcast(const Buffer& buffer, int root, const std::string& what) = 0;
  // Every rank's string, by rank (any length; host memory).
  virtual std::vector<std::string> all_gather(const std::string& mine, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
  // Ends every rank of the job now with `code` (prints nothing: print the reason first).
  // The single process calls std::exit(code).
  [[noreturn]] virtual void abort_job(int code) = 0;

  // ---- conveniences over the above ---------------------------------------------------------
  void all_reduce(double* data, int64_t n, ReduceOp op, const std::string& what);
  std::string broadcast_string(const std::string& s, int root, const std::string& what);
  // True on every rank when `flag` is true on any.
  bool any(bool flag, const std::string& what);
  // "rank 1 of 3" (with the host when several machines take part).
  std::string who() const;
};

// ---- the process's communicator ------------------------------------------------------------
// Initialised at the first call from the environment (see the header comment); lives until
// the process exits, where the MPI backend waits (bounded) for every rank to finish, then
// calls MPI_Finalize. Throws mg::Error when the environment asks for a backend this build
// lacks.
Communicator& world();
// A single-process communicator that ignores the environment (tests compare against it).
Communicator& single_process();

// For programs, first thing in main: world(), then every rank but 0 sends its stdout to
// /dev/null (only rank 0 prints; set MG_DIST_ALL_RANKS_PRINT=1 to keep them all). stderr
// stays: errors are printed by the rank that has them. Returns world().
Communicator& init_program();

// The programs' error handler calls this after printing the error: with several ranks it
// ends the whole job (the others would wait for this rank until MG_DIST_TIMEOUT); otherwise
// it returns and the program exits as usual.
void abort_job_on_error(int code = 1);

// For one process per GPU: makes GPU (local_rank mod visible GPUs) the current device, which
// the CUDA backend adopts when it initialises (cuda/runtime.h). Call before the first CUDA
// tensor (examples/device_flag.h does). No-op for one local rank or a build without CUDA.
// Returns a description, e.g. "GPU 1 of 8 (NVIDIA H200)", or "" when nothing was selected.
std::string select_local_gpu();

// What select_local_gpu chose ("" before it ran, or in a build without CUDA).
std::string selected_gpu();

// The timeout of every distributed wait in seconds: MG_DIST_TIMEOUT, default 600.
double timeout_seconds();

// Build facts, for logs and tests.
bool mpi_compiled();
bool nccl_compiled();

// ---- backends (train/dist/*.cpp); used by world() -----------------------------------------
namespace detail {
struct LaunchInfo {  // what the launcher's environment says
  bool launched = false;  // a launcher's variables are present
  int size = 1, rank = 0, local_rank = 0, local_size = 1;
  std::string source;  // which variables: "OMPI_COMM_WORLD_*", "PMI_*", "PMIX_RANK"
};
LaunchInfo read_launch_environment();
std::unique_ptr<Communicator> make_mpi_communicator(const LaunchInfo& info);  // MG_MPI builds
// Device-buffer collectives for one rank group, used by the backends (MG_NCCL builds).
class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual std::string name() const = 0;
  // Enqueued on the CUDA backend's stream; returns when done or after timeout_s (false).
  virtual bool all_reduce(std::span<const Buffer> buffers, ReduceOp op, double timeout_s) = 0;
  virtual bool broadcast(const Buffer& buffer, int root, double timeout_s) = 0;
};
// A 128-byte NCCL unique id (made on one rank, sent to the others by the caller).
std::vector<char> nccl_unique_id();
std::unique_ptr<DeviceCollectives> make_nccl(const std::vector<char>& id, int nranks, int rank);
// Staging helpers for device buffers (cuda/ through core's allocator).
void copy_device_to_host(void* host, const Buffer& device_buffer);
void copy_host_to_device(const Buffer& device_buffer, const void* host);
int64_t element_size(DType t);
}  // namespace detail

}  // namespace mg::dist
