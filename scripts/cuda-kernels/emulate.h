// Runs the toolkit's CUDA kernels (kernels/cuda/*.cu) on the CPU, to check their arithmetic
// and indexing without a GPU: g++ compiles a .cu file with this header forced in front
// (`-include emulate.h -DMASKDIT_EMULATED`), and check.py runs one OS thread per CUDA thread,
// one block at a time.
//
// What it provides is what the kernels may use: thread and block indices, static __shared__
// memory (one block runs at a time, so a function-local static is the block's shared memory),
// __syncthreads, __shfl_xor_sync and __shfl_sync (called where every thread of the block calls
// them), bf16
// conversions (round to nearest even) and the single-precision math functions.
#pragma once

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <memory>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(bytes) __attribute__((aligned(bytes)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
inline std::unique_ptr<std::barrier<>> emulated_barrier;
inline float emulated_exchange[1024];

inline void __syncthreads() { emulated_barrier->arrive_and_wait(); }

inline unsigned emulated_linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline float __shfl_xor_sync(unsigned, float value, int lane_mask) {
    const unsigned self = emulated_linear_thread();
    emulated_exchange[self] = value;
    __syncthreads();
    const float other = emulated_exchange[self ^ static_cast<unsigned>(lane_mask)];
    __syncthreads();
    return other;
}

inline float __shfl_sync(unsigned, float value, int source_lane) {
    const unsigned self = emulated_linear_thread();
    emulated_exchange[self] = value;
    __syncthreads();
    const float other = emulated_exchange[(self & ~31u) + static_cast<unsigned>(source_lane % 32)];
    __syncthreads();
    return other;
}

struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 value) {
    const uint32_t bits = static_cast<uint32_t>(value.bits) << 16;
    float result;
    std::memcpy(&result, &bits, sizeof result);
    return result;
}

inline __nv_bfloat16 __float2bfloat16(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if (std::isnan(value)) {
        return {0x7fc0};
    }
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return {static_cast<uint16_t>(bits >> 16)};
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float rsqrtf(float value) { return 1.0f / std::sqrt(value); }
inline float __expf(float value) { return std::exp(value); }
inline float __fdividef(float a, float b) { return a / b; }

// Warp matrix products (mma.h). A fragment's element layout across the lanes is unspecified on
// the GPU, so here every lane holds the whole tile and computes the whole product: the same
// results, whatever layout the hardware uses. Stores write the same values from every lane.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
    static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[num_elements];
};

inline float as_float(float value) { return value; }
inline float as_float(__nv_bfloat16 value) { return __bfloat162float(value); }

template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* pointer, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, Layout>;
    for (int r = 0; r < F::rows; ++r) {
        for (int c = 0; c < F::cols; ++c) {
            f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? pointer[r * ldm + c] : pointer[c * ldm + r];
        }
    }
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* pointer, unsigned ldm, layout_t layout) {
    for (int r = 0; r < M; ++r) {
        for (int c = 0; c < N; ++c) {
            f.x[r * N + c] = layout == mem_row_major ? pointer[r * ldm + c] : pointer[c * ldm + r];
        }
    }
}

template <int M, int N, int K>
void store_matrix_sync(float* pointer, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
    // Every lane computed the same tile: lane 0 writes it. The stores of the other lanes wait
    // for nothing, as on the GPU, where the caller synchronises before reading.
    if (threadIdx.x % 32 != 0) {
        return;
    }
    for (int r = 0; r < M; ++r) {
        for (int c = 0; c < N; ++c) {
            (layout == mem_row_major ? pointer[r * ldm + c] : pointer[c * ldm + r]) = f.x[r * N + c];
        }
    }
}

template <int M, int N, int K, class T>
void fill_fragment(fragment<accumulator, M, N, K, T>& f, T value) {
    for (auto& element : f.x) {
        element = value;
    }
}

template <int M, int N, int K, class T, class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b, const fragment<accumulator, M, N, K, float>& c) {
    float result[M * N];
    for (int r = 0; r < M; ++r) {
        for (int n = 0; n < N; ++n) {
            float sum = c.x[r * N + n];
            for (int k = 0; k < K; ++k) {
                sum += as_float(a.x[r * K + k]) * as_float(b.x[k * N + n]);
            }
            result[r * N + n] = sum;
        }
    }
    std::memcpy(d.x, result, sizeof result);
}
}  // namespace wmma
}  // namespace nvcuda

extern "C" {
// Sets the launch shape of the next kernel run (a new barrier for the block's threads).
void emulated_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    emulated_barrier = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(bx * by * bz));
}

// Makes the calling OS thread CUDA thread (tx, ty, tz) of block (bx, by, bz).
void emulated_enter(unsigned bx, unsigned by, unsigned bz, unsigned tx, unsigned ty, unsigned tz) {
    blockIdx = {bx, by, bz};
    threadIdx = {tx, ty, tz};
}
}
