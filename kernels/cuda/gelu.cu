// GELU with the tanh approximation, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), and its
// gradient, elementwise over grid-stride loops.
#include "common.cuh"

#define SQRT_2_OVER_PI 0.7978845608f
#define KAPPA 0.044715f

// y = gelu(x).
template <typename T>
__device__ __forceinline__ void gelu_tanh_forward(const T* x, T* y, size_t total) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        const float v = load(x, i);
        store(y, i, 0.5f * v * (1.0f + tanhf(SQRT_2_OVER_PI * (v + KAPPA * v * v * v))));
    }
}

// dx = g · gelu'(x).
template <typename T>
__device__ __forceinline__ void gelu_tanh_backward(const T* x, const T* grad, T* grad_x, size_t total) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        const float v = load(x, i);
        const float t = tanhf(SQRT_2_OVER_PI * (v + KAPPA * v * v * v));
        const float slope =
            0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * KAPPA * v * v);
        store(grad_x, i, load(grad, i) * slope);
    }
}

extern "C" __global__ void gelu_tanh_forward_f32(const float* x, float* y, size_t total) {
    gelu_tanh_forward(x, y, total);
}
extern "C" __global__ void gelu_tanh_forward_bf16(const bf16* x, bf16* y, size_t total) {
    gelu_tanh_forward(x, y, total);
}
extern "C" __global__ void gelu_tanh_backward_f32(const float* x, const float* grad, float* grad_x, size_t total) {
    gelu_tanh_backward(x, grad, grad_x, total);
}
extern "C" __global__ void gelu_tanh_backward_bf16(const bf16* x, const bf16* grad, bf16* grad_x, size_t total) {
    gelu_tanh_backward(x, grad, grad_x, total);
}
