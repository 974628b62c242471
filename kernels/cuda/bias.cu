// The linear layer's bias: y = product + bias, the bias broadcast over the rows of a
// (rows, cols) product, elementwise over a grid-stride loop.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void add_bias(const T* product, const T* bias, T* y, size_t total, size_t cols) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        store(y, i, load(product, i) + load(bias, i % cols));
    }
}

extern "C" __global__ void add_bias_f32(const float* product, const float* bias, float* y, size_t total, size_t cols) {
    add_bias(product, bias, y, total, cols);
}
extern "C" __global__ void add_bias_bf16(const bf16* product, const bf16* bias, bf16* y, size_t total, size_t cols) {
    add_bias(product, bias, y, total, cols);
}
