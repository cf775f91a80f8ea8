// A small CUDA execution-model emulator, so CI (no GPU) can run the real kernels/*.cu.
//
// The .cu file is compiled by g++ as C++ after this header. Each thread of a block is a
// coroutine (ucontext) with its own stack; the scheduler runs every runnable thread until it
// finishes or reaches a barrier (__syncthreads, or the exchange in a warp shuffle), then
// releases the barrier once every thread that must take part has arrived. Blocks run one
// after another, so __shared__ becomes a function-local static and atomics are plain adds.
//
// Strict where real hardware is undefined: a shuffle whose mask names a lane that exited
// or that does not exist, a __syncthreads that not every thread of the block reaches, and
// threads of one warp waiting at different barriers are errors, not hangs. Threads run in
// lane order or, with emu_set_reverse(1), in reverse order between barriers: a kernel whose
// result changes with that order has a race.
//
// Not emulated: memory-model subtleties beyond barrier ordering, concurrency between
// blocks, warp-synchronous code without *_sync intrinsics, and CUDA's own math library
// (glibc's expf/logf differ from CUDA's by a few ulp).

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
typedef dim3 uint3;

namespace emu {

enum State { RUNNABLE, WAIT_BLOCK, WAIT_WARP, DONE };

struct Thread {
    uint3 tid;
    int linear = 0;
    State state = RUNNABLE;
    unsigned warp_mask = 0;
    ucontext_t ctx;
    char* stack = nullptr;
};

constexpr size_t STACK_BYTES = 64 * 1024;

// Thread stacks, reused by every launch (allocating and zeroing 256 x 64 KiB per launch
// would cost more than the kernels).
inline char* stack_for(size_t i) {
    static std::vector<std::unique_ptr<char[]>> pool;
    while (pool.size() <= i) pool.emplace_back(new char[STACK_BYTES]);
    return pool[i].get();
}

struct Launch {
    dim3 grid, block;
    uint3 block_idx;
    std::vector<Thread> threads;
    Thread* current = nullptr;
    ucontext_t scheduler;
    const std::function<void()>* body = nullptr;
    std::string error;
    // One 8-byte exchange slot per thread for warp shuffles.
    std::vector<uint64_t> slots;
};

inline Launch* active = nullptr;
inline bool reverse_order = false;
inline long long switches = 0;

inline void yield_to_scheduler() {
    Thread* t = active->current;
    ++switches;
    swapcontext(&t->ctx, &active->scheduler);
}

[[noreturn]] inline void fail(const std::string& why) {
    if (active->error.empty()) active->error = why;
    active->current->state = DONE;
    swapcontext(&active->current->ctx, &active->scheduler);
    __builtin_unreachable();
}

inline void thread_entry() {
    (*active->body)();
    active->current->state = DONE;
    // returning resumes uc_link (the scheduler)
}

inline void block_barrier() {
    active->current->state = WAIT_BLOCK;
    yield_to_scheduler();
}

inline void warp_barrier(unsigned mask) {
    active->current->state = WAIT_WARP;
    active->current->warp_mask = mask;
    yield_to_scheduler();
}

inline std::string where(const Thread& t) {
    const Launch& L = *active;
    return "block (" + std::to_string(L.block_idx.x) + "," + std::to_string(L.block_idx.y) + "," +
           std::to_string(L.block_idx.z) + ") thread " + std::to_string(t.linear);
}

// After a pass in which no thread is runnable: release a complete warp barrier, else the
// block barrier, else report why nothing can move. Returns false when the block is done.
inline bool release_barriers() {
    Launch& L = *active;
    const int n = (int)L.threads.size();
    bool any_live = false;
    for (auto& t : L.threads) any_live |= t.state != DONE;
    if (!any_live) return false;

    bool released = false;
    for (int w0 = 0; w0 < n; w0 += 32) {
        unsigned mask = 0;
        bool waiting = false;
        for (int l = 0; l < 32 && w0 + l < n; ++l) {
            const Thread& t = L.threads[w0 + l];
            if (t.state == WAIT_WARP) {
                if (waiting && t.warp_mask != mask) {
                    L.error = "lanes of one warp use different shuffle masks at " + where(t);
                    return false;
                }
                mask = t.warp_mask;
                waiting = true;
            }
        }
        if (!waiting) continue;
        bool complete = true;
        for (int l = 0; l < 32; ++l) {
            if (!(mask >> l & 1u)) continue;
            if (w0 + l >= n) {
                L.error = "shuffle mask names lane " + std::to_string(l) + ", which does not exist in a block of " +
                          std::to_string(n) + " threads";
                return false;
            }
            const Thread& t = L.threads[w0 + l];
            if (t.state == DONE) {
                L.error = "shuffle mask names lane " + std::to_string(l) + " of warp " + std::to_string(w0 / 32) +
                          ", which has exited (" + where(t) + ")";
                return false;
            }
            if (t.state != WAIT_WARP) complete = false;
        }
        if (complete) {
            for (int l = 0; l < 32 && w0 + l < n; ++l)
                if (L.threads[w0 + l].state == WAIT_WARP) L.threads[w0 + l].state = RUNNABLE;
            released = true;
        }
    }
    if (released) return true;

    bool all_at_block = true;
    const Thread* exited = nullptr;
    for (auto& t : L.threads) {
        if (t.state != DONE && t.state != WAIT_BLOCK) all_at_block = false;
        if (t.state == DONE && !exited) exited = &t;
    }
    if (all_at_block && exited) {
        // Undefined in CUDA (a __syncthreads in divergent code); real GPUs may hang or go on.
        L.error = "__syncthreads that " + where(*exited) + " never reaches (it exited first)";
        return false;
    }
    if (all_at_block) {
        for (auto& t : L.threads)
            if (t.state == WAIT_BLOCK) t.state = RUNNABLE;
        return true;
    }
    for (auto& t : L.threads) {
        if (t.state == WAIT_WARP) {
            L.error = "deadlock: " + where(t) + " waits in a warp shuffle that its warp never completes";
            return false;
        }
    }
    L.error = "deadlock: __syncthreads not reached by every live thread of the block";
    return false;
}

inline void run_block() {
    Launch& L = *active;
    const int n = (int)L.threads.size();
    for (int i = 0; i < n; ++i) {
        Thread& t = L.threads[i];
        t.state = RUNNABLE;
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = t.stack;
        t.ctx.uc_stack.ss_size = STACK_BYTES;
        t.ctx.uc_link = &L.scheduler;
        makecontext(&t.ctx, (void (*)())thread_entry, 0);
    }
    for (;;) {
        bool ran = true;
        while (ran) {
            ran = false;
            for (int k = 0; k < n; ++k) {
                const int i = reverse_order ? n - 1 - k : k;
                Thread& t = L.threads[i];
                if (t.state != RUNNABLE) continue;
                L.current = &t;
                ++switches;
                swapcontext(&L.scheduler, &t.ctx);
                if (!L.error.empty()) return;
                ran = true;
            }
        }
        if (!release_barriers()) return;
    }
}

// Runs `body` for every thread of the grid. Returns "" or what went wrong.
inline std::string launch(const unsigned* dims, const std::function<void()>& body) {
    Launch L;
    L.grid = {dims[0], dims[1], dims[2]};
    L.block = {dims[3], dims[4], dims[5]};
    const long long nthreads = (long long)L.block.x * L.block.y * L.block.z;
    if (nthreads <= 0 || nthreads > 1024) return "block of " + std::to_string(nthreads) + " threads (CUDA allows 1..1024)";
    if (L.grid.x == 0 || L.grid.y == 0 || L.grid.z == 0) return "empty grid";
    if (L.grid.y > 65535 || L.grid.z > 65535) return "grid y/z above 65535";
    L.body = &body;
    L.threads.resize(nthreads);
    L.slots.assign(nthreads, 0);
    for (long long i = 0; i < nthreads; ++i) {
        Thread& t = L.threads[i];
        t.linear = (int)i;
        t.tid.x = (unsigned)(i % L.block.x);
        t.tid.y = (unsigned)(i / L.block.x % L.block.y);
        t.tid.z = (unsigned)(i / ((long long)L.block.x * L.block.y));
        t.stack = stack_for((size_t)i);
    }
    Launch* saved = active;
    active = &L;
    for (unsigned bz = 0; bz < L.grid.z && L.error.empty(); ++bz)
        for (unsigned by = 0; by < L.grid.y && L.error.empty(); ++by)
            for (unsigned bx = 0; bx < L.grid.x && L.error.empty(); ++bx) {
                L.block_idx = {bx, by, bz};
                run_block();
            }
    active = saved;
    return L.error;
}

template <typename T>
inline T shfl_xor(unsigned mask, T value, int lane_mask, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    Launch& L = *active;
    Thread* t = L.current;
    const int lane = t->linear & 31;
    if (!(mask >> lane & 1u)) fail("shuffle by a lane not in its own mask at " + where(*t));
    if (width <= 0 || width > 32 || (width & (width - 1))) fail("shuffle width must be a power of two <= 32");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    L.slots[t->linear] = bits;
    warp_barrier(mask);  // every lane has published its value
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside its segment: own value
    bits = L.slots[(t->linear & ~31) + src];
    warp_barrier(mask);  // every lane has read before anyone publishes again
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

}  // namespace emu

#define threadIdx (emu::active->current->tid)
#define blockIdx (emu::active->block_idx)
#define blockDim (emu::active->block)
#define gridDim (emu::active->grid)
#define warpSize 32

inline void __syncthreads() { emu::block_barrier(); }

// A warp barrier over the lanes of `mask` (all 32 by default): every named lane must reach it,
// as for a shuffle (a lane that exited or does not exist is an error).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (!(mask >> (emu::active->current->linear & 31) & 1u)) emu::fail("__syncwarp by a lane not in its own mask at " + emu::where(*emu::active->current));
    emu::warp_barrier(mask);
}

// Stops the launch with an error (on a GPU: a sticky "unspecified launch failure").
[[noreturn]] inline void __trap() { emu::fail("__trap() at " + emu::where(*emu::active->current)); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    return emu::shfl_xor(mask, value, lane_mask, width);
}

template <typename T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;  // blocks run one at a time: a plain add is atomic here
    *address = old + value;
    return old;
}

// Round-to-nearest multiplies. The emulator compiles with -ffp-contract=off, as ops/cuda.py has
// NVRTC compile with --fmad=false: a plain a*b+c is never fused into an FMA on either.
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __int_as_float(int x) {
    float f;
    std::memcpy(&f, &x, sizeof f);
    return f;
}
inline double __longlong_as_double(long long x) {
    double d;
    std::memcpy(&d, &x, sizeof d);
    return d;
}
using std::exp;
using std::log;
using std::pow;
using std::sqrt;
