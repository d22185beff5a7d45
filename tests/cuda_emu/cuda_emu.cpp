// cuda_emu.cpp: the runtime of the CUDA emulation (cuda_emu.h): launches, the fiber scheduler
// of a block's threads, barrier and warp-collective checks, guarded buffers and the memory check.
//
// A launch runs its blocks one after another (in the schedule's block order); a block's threads
// are fibers on their own stacks that run until they reach a barrier or a warp collective, so
// the schedule's thread order decides which thread's code between two sync points runs first.
// Failures (a thread that skips a barrier, lanes at different collectives, a deadlock, a
// misaligned 16-byte access, a fault in a guard page) abort the launch with a message naming
// the kernel, the block and the thread; the launch then returns an error, as a GPU would.
//
// Memory check: buffers from emu_alloc lie between PROT_NONE guard pages, one end flush
// against its guard (placement 0: the end, placement 1: the start, up to the 16-byte
// alignment); the few bytes of slack left by alignment are filled with a canary and checked
// after every launch. A fault is mapped back to the buffer and element index it missed. The
// dynamic shared memory of a launch is placed the same way. All shared memory, static and
// dynamic, is filled with 0xFF bytes (NaN in every float type) at the start of every block.
#include "cuda_emu.h"

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace cuda_emu {
namespace detail {

// ------------------------------------------------------------------------------------------
// Context switching: the callee-saved registers on the stack (MXCSR and the x87 control word
// are left alone: nothing here changes rounding modes).

extern "C" void gk_emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.p2align 4
.type gk_emu_switch,@function
gk_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size gk_emu_switch,.-gk_emu_switch
)");

enum class St { Ready, AtBarrier, AtWarp, Done };

struct ThreadState {
  Current cur;
  void* sp = nullptr;
  St st = St::Ready;
  const char* file = nullptr;  // where it waits
  int line = 0;
  const char* what = "";
};

struct WarpSync {
  const char* what = nullptr;
  const char* file = nullptr;
  int line = 0;
  unsigned mask = 0, arrived = 0;
  unsigned gen = 0;
  uint64_t vals[2][32];
  void* mma[32][4];
  MmaFn mma_fn = nullptr;
};

constexpr size_t kStack = 32 * 1024, kPage = 4096;
constexpr int kMaxThreads = 1024;

Current* g_cur = nullptr;
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim, g_grid_dim;

struct Runtime {
  // schedule
  int thread_order = 0, block_order = 0, placement = 0;
  uint64_t seed = 0;
  // the launch in progress
  const LaunchInfo* info = nullptr;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::vector<ThreadState> threads;
  std::vector<WarpSync> warps;
  int nthreads = 0;
  int barrier_count = 0;
  const char* barrier_file = nullptr;
  int barrier_line = 0;
  std::vector<int> order;  // this block's thread order
  std::vector<int> pos_of; // position of each thread in it
  bool greedy = false;     // the schedule's policy (pick_next)
  int pos = 0;             // position in it of the running thread
  int hint = 0;            // greedy: no thread before this position is Ready
  int done = 0;            // threads that have exited
  void* main_sp = nullptr;
  bool failed = false;
  std::string message;      // the last failure, for emu_message()
  cudaError_t last_error = cudaSuccess;
  bool sticky = false;      // a kernel fault: later launches fail too (until emu_reset)
  bool in_kernel = false;
  // fiber stacks (with a guard page below each)
  unsigned char* stacks = nullptr;
  // dynamic shared memory
  unsigned char* smem_map = nullptr;
  size_t smem_map_size = 0;
  unsigned char* smem = nullptr;
  size_t smem_size = 0;
  std::map<const void*, int> max_dynamic_smem;
  uint64_t switches = 0, blocks_run = 0;
};
Runtime rt;

struct Buffer {
  std::string name;
  unsigned char* map;
  size_t map_size;
  unsigned char* data;
  size_t size;
  int elem;
};
std::map<uintptr_t, Buffer> g_buffers;  // by data address
constexpr unsigned char kCanary = 0xCB;

std::string where() {
  char buf[1024];
  if (!rt.info) return "";
  const int n = std::snprintf(buf, sizeof buf, "kernel %s (launched at %s:%d by %s), block (%u,%u,%u)",
                              rt.info->name, rt.info->file, rt.info->line, rt.info->caller, g_block_idx.x,
                              g_block_idx.y, g_block_idx.z);
  if (g_cur && n > 0 && n < (int)sizeof buf)
    std::snprintf(buf + n, sizeof buf - n, ", thread (%u,%u,%u)", g_cur->thread_idx.x, g_cur->thread_idx.y,
                  g_cur->thread_idx.z);
  return buf;
}

// Ends the launch with `msg`: from a fiber, by switching to the scheduler for good.
[[noreturn]] void abort_launch(const std::string& msg, cudaError_t err) {
  rt.failed = true;
  rt.message = msg;
  rt.last_error = err;
  rt.sticky = true;
  ThreadState* self = g_cur ? g_cur->thread : nullptr;
  void* dummy;
  gk_emu_switch(self ? &self->sp : &dummy, rt.main_sp);
  __builtin_unreachable();
}

void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  abort_launch(std::string("cuda_emu: ") + buf + "\n  in " + where(), cudaErrorLaunchFailure);
}

