// What every kernel file shares: element access for f32 and bf16 (bf16 storage, f32
// arithmetic) and sums over a warp and over a block.
//
// The kernels use only what scripts/cuda-kernels/emulate.h also provides on the CPU (indices,
// static shared memory, __syncthreads, __shfl_xor_sync and __shfl_sync in code every thread of
// the block reaches, WMMA tiles), so the harness there can run them without a GPU.
#pragma once

#ifndef MASKDIT_EMULATED
#include <cuda_bf16.h>
#endif

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float load(const float* data, size_t index) { return data[index]; }
__device__ __forceinline__ float load(const bf16* data, size_t index) { return __bfloat162float(data[index]); }
__device__ __forceinline__ void store(float* data, size_t index, float value) { data[index] = value; }
__device__ __forceinline__ void store(bf16* data, size_t index, float value) { data[index] = __float2bfloat16(value); }

#define WARP_SIZE 32

// The sum of `value` over the 32 lanes of a warp, in every lane.
__device__ __forceinline__ float warp_sum(float value) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        value += __shfl_xor_sync(0xffffffffu, value, offset);
    }
    return value;
}

// The maximum of `value` over the 32 lanes of a warp, in every lane.
__device__ __forceinline__ float warp_max(float value) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    }
    return value;
}

// The sum of `value` over a one-dimensional block (blockDim.x a multiple of 32, at most 1024),
// in every thread. `scratch` is WARP_SIZE floats of shared memory; every thread must call.
__device__ __forceinline__ float block_sum(float value, float* scratch) {
    const unsigned lane = threadIdx.x % WARP_SIZE;
    const unsigned warp = threadIdx.x / WARP_SIZE;
    value = warp_sum(value);
    __syncthreads();  // an earlier call's readers are done with `scratch`
    if (lane == 0) {
        scratch[warp] = value;
    }
    __syncthreads();
    value = lane < blockDim.x / WARP_SIZE ? scratch[lane] : 0.0f;
    return warp_sum(value);
}

// The index of this thread in a one-dimensional grid, and the grid's thread count (for
// grid-stride loops).
__device__ __forceinline__ size_t global_index() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t global_stride() { return (size_t)gridDim.x * blockDim.x; }
