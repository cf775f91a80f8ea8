// Inverted dropout with counter-based random numbers; the definitions are
// xpnet/ops/reference.py::dropout and ::dropout_backward.  Self-contained for NVRTC.
//
// No generator state: element i of layer `layer` at step t is kept when the 24-bit integer
// mix(mix(mix(seed*PHI + t) + layer*PHI) + i*PHI) >> 40 is >= thr = round(rate * 2^24), with
// SplitMix64's finaliser `mix`.  The same masks come out of NumPy, Numba and this kernel, inside
// a captured CUDA graph (t is read from device memory: a new mask every step) and in a resumed
// run.  Flat grid-stride loops, coalesced.

typedef long long i64;
typedef unsigned long long u64;

#define PHI 0x9E3779B97F4A7C15ULL

__device__ __forceinline__ u64 mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// U = keep ? scale : 0 (scale = 1/(1-rate) in T);  D = H * U.  H, D, U: total elements.
template <typename T>
__device__ __forceinline__ void dropout_impl(const T* H, T* D, T* U, i64 total, i64 seed, const int* t, i64 layer,
                                             i64 thr, T scale) {
    const u64 stream = mix(mix((u64)seed * PHI + (u64)(i64)t[0]) + (u64)layer * PHI);
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const u64 bits = mix(stream + (u64)i * PHI) >> 40;
        const T u = bits >= (u64)thr ? scale : T(0);
        U[i] = u;
        D[i] = H[i] * u;
    }
}

// dH = dD * U; dH may be dD.
template <typename T>
__device__ __forceinline__ void dropout_backward_impl(const T* dD, const T* U, T* dH, i64 total) {
    const i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        dH[i] = dD[i] * U[i];
    }
}

extern "C" {

__global__ void dropout_f32(const float* H, float* D, float* U, i64 total, i64 seed, const int* t, i64 layer,
                            i64 thr, float scale) {
    dropout_impl<float>(H, D, U, total, seed, t, layer, thr, scale);
}
__global__ void dropout_f64(const double* H, double* D, double* U, i64 total, i64 seed, const int* t, i64 layer,
                            i64 thr, double scale) {
    dropout_impl<double>(H, D, U, total, seed, t, layer, thr, scale);
}

__global__ void dropout_backward_f32(const float* dD, const float* U, float* dH, i64 total) {
    dropout_backward_impl<float>(dD, U, dH, total);
}
__global__ void dropout_backward_f64(const double* dD, const double* U, double* dH, i64 total) {
    dropout_backward_impl<double>(dD, U, dH, total);
}

}  // extern "C"