void misaligned16(const void* p, bool write) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "misaligned 16-byte %s at %p (address %% 16 = %u)", write ? "store" : "load", p,
                (unsigned)(reinterpret_cast<uintptr_t>(p) % 16));
  abort_launch(std::string("cuda_emu: ") + buf + "\n  in " + where(), cudaErrorMisalignedAddress);
}

// A waiting thread may run again.
inline void make_ready(int t) {
  rt.threads[t].st = St::Ready;
  const int p = rt.pos_of[t];
  if (p < rt.hint) rt.hint = p;
}

// The next thread to run, or nullptr if none is Ready. Round robin: the first Ready thread after
// the one at position rt.pos of the schedule's order, cyclically (sweeping the order again and
// again: the threads advance together). Greedy: the first Ready thread of the order (the first
// thread, then its warp, runs as far ahead as it can: the widest skew between warps).
ThreadState* pick_next() {
  const int n = rt.nthreads;
  if (rt.greedy) {
    for (int p = rt.hint; p < n; ++p) {
      ThreadState& ts = rt.threads[rt.order[p]];
      if (ts.st == St::Ready) {
        rt.hint = rt.pos = p;
        return &ts;
      }
    }
    rt.hint = n;
    return nullptr;
  }
  for (int step = 1; step <= n; ++step) {
    int p = rt.pos + step;
    if (p >= n) p -= n;
    ThreadState& ts = rt.threads[rt.order[p]];
    if (ts.st == St::Ready) {
      rt.pos = p;
      return &ts;
    }
  }
  return nullptr;
}

// Hands over to the next Ready thread (directly, fiber to fiber), or to the scheduler when
// none is (the block is finished, or deadlocked). The thread resumes when made Ready again.
inline void yield() {
  ThreadState* self = g_cur->thread;
  ++rt.switches;
  ThreadState* next = pick_next();
  if (next == self) return;
  if (!next) {
    gk_emu_switch(&self->sp, rt.main_sp);
    return;
  }
  g_cur = &next->cur;
  gk_emu_switch(&self->sp, next->sp);
}

void check_no_exited(const char* what, const char* file, int line) {
  for (int t = 0; t < rt.nthreads; ++t)
    if (rt.threads[t].st == St::Done)
      fail("divergent %s at %s:%d: thread (%u,%u,%u) of the block has exited without reaching it", what, file, line,
           rt.threads[t].cur.thread_idx.x, rt.threads[t].cur.thread_idx.y, rt.threads[t].cur.thread_idx.z);
}

