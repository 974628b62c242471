// Layer norm over the last dimension without affine parameters, forward and backward: one
// block per row (any width; the row is read again from cache for each pass).
#include "common.cuh"

// Mean and reciprocal standard deviation of a row, in every thread of the block.
template <typename T>
__device__ __forceinline__ void row_statistics(const T* row, int cols, float eps, float* scratch, float* mean,
                                               float* rstd) {
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        sum += load(row, c);
    }
    const float m = block_sum(sum, scratch) / cols;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float centred = load(row, c) - m;
        squares += centred * centred;
    }
    *mean = m;
    *rstd = 1.0f / sqrtf(block_sum(squares, scratch) / cols + eps);
}

// y = (x − mean) · rstd, row by row.
template <typename T>
__device__ __forceinline__ void layer_norm_forward(const T* x, T* y, int cols, float eps) {
    __shared__ float scratch[WARP_SIZE];
    const size_t offset = (size_t)blockIdx.x * cols;
    float mean, rstd;
    row_statistics(x + offset, cols, eps, scratch, &mean, &rstd);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        store(y, offset + c, (load(x, offset + c) - mean) * rstd);
    }
}

// dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), row by row.
template <typename T>
__device__ __forceinline__ void layer_norm_backward(const T* x, const T* grad, T* grad_x, int cols, float eps) {
    __shared__ float scratch[WARP_SIZE];
    const size_t offset = (size_t)blockIdx.x * cols;
    float mean, rstd;
    row_statistics(x + offset, cols, eps, scratch, &mean, &rstd);
    float grad_sum = 0.0f;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = load(grad, offset + c);
        grad_sum += g;
        dot += (load(x, offset + c) - mean) * rstd * g;
    }
    const float grad_mean = block_sum(grad_sum, scratch) / cols;
    const float dot_mean = block_sum(dot, scratch) / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float normed = (load(x, offset + c) - mean) * rstd;
        store(grad_x, offset + c, rstd * (load(grad, offset + c) - grad_mean - normed * dot_mean));
    }
}

extern "C" __global__ void layer_norm_forward_f32(const float* x, float* y, int cols, float eps) {
    layer_norm_forward(x, y, cols, eps);
}
extern "C" __global__ void layer_norm_forward_bf16(const bf16* x, bf16* y, int cols, float eps) {
    layer_norm_forward(x, y, cols, eps);
}
extern "C" __global__ void layer_norm_backward_f32(const float* x, const float* grad, float* grad_x, int cols,
                                                   float eps) {
    layer_norm_backward(x, grad, grad_x, cols, eps);
}
extern "C" __global__ void layer_norm_backward_bf16(const bf16* x, const bf16* grad, bf16* grad_x, int cols,
                                                    float eps) {
    layer_norm_backward(x, grad, grad_x, cols, eps);
}
