// Per-sample conditioning broadcast over tokens, for (N, L, D) tokens and (N, D) per-sample
// vectors: adaLN modulation, the gated residual, a per-sample scaling (their input gradients),
// and sums over the middle axis of (outer, middle, inner) data (their per-sample gradients).
#include "common.cuh"

// The (N, D) index of token element `index` of (N, L, D) data.
__device__ __forceinline__ size_t per_sample_index(size_t index, size_t tokens, size_t width) {
    return index / (tokens * width) * width + index % width;
}

// y = x · (1 + scale) + shift.
template <typename T>
__device__ __forceinline__ void modulate(const T* x, const T* shift, const T* scale, T* y, size_t total,
                                         size_t tokens, size_t width) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        const size_t s = per_sample_index(i, tokens, width);
        store(y, i, load(x, i) * (1.0f + load(scale, s)) + load(shift, s));
    }
}

// y = x + h · gate.
template <typename T>
__device__ __forceinline__ void gated_residual(const T* x, const T* h, const T* gate, T* y, size_t total,
                                               size_t tokens, size_t width) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        store(y, i, load(x, i) + load(h, i) * load(gate, per_sample_index(i, tokens, width)));
    }
}

// y = x · (factor + offset).
template <typename T>
__device__ __forceinline__ void scale_tokens(const T* x, const T* factor, T* y, float offset, size_t total,
                                             size_t tokens, size_t width) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        store(y, i, load(x, i) * (load(factor, per_sample_index(i, tokens, width)) + offset));
    }
}

#define SUM_COLUMNS 32
#define SUM_SPLIT 8

// out[o, i] = Σ_m a[o, m, i] (· b[o, m, i] when `b` is given). Blocks of (32, 8) threads, a grid
// of (⌈inner / 32⌉, outer): the 8 rows of threads share the middle axis, then add up.
template <typename T, bool PRODUCT>
__device__ __forceinline__ void sum_middle(const T* a, const T* b, T* out, int middle, int inner) {
    __shared__ float partial[SUM_SPLIT][SUM_COLUMNS];
    const int column = blockIdx.x * SUM_COLUMNS + threadIdx.x;
    const size_t outer = blockIdx.y;
    float sum = 0.0f;
    if (column < inner) {
        for (int m = threadIdx.y; m < middle; m += SUM_SPLIT) {
            const size_t index = (outer * middle + m) * inner + column;
            sum += PRODUCT ? load(a, index) * load(b, index) : load(a, index);
        }
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && column < inner) {
        float total = 0.0f;
        for (int part = 0; part < SUM_SPLIT; ++part) {
            total += partial[part][threadIdx.x];
        }
        store(out, outer * inner + column, total);
    }
}

#define TOKEN_KERNELS(T, SUFFIX)                                                                            \
    extern "C" __global__ void modulate_##SUFFIX(const T* x, const T* shift, const T* scale, T* y,         \
                                                 size_t total, size_t tokens, size_t width) {              \
        modulate(x, shift, scale, y, total, tokens, width);                                                \
    }                                                                                                      \
    extern "C" __global__ void gated_residual_##SUFFIX(const T* x, const T* h, const T* gate, T* y,       \
                                                       size_t total, size_t tokens, size_t width) {        \
        gated_residual(x, h, gate, y, total, tokens, width);                                               \
    }                                                                                                      \
    extern "C" __global__ void scale_tokens_##SUFFIX(const T* x, const T* factor, T* y, float offset,     \
                                                     size_t total, size_t tokens, size_t width) {          \
        scale_tokens(x, factor, y, offset, total, tokens, width);                                          \
    }                                                                                                      \
    extern "C" __global__ void sum_middle_##SUFFIX(const T* a, T* out, int middle, int inner) {           \
        sum_middle<T, false>(a, a, out, middle, inner);                                                    \
    }                                                                                                      \
    extern "C" __global__ void dot_middle_##SUFFIX(const T* a, const T* b, T* out, int middle, int inner) { \
        sum_middle<T, true>(a, b, out, middle, inner);                                                     \
    }

TOKEN_KERNELS(float, f32)
TOKEN_KERNELS(bf16, bf16)