void syncthreads(const char* file, int line) {
  ThreadState* self = g_cur->thread;
  if (rt.barrier_count == 0) {
    check_no_exited("__syncthreads", file, line);
    rt.barrier_file = file;
    rt.barrier_line = line;
  } else if (rt.barrier_line != line || (rt.barrier_file != file && std::strcmp(rt.barrier_file, file) != 0)) {
    fail("divergent __syncthreads: this thread reached the one at %s:%d while other threads wait at %s:%d", file,
         line, rt.barrier_file, rt.barrier_line);
  }
  // a thread that waits at a warp collective of this thread's warp cannot get here: deadlock
  self->file = file;
  self->line = line;
  self->what = "__syncthreads";
  if (++rt.barrier_count == rt.nthreads) {
    rt.barrier_count = 0;
    for (int t = 0; t < rt.nthreads; ++t)
      if (rt.threads[t].st == St::AtBarrier) make_ready(t);
    make_ready(static_cast<int>(self - rt.threads.data()));
  } else {
    self->st = St::AtBarrier;
  }
  yield();
}

// Arrival of this lane at a warp collective; returns once every lane of the mask has arrived
// (the last one runs `complete`).
template <typename F>
void warp_arrive(unsigned mask, const char* what, const char* file, int line, F&& complete) {
  ThreadState* self = g_cur->thread;
  const int lane = g_cur->lane, warp = g_cur->warp;
  WarpSync& w = rt.warps[warp];
  if (!((mask >> lane) & 1u)) fail("%s at %s:%d: the calling lane %d is not in the mask 0x%08x", what, file, line, lane, mask);
  if (w.arrived == 0) {
    // every lane of the mask must exist and still be running
    for (int l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1u)) continue;
      const int t = warp * 32 + l;
      if (t >= rt.nthreads)
        fail("%s at %s:%d: mask 0x%08x names lane %d, which does not exist (block of %d threads)", what, file, line,
             mask, l, rt.nthreads);
      if (rt.threads[t].st == St::Done)
        fail("divergent %s at %s:%d: lane %d of the mask 0x%08x has exited", what, file, line, l, mask);
    }
    w.what = what;
    w.file = file;
    w.line = line;
    w.mask = mask;
  } else if (w.line != line || w.mask != mask || (w.file != file && std::strcmp(w.file, file) != 0) ||
             (w.what != what && std::strcmp(w.what, what) != 0)) {
    fail("divergent warp: this lane reached %s at %s:%d (mask 0x%08x) while other lanes wait at %s at %s:%d "
         "(mask 0x%08x)", what, file, line, mask, w.what, w.file, w.line, w.mask);
  }
  self->file = file;
  self->line = line;
  self->what = what;
  w.arrived |= 1u << lane;
  if (w.arrived == w.mask) {
    complete(w);
    w.arrived = 0;
    ++w.gen;
    for (int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) make_ready(warp * 32 + l);
  } else {
    self->st = St::AtWarp;
  }
  yield();
}

void syncwarp(unsigned mask, const char* file, int line) {
  warp_arrive(mask, "__syncwarp", file, line, [](WarpSync&) {});
}

uint64_t warp_exchange(unsigned mask, uint64_t payload, int src_lane, const char* what, const char* file, int line) {
  WarpSync& w = rt.warps[g_cur->warp];
  const unsigned slot = w.gen & 1u;
  w.vals[slot][g_cur->lane] = payload;
  warp_arrive(mask, what, file, line, [](WarpSync&) {});
  if (!((mask >> src_lane) & 1u))
    fail("%s at %s:%d: lane %d reads lane %d, which is not in the mask 0x%08x", what, file, line, g_cur->lane,
         src_lane, mask);
  return w.vals[slot][src_lane];
}

