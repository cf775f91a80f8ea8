// The training step's small kernels (xpnet/ops/reference.py defines each): the batch
// gather, the output bias, the step's metrics and L2.  Self-contained for NVRTC.
//
// Everything that changes from step to step lives in device memory, so one captured CUDA
// graph serves every step: the step counter t (int32[1], advanced by step_metrics) and its
// value t0 at the epoch's first batch give the batch offset (t - t0) * batch_size; the
// epoch's loss / correct-count accumulators are read by the host once per epoch.

typedef long long i64;


template <typename T> __device__ __forceinline__ T qnan();
template <> __device__ __forceinline__ float qnan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double qnan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// A device-side refusal: built with -DXPNET_DEVICE_CHECKS (XPNET_CUDA_DEVICE_CHECKS=1, for
// compute-sanitizer runs) it traps, a sticky launch failure the host sees at its next sync;
// otherwise the caller poisons its output with NaN, which the epoch's loss check turns into
// a DivergedError. Never an out-of-bounds access either way.
__device__ __forceinline__ void refuse() {
#ifdef XPNET_DEVICE_CHECKS
    __trap();
#endif
}

// Xb[r, :] = X[perm[offset + r], :] and yb[r] = y[perm[offset + r]] for r < bs, with
// offset = (t - t0) * batch_size.  X: (n, nf) C-contiguous; perm: (n,) int64.
// Flat grid-stride loop over the batch: consecutive threads copy consecutive features of
// one row (coalesced reads and writes); the thread holding feature 0 also copies the label.
// Bounds, where the reference raises: an offset with [offset, offset + bs) outside [0, n)
// (a wrong t or t0, e.g. a replay past the epoch's end) refuses the whole batch, and a perm
// entry outside [0, n) its row: those rows become NaN with label -1, nothing is read.
template <typename T>
__device__ __forceinline__ void gather_batch_impl(const T* X, const int* y, const i64* perm, i64 n, const int* t,
                                                  const int* t0, i64 batch_size, T* Xb, int* yb, i64 bs, i64 nf) {
    const i64 start = ((i64)t[0] - (i64)t0[0]) * batch_size;
    const bool in_range = start >= 0 && start <= n - bs;
    const i64 total = bs * nf;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const i64 r = i / nf;
        const i64 j = i - r * nf;
        const i64 src = in_range ? perm[start + r] : -1;
        if (src < 0 || src >= n) {
            refuse();
            Xb[i] = qnan<T>();
            if (j == 0) yb[r] = -1;
            continue;
        }
        Xb[i] = X[src * nf + j];
        if (j == 0) yb[r] = y[src];
    }
}

// Z += b row-wise (the output layer's bias; hidden layers use bias_relu_forward).
template <typename T>
__device__ __forceinline__ void bias_add_impl(T* Z, const T* b, i64 m, i64 n) {
    const i64 total = m * n;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        Z[i] = Z[i] + b[i % n];
    }
}

