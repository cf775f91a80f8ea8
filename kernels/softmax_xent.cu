// Row-wise softmax + cross-entropy in one kernel; the definition is
// xpnet/ops/reference.py::softmax_xent.  Self-contained for NVRTC (no includes).
//
// One warp per row, WARPS rows per block: lanes stride the row's columns by 32 (coalesced),
// max and sum are warp-shuffle butterflies (every lane ends with the same bits, no shared
// memory, no __syncthreads).  Three reads of the row (max, sum of exp, write dZ) hit L1/L2:
// rows are short (k <= 1024 is the design point; wider rows are still correct, each lane
// just loops longer).  Max-subtraction keeps exp() in range for logits of any magnitude.

typedef long long i64;

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }
__device__ __forceinline__ float lg(float x) { return logf(x); }
__device__ __forceinline__ double lg(double x) { return log(x); }
template <typename T> __device__ __forceinline__ T qnan();
template <> __device__ __forceinline__ float qnan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double qnan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// Z: (m, k) logits; labels: (m,); dZ: (m, k), may be Z; loss_rows: (m,); smoothing s in [0, 1).
// Target row q = (1 - s) onehot(y) + s/k (label smoothing, as torch's CrossEntropyLoss):
// loss_rows[i] = logsumexp(Z_i) - q . Z_i;  dZ_i = (softmax(Z_i) - q) * scale.
// A label outside [0, k) gives a NaN loss (so training stops with DivergedError) and no
// one-hot term, instead of reading out of bounds.
template <typename T, typename L>
__device__ __forceinline__ void softmax_xent_impl(const T* Z, const L* labels, T* dZ, T* loss_rows,
                                                  i64 m, i64 k, T scale, T smoothing) {
    const unsigned FULL = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= m) return;  // uniform per warp: the shuffles below still see all 32 lanes
    const T* z = Z + row * k;
    T* dz = dZ + row * k;

    const i64 y = (i64)labels[row];
    const bool valid = y >= 0 && y < k;
    const T picked = valid ? z[y] : T(0);  // read before any lane overwrites the row (dZ may be Z)

    T mx = z[0];
    for (i64 j = lane; j < k; j += 32) mx = z[j] > mx ? z[j] : mx;
    for (int off = 16; off > 0; off >>= 1) {
        const T o = __shfl_xor_sync(FULL, mx, off);
        mx = o > mx ? o : mx;
    }

    T s = T(0);
    for (i64 j = lane; j < k; j += 32) s += ex(z[j] - mx);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL, s, off);

    // q . (Z_i - max): the picked logit alone without smoothing (the common case, exact).
    const T keep = T(1) - smoothing;
    const T spread = smoothing / (T)k;
    T target = picked - mx;
    if (smoothing != T(0)) {  // uniform per launch: every lane takes the same branch
        T rs = T(0);
        for (i64 j = lane; j < k; j += 32) rs += z[j];
        for (int off = 16; off > 0; off >>= 1) rs += __shfl_xor_sync(FULL, rs, off);
        target = keep * target + spread * (rs - (T)k * mx);
    }
    // Every lane has read `picked` and the whole row; no lane may write before all have (dZ may
    // be Z). A shuffle is not a memory fence, so order the reads before the writes explicitly.
    __syncwarp(FULL);

    const T inv = scale / s;
    const T off_target = scale * spread;
    const T on_target = scale * keep;
    for (i64 j = lane; j < k; j += 32) {
        T d = ex(z[j] - mx) * inv;
        if (smoothing != T(0)) d -= off_target;
        if (j == y) d -= on_target;
        dz[j] = d;
    }
    if (lane == 0) loss_rows[row] = valid ? lg(s) - target : qnan<T>();
}

extern "C" {

__global__ void softmax_xent_f32_i32(const float* Z, const int* labels, float* dZ, float* loss_rows,
                                     i64 m, i64 k, float scale, float smoothing) {
    softmax_xent_impl<float, int>(Z, labels, dZ, loss_rows, m, k, scale, smoothing);
}
__global__ void softmax_xent_f32_i64(const float* Z, const i64* labels, float* dZ, float* loss_rows,
                                     i64 m, i64 k, float scale, float smoothing) {
    softmax_xent_impl<float, i64>(Z, labels, dZ, loss_rows, m, k, scale, smoothing);
}
__global__ void softmax_xent_f64_i32(const double* Z, const int* labels, double* dZ, double* loss_rows,
                                     i64 m, i64 k, double scale, double smoothing) {
    softmax_xent_impl<double, int>(Z, labels, dZ, loss_rows, m, k, scale, smoothing);
}
__global__ void softmax_xent_f64_i64(const double* Z, const i64* labels, double* dZ, double* loss_rows,
                                     i64 m, i64 k, double scale, double smoothing) {
    softmax_xent_impl<double, i64>(Z, labels, dZ, loss_rows, m, k, scale, smoothing);
}

}  // extern "C"