void warp_mma(void* d, const void* a, const void* b, const void* c, MmaFn fn, const char* file, int line) {
  WarpSync& w = rt.warps[g_cur->warp];
  const int lane = g_cur->lane;
  w.mma[lane][0] = d;
  w.mma[lane][1] = const_cast<void*>(a);
  w.mma[lane][2] = const_cast<void*>(b);
  w.mma[lane][3] = const_cast<void*>(c);
  if (w.arrived == 0) w.mma_fn = fn;
  else if (w.mma_fn != fn) fail("wmma::mma_sync at %s:%d: lanes of the warp pass different fragment types", file, line);
  warp_arrive(0xffffffffu, "wmma::mma_sync", file, line, [](WarpSync& ws) { ws.mma_fn(ws.mma); });
}

void* dynamic_shared_memory() {
  if (!rt.in_kernel) fail("dynamic shared memory used outside a kernel");
  return rt.smem;
}

cudaError_t set_func_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (value < 0 || value > 232448) {  // sm_90: 227 KiB per block at most
    rt.last_error = cudaErrorInvalidValue;
    return cudaErrorInvalidValue;
  }
  rt.max_dynamic_smem[func] = value;
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------
// Fibers

void fiber_main() {
  rt.body(rt.ctx);
  ThreadState* self = g_cur->thread;
  // an exit while others wait at a barrier or at a collective of this warp can never be met
  if (rt.barrier_count > 0)
    fail("divergent __syncthreads at %s:%d: this thread exited while %d thread(s) wait there", rt.barrier_file,
         rt.barrier_line, rt.barrier_count);
  const WarpSync& w = rt.warps[g_cur->warp];
  if (w.arrived != 0 && ((w.mask >> g_cur->lane) & 1u))
    fail("divergent %s at %s:%d: this lane exited while other lanes of its mask wait there", w.what, w.file, w.line);
  self->st = St::Done;
  ++rt.done;
  yield();  // never resumed
  __builtin_unreachable();
}

// The top of thread t's stack, staggered by t so that the stacks' hot lines do not all fall
// into the same cache sets.
void* fiber_stack_top(int t) { return rt.stacks + (size_t)(t + 1) * (kStack + kPage) - (size_t)(t % 61) * 64; }

void init_fiber(ThreadState& ts, int t) {
  auto* top = static_cast<uint64_t*>(fiber_stack_top(t));
  // gk_emu_switch pops r15, r14, r13, r12, rbx, rbp, then returns into fiber_main with the
  // stack aligned as after a call
  uint64_t* sp = top - 2;
  sp[1] = 0;  // fiber_main's return address: never used
  sp[0] = reinterpret_cast<uint64_t>(&fiber_main);
  sp -= 6;
  for (int i = 0; i < 6; ++i) sp[i] = 0;
  ts.sp = sp;
  ts.st = St::Ready;
}

void ensure_stacks() {
  if (rt.stacks) return;
  const size_t total = (size_t)kMaxThreads * (kStack + kPage);
  void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) { std::perror("cuda_emu: mmap stacks"); std::abort(); }
  rt.stacks = static_cast<unsigned char*>(m);
  for (int t = 0; t < kMaxThreads; ++t) mprotect(rt.stacks + (size_t)t * (kStack + kPage), kPage, PROT_NONE);
}

std::vector<int> order(int n, int kind, uint64_t salt) {
  std::vector<int> o(n);
  for (int i = 0; i < n; ++i) o[i] = i;
  if (kind == 1) std::reverse(o.begin(), o.end());
  else if (kind == 2) {
    std::mt19937_64 g(rt.seed * 0x9E3779B97F4A7C15ull + salt);
    std::shuffle(o.begin(), o.end(), g);
  }
  return o;
}

std::string deadlock_report() {
  std::string s = "cuda_emu: deadlock: no thread of the block can proceed\n  in " + where() + "\n";
  int shown = 0;
  for (int t = 0; t < rt.nthreads && shown < 8; ++t) {
    const ThreadState& ts = rt.threads[t];
    if (ts.st == St::Done) continue;
    char buf[256];
    std::snprintf(buf, sizeof buf, "  thread %d waits at %s at %s:%d\n", t, ts.what, ts.file ? ts.file : "?", ts.line);
    s += buf;
    ++shown;
  }
  return s;
}

