// Fused ReLU hot spots of the MLP; the definitions are in xpnet/ops/reference.py.
// Self-contained on purpose: NVRTC (cupy.RawModule) compiles this text as-is, with no
// include path and no host headers.  Kernels are templates over the float type with
// explicit extern "C" wrappers, so PTX entry names are plain (`bias_relu_forward_f32`).

typedef long long i64;

// Z += b (in place), then A = max(Z, 0).  Z, A: (m, n) C-contiguous, b: (n,).
// Flat grid-stride loop: consecutive threads touch consecutive elements (coalesced),
// b[col] comes from L1/L2.  `z < 0 ? 0 : z` keeps NaN, like numpy.maximum.
template <typename T>
__device__ __forceinline__ void bias_relu_forward_impl(T* Z, const T* b, T* A, i64 m, i64 n) {
    const i64 total = m * n;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const T z = Z[i] + b[i % n];
        Z[i] = z;
        A[i] = z < T(0) ? T(0) : z;
    }
}

// dZ = dA * (Z > 0), written as a multiply so NaN/inf in dA and signed zeros match the
// reference bit for bit.  dZ may be dA (each element is read before it is written).
template <typename T>
__device__ __forceinline__ void relu_backward_impl(const T* dA, const T* Z, T* dZ, i64 total) {
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        dZ[i] = dA[i] * (Z[i] > T(0) ? T(1) : T(0));
    }
}

// db[j] = sum_i dZ[i, j].  Block = (32 columns) x (BIAS_ROWS row groups): a warp reads 32
// adjacent columns of one row (coalesced), each thread walks every BIAS_ROWS-th row, then
// the BIAS_ROWS partial sums of a column are added in shared memory in a fixed order
// (deterministic, no atomics).  Accumulates in double: exact enough for float32 too and
// the kernel is memory-bound either way.  Launch: block (32, BIAS_ROWS), grid ceil(n/32).
#ifndef BIAS_ROWS
#error "BIAS_ROWS is passed as -DBIAS_ROWS=... by xpnet/ops/cuda.py (KERNEL_DEFINES), its one source"
#endif
template <typename T>
__device__ __forceinline__ void bias_grad_impl(const T* dZ, T* db, i64 m, i64 n) {
    __shared__ double partial[BIAS_ROWS][32];
    const i64 col = (i64)blockIdx.x * 32 + threadIdx.x;
    double acc = 0.0;
    if (col < n) {
        for (i64 row = threadIdx.y; row < m; row += BIAS_ROWS) {
            acc += (double)dZ[row * n + col];
        }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
        double s = partial[0][threadIdx.x];
        for (int r = 1; r < BIAS_ROWS; ++r) s += partial[r][threadIdx.x];
        db[col] = (T)s;
    }
}

extern "C" {

__global__ void bias_relu_forward_f32(float* Z, const float* b, float* A, i64 m, i64 n) {
    bias_relu_forward_impl<float>(Z, b, A, m, n);
}
__global__ void bias_relu_forward_f64(double* Z, const double* b, double* A, i64 m, i64 n) {
    bias_relu_forward_impl<double>(Z, b, A, m, n);
}

__global__ void relu_backward_f32(const float* dA, const float* Z, float* dZ, i64 total) {
    relu_backward_impl<float>(dA, Z, dZ, total);
}
__global__ void relu_backward_f64(const double* dA, const double* Z, double* dZ, i64 total) {
    relu_backward_impl<double>(dA, Z, dZ, total);
}

__global__ void bias_grad_f32(const float* dZ, float* db, i64 m, i64 n) {
    bias_grad_impl<float>(dZ, db, m, n);
}
__global__ void bias_grad_f64(const double* dZ, double* db, i64 m, i64 n) {
    bias_grad_impl<double>(dZ, db, m, n);
}

}  // extern "C"
