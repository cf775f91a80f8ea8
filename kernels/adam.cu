// Fused Adam over one flat parameter buffer (PyTorch's formulation); the definition is
// xpnet/ops/reference.py::adam_step.  Self-contained for NVRTC (no includes).
//
// One launch per step, grid-stride loop: p, g, m, v are read once and p, m, v written once.
// No FMA contraction (ops/cuda.py compiles with --fmad=false): each product rounds like NumPy's.
// The step count t lives in device memory (int32[1], advanced earlier in the same step by
// step_metrics) and so may the learning rate (a per-step table lrs[t - 1]: a schedule); the
// bias corrections 1 - beta^t are computed here once per block, so one captured CUDA graph
// replays correctly at every step.

typedef long long i64;

__device__ __forceinline__ float root(float x) { return sqrtf(x); }
__device__ __forceinline__ double root(double x) { return sqrt(x); }

template <typename T> __device__ __forceinline__ T qnan();
template <> __device__ __forceinline__ float qnan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double qnan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
// p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps),  bc = 1 - beta^t.
// lr = lrs[min(t, n_lrs) - 1] when n_lrs > 0 (past the table's end its last rate holds), else
// the scalar lr.  t < 1 is refused, where the reference raises: no update (m, v untouched, so
// lrs[-1] is never read), p set to NaN so the epoch's loss check stops the run; built with
// -DXPNET_DEVICE_CHECKS it traps instead.
// Hyperparameters arrive as double: pow() and the bias corrections are done in double
// (once per block, by thread 0, into shared memory) and only then cast to T.
template <typename T>
__device__ __forceinline__ void adam_step_impl(T* p, const T* g, T* m, T* v, const int* t, const double* lrs,
                                               i64 n_lrs, i64 n, double lr, double beta1, double beta2, double eps) {
    __shared__ T lr_t_s, sqrt_bc2_s;
    __shared__ bool valid_s;
    if (threadIdx.x == 0) {
        const i64 ti = (i64)t[0];
        valid_s = ti >= 1;
        if (valid_s) {
            if (n_lrs > 0) lr = lrs[(ti < n_lrs ? ti : n_lrs) - 1];
            const double step = (double)ti;
            const double bc1 = 1.0 - pow(beta1, step);
            const double bc2 = 1.0 - pow(beta2, step);
            lr_t_s = (T)(lr / bc1);
            sqrt_bc2_s = (T)sqrt(bc2);
        }
    }
    __syncthreads();
    const i64 stride = (i64)blockDim.x * gridDim.x;
    if (!valid_s) {
#ifdef XPNET_DEVICE_CHECKS
        __trap();
#endif
        for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) p[i] = qnan<T>();
        return;
    }
    const T lr_t = lr_t_s, sqrt_bc2 = sqrt_bc2_s;
    const T b1 = (T)beta1, c1 = (T)(1.0 - beta1), b2 = (T)beta2, c2 = (T)(1.0 - beta2), e = (T)eps;

    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T gi = g[i];
        const T mi = b1 * m[i] + c1 * gi;
        const T vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        const T denom = root(vi) / sqrt_bc2 + e;
        p[i] = p[i] - lr_t * (mi / denom);
    }
}

extern "C" {

__global__ void adam_step_f32(float* p, const float* g, float* m, float* v, const int* t, const double* lrs,
                              i64 n_lrs, i64 n, double lr, double beta1, double beta2, double eps) {
    adam_step_impl<float>(p, g, m, v, t, lrs, n_lrs, n, lr, beta1, beta2, eps);
}
__global__ void adam_step_f64(double* p, const double* g, double* m, double* v, const int* t, const double* lrs,
                              i64 n_lrs, i64 n, double lr, double beta1, double beta2, double eps) {
    adam_step_impl<double>(p, g, m, v, t, lrs, n_lrs, n, lr, beta1, beta2, eps);
}

}  // extern "C"