void run_block() {
  ++rt.blocks_run;
  rt.barrier_count = 0;
  for (auto& w : rt.warps) { w.arrived = 0; w.gen = 0; }
  for (int t = 0; t < rt.nthreads; ++t) init_fiber(rt.threads[t], t);
  // thread_order 0/1/2: in order, reversed, shuffled, round robin; 3/4/5: the same, greedy
  rt.greedy = rt.thread_order >= 3;
  rt.order = order(rt.nthreads, rt.thread_order % 3,
                   (uint64_t)g_block_idx.x + 65536ull * (g_block_idx.y + 65536ull * g_block_idx.z));
  rt.pos_of.assign(rt.nthreads, 0);
  for (int p = 0; p < rt.nthreads; ++p) rt.pos_of[rt.order[p]] = p;
  rt.hint = 0;
  rt.done = 0;
  // the threads hand over to each other; control comes back here when none can run
  rt.pos = 0;
  ThreadState& first = rt.threads[rt.order[0]];
  g_cur = &first.cur;
  gk_emu_switch(&rt.main_sp, first.sp);
  g_cur = nullptr;
  if (rt.failed) return;
  if (rt.done < rt.nthreads) {
    rt.failed = true;
    rt.message = deadlock_report();
    rt.last_error = cudaErrorLaunchFailure;
    rt.sticky = true;
  }
}

// ------------------------------------------------------------------------------------------
// Memory check

const Buffer* buffer_near(uintptr_t a, long long* index, const char** side) {
  // the buffer whose mapping (guards included) holds a
  for (auto& kv : g_buffers) {
    const Buffer& b = kv.second;
    const uintptr_t m = reinterpret_cast<uintptr_t>(b.map);
    if (a >= m && a < m + b.map_size) {
      const long long off = static_cast<long long>(a - reinterpret_cast<uintptr_t>(b.data));
      *index = off >= 0 ? off / b.elem : -((-off + b.elem - 1) / b.elem);
      *side = off < 0 ? "before the start" : "past the end";
      return &b;
    }
  }
  return nullptr;
}

std::string describe_address(uintptr_t a) {
  char buf[512];
  long long idx;
  const char* side;
  if (const Buffer* b = buffer_near(a, &idx, &side)) {
    std::snprintf(buf, sizeof buf, "element index %lld of buffer '%s' (%zu elements of %d bytes): %s", idx,
                  b->name.c_str(), b->size / b->elem, b->elem, side);
    return buf;
  }
  const uintptr_t s = reinterpret_cast<uintptr_t>(rt.smem), m = reinterpret_cast<uintptr_t>(rt.smem_map);
  if (rt.smem_map && a >= m && a < m + rt.smem_map_size) {
    std::snprintf(buf, sizeof buf, "byte %lld of the dynamic shared memory (%zu bytes declared at the launch): %s",
                  static_cast<long long>(a - s), rt.smem_size, a < s ? "before the start" : "past the end");
    return buf;
  }
  const uintptr_t st = reinterpret_cast<uintptr_t>(rt.stacks);
  if (rt.stacks && a >= st && a < st + (size_t)kMaxThreads * (kStack + kPage))
    return "the guard page of a thread's stack (stack overflow: more than 32 KiB of locals)";
  std::snprintf(buf, sizeof buf, "address %p, in no buffer of the emulator", reinterpret_cast<void*>(a));
  return buf;
}

std::string g_fault;
void fault_landing() { abort_launch(g_fault, cudaErrorIllegalAddress); }

struct sigaction g_old_segv, g_old_bus;
stack_t g_old_altstack;
// The handler runs on a stack of its own: a fault may be a fiber's stack overflowing.
alignas(16) unsigned char g_altstack[64 * 1024];