// loss_acc[0] += sum(loss_rows) (in double); correct_acc[0] += #{r : argmax(Z_r) == labels[r]};
// t[0] += 1.  The step's one single-block kernel, so the counter can be advanced here without
// a race (every earlier kernel of the step has read it; adam_step, later, reads the new value).
// Z must still hold the logits (softmax_xent writes dZ into a separate buffer in the graph
// step).  argmax takes the first maximum and treats NaN as the maximum, like cupy.argmax.
// ONE block of METRICS_BLOCK threads (a power of two): a fixed-order tree reduction in
// shared memory, so the sums are deterministic (no atomics).  Rows are short (k classes).
#ifndef METRICS_BLOCK
#error "METRICS_BLOCK is passed as -DMETRICS_BLOCK=... by xpnet/ops/cuda.py (KERNEL_DEFINES), its one source"
#endif
static_assert(METRICS_BLOCK > 0 && (METRICS_BLOCK & (METRICS_BLOCK - 1)) == 0, "METRICS_BLOCK: a power of two");
template <typename T>
__device__ __forceinline__ void step_metrics_impl(const T* Z, const int* labels, const T* loss_rows, i64 m, i64 k,
                                                  double* loss_acc, i64* correct_acc, int* t) {
    __shared__ double s_loss[METRICS_BLOCK];
    __shared__ i64 s_ok[METRICS_BLOCK];
    const int tid = threadIdx.x;
    double loss = 0.0;
    i64 ok = 0;
    for (i64 r = tid; r < m; r += METRICS_BLOCK) {
        const T* z = Z + r * k;
        i64 best = 0;
        T bv = z[0];
        for (i64 j = 1; j < k; ++j) {
            const T zj = z[j];
            if (!(bv != bv) && (zj > bv || zj != zj)) {  // bv NaN: keep it; zj NaN: take it
                bv = zj;
                best = j;
            }
        }
        ok += (best == (i64)labels[r]) ? 1 : 0;
        loss += (double)loss_rows[r];
    }
    s_loss[tid] = loss;
    s_ok[tid] = ok;
    __syncthreads();
    for (int s = METRICS_BLOCK / 2; s > 0; s >>= 1) {
        if (tid < s) {
            s_loss[tid] += s_loss[tid + s];
            s_ok[tid] += s_ok[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) {
        loss_acc[0] += s_loss[0];
        correct_acc[0] += s_ok[0];
        t[0] += 1;
    }
}

// L2 weight decay of one layer: dW += coef * W (coef = l2 / m, cast to T first, like
// `dW += (l2 / m) * W` in xpnet/ops/reference.py), and loss_acc[0] += loss_coef * sum(W^2)
// (loss_coef = l2 / 2: the per-step contribution m * l2/(2m) * ||W||^2 to the epoch's loss
// sum).  The sum of squares is reduced per block in shared memory, then added with one
// double atomicAdd per block: the reported loss may differ in the last bits from run to run,
// the weights never do.  Launch with L2_BLOCK threads per block.
#ifndef L2_BLOCK
#error "L2_BLOCK is passed as -DL2_BLOCK=... by xpnet/ops/cuda.py (KERNEL_DEFINES), its one source"
#endif
static_assert(L2_BLOCK > 0 && (L2_BLOCK & (L2_BLOCK - 1)) == 0, "L2_BLOCK: a power of two");
template <typename T>
__device__ __forceinline__ void l2_grad_impl(T* dW, const T* W, i64 n, double coef, double* loss_acc,
                                             double loss_coef) {
    __shared__ double part[L2_BLOCK];
    const T c = (T)coef;
    double acc = 0.0;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T w = W[i];
        dW[i] = dW[i] + c * w;
        acc += (double)w * (double)w;
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = L2_BLOCK / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(loss_acc, loss_coef * part[0]);
}

extern "C" {

__global__ void gather_batch_f32(const float* X, const int* y, const i64* perm, i64 n, const int* t, const int* t0,
                                 i64 batch_size, float* Xb, int* yb, i64 bs, i64 nf) {
    gather_batch_impl<float>(X, y, perm, n, t, t0, batch_size, Xb, yb, bs, nf);
}
__global__ void gather_batch_f64(const double* X, const int* y, const i64* perm, i64 n, const int* t, const int* t0,
                                 i64 batch_size, double* Xb, int* yb, i64 bs, i64 nf) {
    gather_batch_impl<double>(X, y, perm, n, t, t0, batch_size, Xb, yb, bs, nf);
}

__global__ void bias_add_f32(float* Z, const float* b, i64 m, i64 n) { bias_add_impl<float>(Z, b, m, n); }
__global__ void bias_add_f64(double* Z, const double* b, i64 m, i64 n) { bias_add_impl<double>(Z, b, m, n); }

__global__ void step_metrics_f32(const float* Z, const int* labels, const float* loss_rows, i64 m, i64 k,
                                 double* loss_acc, i64* correct_acc, int* t) {
    step_metrics_impl<float>(Z, labels, loss_rows, m, k, loss_acc, correct_acc, t);
}
__global__ void step_metrics_f64(const double* Z, const int* labels, const double* loss_rows, i64 m, i64 k,
                                 double* loss_acc, i64* correct_acc, int* t) {
    step_metrics_impl<double>(Z, labels, loss_rows, m, k, loss_acc, correct_acc, t);
}

__global__ void l2_grad_f32(float* dW, const float* W, i64 n, double coef, double* loss_acc, double loss_coef) {
    l2_grad_impl<float>(dW, W, n, coef, loss_acc, loss_coef);
}
__global__ void l2_grad_f64(double* dW, const double* W, i64 n, double coef, double* loss_acc, double loss_coef) {
    l2_grad_impl<double>(dW, W, n, coef, loss_acc, loss_coef);
}

}  // extern "C"