void on_fault(int sig, siginfo_t* si, void* uc_) {
  if (!rt.in_kernel || !g_cur) {  // not ours: the previous handler
    struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
    sigaction(sig, &old, nullptr);
    return;  // the access faults again, under the old handler
  }
  auto* uc = static_cast<ucontext_t*>(uc_);
  const bool write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
  const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  g_fault = std::string("cuda_emu: out-of-bounds ") + (write ? "write" : "read") + " of " + describe_address(a) +
            "\n  in " + where();
  // continue on the fiber's stack in fault_landing, which ends the launch
  uintptr_t sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
  sp = ((sp - 512) & ~static_cast<uintptr_t>(15)) - 8;
  const uintptr_t st = reinterpret_cast<uintptr_t>(rt.stacks);
  const int t = static_cast<int>(g_cur->thread - rt.threads.data());
  if (sp < st + (size_t)t * (kStack + kPage) + kPage + 4096)  // stack overflow: restart near the top
    sp = reinterpret_cast<uintptr_t>(fiber_stack_top(t)) - 4096 - 8;
  uc->uc_mcontext.gregs[REG_RSP] = static_cast<greg_t>(sp);
  uc->uc_mcontext.gregs[REG_RIP] = reinterpret_cast<greg_t>(&fault_landing);
}

void install_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  stack_t ss;
  ss.ss_sp = g_altstack;
  ss.ss_size = sizeof g_altstack;
  ss.ss_flags = 0;
  sigaltstack(&ss, &g_old_altstack);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}
void restore_handlers() {
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  sigaltstack(&g_old_altstack, nullptr);
}

void fill_canary(unsigned char* from, unsigned char* to) {
  if (to > from) std::memset(from, kCanary, to - from);
}
// The canary bytes between a region and its guard pages, after a launch.
bool canary_intact(const unsigned char* from, const unsigned char* to, const unsigned char** bad) {
  for (const unsigned char* p = from; p < to; ++p)
    if (*p != kCanary) { *bad = p; return false; }
  return true;
}

void check_canaries() {
  for (auto& kv : g_buffers) {
    const Buffer& b = kv.second;
    const unsigned char* bad;
    const unsigned char* lo = b.map + kPage;
    const unsigned char* hi = b.map + b.map_size - kPage;
    if (!canary_intact(lo, b.data, &bad) || !canary_intact(b.data + b.size, hi, &bad)) {
      rt.failed = true;
      rt.message = std::string("cuda_emu: out-of-bounds write of ") + describe_address(reinterpret_cast<uintptr_t>(bad)) +
                   " (found after " + where() + " had finished: a canary byte was overwritten)";
      rt.last_error = cudaErrorIllegalAddress;
      rt.sticky = true;
      return;
    }
  }
}

// The dynamic shared memory of a launch: poisoned with 0xFF bytes (NaN in every float type)
// at the start of each block, so a read of what no thread wrote shows in the results.
void place_smem(size_t size) {
  const size_t need = ((size + 127) & ~size_t(127)) + 2 * kPage + kPage;
  if (rt.smem_map_size < need) {
    if (rt.smem_map) munmap(rt.smem_map, rt.smem_map_size);
    rt.smem_map_size = std::max(need, size_t(256 * 1024));
    rt.smem_map = static_cast<unsigned char*>(
        mmap(nullptr, rt.smem_map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    mprotect(rt.smem_map, kPage, PROT_NONE);
    mprotect(rt.smem_map + rt.smem_map_size - kPage, kPage, PROT_NONE);
  }
  unsigned char* lo = rt.smem_map + kPage;
  unsigned char* hi = rt.smem_map + rt.smem_map_size - kPage;
  rt.smem = rt.placement == 1 ? lo : hi - ((size + 127) & ~size_t(127));
  rt.smem_size = size;
}

// The static __shared__ variables of the library (the build puts them in this section).
extern "C" unsigned char __start_gk_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_gk_emu_shared[] __attribute__((weak));

void poison_static_smem() {
  if (__start_gk_emu_shared && __stop_gk_emu_shared > __start_gk_emu_shared)
    std::memset(__start_gk_emu_shared, 0xFF, __stop_gk_emu_shared - __start_gk_emu_shared);
}

void poison_smem() {
  unsigned char* lo = rt.smem_map + kPage;
  unsigned char* hi = rt.smem_map + rt.smem_map_size - kPage;
  fill_canary(lo, rt.smem);
  std::memset(rt.smem, 0xFF, rt.smem_size);
  fill_canary(rt.smem + rt.smem_size, hi);
}

bool smem_canaries_intact() {
  const unsigned char* bad;
  const unsigned char* lo = rt.smem_map + kPage;
  const unsigned char* hi = rt.smem_map + rt.smem_map_size - kPage;
  if (canary_intact(lo, rt.smem, &bad) && canary_intact(rt.smem + rt.smem_size, hi, &bad)) return true;
  rt.failed = true;
  rt.message = std::string("cuda_emu: out-of-bounds write of ") + describe_address(reinterpret_cast<uintptr_t>(bad)) +
               " (found after the block finished: a canary byte was overwritten)\n  in " + where();
  rt.last_error = cudaErrorIllegalAddress;
  rt.sticky = true;
  return false;
}

void config_error(const char* msg) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "cuda_emu: launch of %s at %s:%d: %s", rt.info->name, rt.info->file, rt.info->line, msg);
  rt.message = buf;
  rt.last_error = cudaErrorInvalidConfiguration;
}

void launch(const LaunchInfo& info, void (*body)(void*), void* ctx) {
  if (rt.sticky) return;  // a fault earlier in this call: the context is dead, as on a GPU
  rt.info = &info;
  const dim3 g = info.grid, b = info.block;
  const uint64_t nthreads = (uint64_t)b.x * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || nthreads == 0) return config_error("a grid or block dimension is 0");
  if (nthreads > 1024 || b.z > 64) return config_error("more than 1024 threads per block");
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535) return config_error("grid dimension out of range");
  if (nthreads % 32 != 0) return config_error("block size not a multiple of 32 (the emulator needs whole warps)");
  if (info.smem > 48 * 1024) {
    auto it = rt.max_dynamic_smem.find(info.func);
    if (it == rt.max_dynamic_smem.end() || (size_t)it->second < info.smem)
      return config_error("more than 48 KiB of dynamic shared memory without "
                          "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)");
  }
  ensure_stacks();
  rt.body = body;
  rt.ctx = ctx;
  rt.nthreads = static_cast<int>(nthreads);
  rt.threads.assign(rt.nthreads, ThreadState{});
  rt.warps.assign((rt.nthreads + 31) / 32, WarpSync{});
  for (int t = 0; t < rt.nthreads; ++t) {
    ThreadState& ts = rt.threads[t];
    ts.cur.thread_idx = uint3{static_cast<unsigned>(t % b.x), static_cast<unsigned>((t / b.x) % b.y),
                              static_cast<unsigned>(t / (b.x * b.y))};
    ts.cur.lane = t % 32;
    ts.cur.warp = t / 32;
    ts.cur.thread = &ts;
  }
  g_block_dim = b;
  g_grid_dim = g;
  place_smem(info.smem);
  rt.failed = false;
  const uint64_t nblocks = (uint64_t)g.x * g.y * g.z;
  std::vector<int> bo;
  if (nblocks <= (1u << 24)) bo = order(static_cast<int>(nblocks), rt.block_order, 0x5eed);
  install_handlers();
  rt.in_kernel = true;
  for (uint64_t i = 0; i < nblocks && !rt.failed; ++i) {
    const uint64_t blk = bo.empty() ? i : (uint64_t)bo[i];
    g_block_idx = uint3{static_cast<unsigned>(blk % g.x), static_cast<unsigned>((blk / g.x) % g.y),
                        static_cast<unsigned>(blk / ((uint64_t)g.x * g.y))};
    poison_static_smem();
    if (info.smem) poison_smem();
    run_block();
    if (!rt.failed && info.smem) smem_canaries_intact();
  }
  rt.in_kernel = false;
  restore_handlers();
  if (!rt.failed) check_canaries();
  rt.info = rt.failed ? rt.info : nullptr;
}

}  // namespace detail
}  // namespace cuda_emu

using namespace cuda_emu::detail;

cudaError_t cudaGetLastError() {
  const cudaError_t e = rt.last_error;
  if (!rt.sticky) rt.last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return rt.last_error; }
const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
  }
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin) return cudaErrorInvalidValue;
  *value = 232448;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return rt.sticky ? rt.last_error : cudaSuccess; }

// ------------------------------------------------------------------------------------------
// The C interface the Python side (tests/cuda_emu/__init__.py) calls through ctypes.

extern "C" {

// Schedule of the following launches: thread order 0 in order, 1 reversed, 2 shuffled with
// `seed`, each run round robin, and 3, 4, 5 the same orders run greedily (pick_next); block
// order 0 in order, 1 reversed, 2 shuffled; placement 0 puts buffers and shared memory flush
// against the guard page after them, 1 against the one before them.
GK_EMU_API void emu_set_schedule(int thread_order, int block_order, uint64_t seed, int placement) {
  rt.thread_order = thread_order;
  rt.block_order = block_order;
  rt.seed = seed;
  rt.placement = placement;
}

// Forgets the last error and message (a new call of an op: a fresh context).
GK_EMU_API void emu_reset() {
  rt.last_error = cudaSuccess;
  rt.sticky = false;
  rt.failed = false;
  rt.message.clear();
  rt.info = nullptr;
}

GK_EMU_API const char* emu_message() { return rt.message.c_str(); }
GK_EMU_API int emu_last_error() { return rt.last_error; }
GK_EMU_API uint64_t emu_switches() { return rt.switches; }

// nbytes in a guarded mapping; the data address is congruent to `misalign` modulo 16 and lies
// as close as possible to the guard page after it (placement 0) or before it (placement 1).
GK_EMU_API void* emu_alloc(size_t nbytes, size_t misalign, const char* name, int elem_size) {
  misalign %= 16;
  const size_t body = ((nbytes + misalign + 15) / 16 * 16 + 16 + kPage - 1) / kPage * kPage;
  const size_t map_size = body + 2 * kPage;
  void* m = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  auto* map = static_cast<unsigned char*>(m);
  mprotect(map, kPage, PROT_NONE);
  mprotect(map + map_size - kPage, kPage, PROT_NONE);
  unsigned char* lo = map + kPage;
  unsigned char* hi = map + map_size - kPage;
  unsigned char* data;
  if (rt.placement == 1) {
    data = lo + misalign;
  } else {
    uintptr_t d = reinterpret_cast<uintptr_t>(hi) - nbytes;
    d = d - ((d - misalign) % 16);  // round down to misalign mod 16
    data = reinterpret_cast<unsigned char*>(d);
  }
  fill_canary(lo, hi);
  g_buffers[reinterpret_cast<uintptr_t>(data)] =
      Buffer{name ? name : "?", map, map_size, data, nbytes, elem_size > 0 ? elem_size : 1};
  return data;
}

GK_EMU_API void emu_free(void* data) {
  auto it = g_buffers.find(reinterpret_cast<uintptr_t>(data));
  if (it == g_buffers.end()) return;
  munmap(it->second.map, it->second.map_size);
  g_buffers.erase(it);
}

}  // extern "C"

extern "C" {
// The emulator's 16-bit conversions, for the tests to hold against torch's: kind 0 __half,
// 1 __nv_bfloat16.
GK_EMU_API void emu_narrow(int kind, const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = kind == 0 ? cuda_emu::detail::float_to_half_bits(in[i]) : cuda_emu::detail::float_to_bf16_bits(in[i]);
}
GK_EMU_API void emu_widen(int kind, const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = kind == 0 ? cuda_emu::detail::half_bits_to_float(in[i]) : cuda_emu::detail::bf16_bits_to_float(in[i]);
}
}
