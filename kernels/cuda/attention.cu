// Multi-head self-attention, softmax(q·kᵀ/√d)·v, read straight from the packed (N, L, 3·W)
// qkv projection (heads side by side in each of q, k, v) and written as (N, L, W), without
// storing any (L, L) score matrix in device memory: tiles of queries and keys stream through
// shared memory, the products run on the tensor cores (WMMA: bf16 in, f32 accumulate) and the
// softmax is kept online. bf16 only; the head dimension is padded with zeros to HEAD_PAD (32,
// 64 or 80: the decoder's 32, B/2's 64 and XL/2's 72).
//
// Forward: one block per 32 queries of one head of one sample, keys 64 at a time, a running row
// maximum and sum with the output rescaled as the maximum grows. Backward, with the forward's
// statistics recomputed rather than stored (a custom op has one output): `statistics` gives
// each query's log-sum-exp and Δ = Σ ∂o·o; `backward_kv` gives ∂k and ∂v for 32 keys, queries 32
// at a time (∂v += Pᵀ·∂o, ∂k += scale·∂Sᵀ·q with ∂S = P ⊙ (∂o·vᵀ − Δ)); `backward_q` gives ∂q
// for 32 queries, keys 32 at a time (∂q += scale·∂S·k).
//
// Every kernel runs 64 threads (two warps of 16 rows each) on a grid of (⌈L / 32⌉, heads, N).
// Every step ends at __syncthreads (not __syncwarp), so the CPU emulator runs them as written.
#include "common.cuh"

#ifndef MASKDIT_EMULATED
#include <mma.h>
#endif

// The bf16 tensor-core products need compute capability 8.0 (Ampere) or newer; PTX for older
// targets has no attention kernels, and loading them fails with the driver's error.
#if defined(MASKDIT_EMULATED) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800

using namespace nvcuda;

#define ROW_TILE 32
#define FORWARD_KEY_TILE 64
#define ATTENTION_THREADS 64

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Accumulator;

// out[16 × COLS] (f32, row stride ldo) = a[16 × PAD] · b[COLS × PAD]ᵀ: a and b bf16 tiles with
// row stride PAD. One warp.
template <int PAD, int COLS>
__device__ __forceinline__ void product_transposed(const bf16* a, const bf16* b, float* out, int ldo) {
    for (int j = 0; j < COLS / 16; ++j) {
        Accumulator product;
        wmma::fill_fragment(product, 0.0f);
        for (int k = 0; k < PAD / 16; ++k) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> left;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> right;
            wmma::load_matrix_sync(left, a + k * 16, PAD);
            wmma::load_matrix_sync(right, b + j * 16 * PAD + k * 16, PAD);
            wmma::mma_sync(product, left, right, product);
        }
        wmma::store_matrix_sync(out + j * 16, product, ldo, wmma::mem_row_major);
    }
}

// acc[16 × PAD] (f32, row stride PAD) += a[16 × INNER] (bf16, row stride lda) · b[INNER × PAD]
// (bf16, row stride PAD). One warp.
template <int PAD, int INNER>
__device__ __forceinline__ void product_accumulate(const bf16* a, int lda, const bf16* b, float* acc) {
    for (int j = 0; j < PAD / 16; ++j) {
        Accumulator sum;
        wmma::load_matrix_sync(sum, acc + j * 16, PAD, wmma::mem_row_major);
        for (int k = 0; k < INNER / 16; ++k) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> left;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> right;
            wmma::load_matrix_sync(left, a + k * 16, lda);
            wmma::load_matrix_sync(right, b + k * 16 * PAD + j * 16, PAD);
            wmma::mma_sync(sum, left, right, sum);
        }
        wmma::store_matrix_sync(acc + j * 16, sum, PAD, wmma::mem_row_major);
    }
}

// tile[r][c] = source[(first + r)·stride + c], zero for rows past `tokens` and columns past
// `head_dim`. The whole block.
template <int ROWS, int PAD>
__device__ __forceinline__ void load_tile(bf16 (*tile)[PAD], const bf16* source, int first, int tokens, size_t stride,
                                          int head_dim) {
    const bf16 zero = __float2bfloat16(0.0f);
    for (int i = threadIdx.x; i < ROWS * PAD; i += ATTENTION_THREADS) {
        const int r = i / PAD, c = i % PAD;
        const int row = first + r;
        tile[r][c] = row < tokens && c < head_dim ? source[row * stride + c] : zero;
    }
}

// Zeroes a ROWS × PAD f32 tile. The whole block.
template <int ROWS, int PAD>
__device__ __forceinline__ void zero_tile(float (*tile)[PAD]) {
    for (int i = threadIdx.x; i < ROWS * PAD; i += ATTENTION_THREADS) {
        tile[i / PAD][i % PAD] = 0.0f;
    }
}

// destination[(first + r)·stride + c] = tile[r][c]·factor for rows inside `tokens` and columns
// inside `head_dim`. The whole block.
template <int ROWS, int PAD>
__device__ __forceinline__ void store_tile(bf16* destination, float (*tile)[PAD], const float* row_divisor,
                                           float factor, int first, int tokens, size_t stride, int head_dim) {
    for (int i = threadIdx.x; i < ROWS * head_dim; i += ATTENTION_THREADS) {
        const int r = i / head_dim, c = i % head_dim;
        const int row = first + r;
        if (row < tokens) {
            const float divisor = row_divisor ? row_divisor[r] : 1.0f;
            destination[row * stride + c] = __float2bfloat16(tile[r][c] * factor / divisor);
        }
    }
}

// Where one (sample, head) lives: its q columns in qkv, its columns in (N, L, W) tensors, and its
// statistics (N, heads, L) in the backward's f32 buffers.
struct Head {
    const bf16* q;
    size_t qkv_stride;
    size_t width;
    size_t out_offset;
    size_t statistics_offset;

    __device__ Head(const bf16* qkv, int tokens, int heads, int head_dim) {
        const size_t sample = blockIdx.z;
        const int head = blockIdx.y;
        width = (size_t)heads * head_dim;
        qkv_stride = 3 * width;
        q = qkv + sample * tokens * qkv_stride + (size_t)head * head_dim;
        out_offset = sample * tokens * width + (size_t)head * head_dim;
        statistics_offset = (sample * heads + head) * tokens;
    }
};

template <int HEAD_PAD>
__device__ __forceinline__ void attention_forward(const bf16* qkv, bf16* out, int tokens, int heads, int head_dim,
                                                  float scale) {
    __shared__ __align__(32) bf16 q_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 k_tile[FORWARD_KEY_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 v_tile[FORWARD_KEY_TILE][HEAD_PAD];
    __shared__ __align__(32) float scores[ROW_TILE][FORWARD_KEY_TILE];
    __shared__ __align__(32) bf16 probabilities[ROW_TILE][FORWARD_KEY_TILE];
    __shared__ __align__(32) float accumulated[ROW_TILE][HEAD_PAD];
    __shared__ float row_sum[ROW_TILE];

    const Head at(qkv, tokens, heads, head_dim);
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int first_query = blockIdx.x * ROW_TILE;
    load_tile<ROW_TILE, HEAD_PAD>(q_tile, at.q, first_query, tokens, at.qkv_stride, head_dim);
    zero_tile<ROW_TILE, HEAD_PAD>(accumulated);
    // Lane i (< 16) keeps the running maximum and sum of its warp's row i.
    float own_max = -INFINITY, own_sum = 0.0f;

    for (int first_key = 0; first_key < tokens; first_key += FORWARD_KEY_TILE) {
        __syncthreads();  // the previous tile's readers are done
        load_tile<FORWARD_KEY_TILE, HEAD_PAD>(k_tile, at.q + at.width, first_key, tokens, at.qkv_stride, head_dim);
        load_tile<FORWARD_KEY_TILE, HEAD_PAD>(v_tile, at.q + 2 * at.width, first_key, tokens, at.qkv_stride, head_dim);
        __syncthreads();
        product_transposed<HEAD_PAD, FORWARD_KEY_TILE>(&q_tile[warp * 16][0], &k_tile[0][0], &scores[warp * 16][0],
                                                      FORWARD_KEY_TILE);
        __syncthreads();
        // The online softmax, row by row, the warp's lanes across the columns.
        const int keys = min(FORWARD_KEY_TILE, tokens - first_key);
        for (int i = 0; i < 16; ++i) {
            const int r = warp * 16 + i;
            float tile_max = -INFINITY;
            for (int c = lane; c < keys; c += WARP_SIZE) {
                tile_max = fmaxf(tile_max, scores[r][c] * scale);
            }
            const float old_max = __shfl_sync(0xffffffffu, own_max, i);
            const float new_max = fmaxf(old_max, warp_max(tile_max));
            const float rescale = expf(old_max - new_max);
            float sum = 0.0f;
            for (int c = lane; c < FORWARD_KEY_TILE; c += WARP_SIZE) {
                const float p = c < keys ? expf(scores[r][c] * scale - new_max) : 0.0f;
                probabilities[r][c] = __float2bfloat16(p);
                sum += p;
            }
            sum = warp_sum(sum);
            for (int c = lane; c < HEAD_PAD; c += WARP_SIZE) {
                accumulated[r][c] *= rescale;
            }
            if (lane == i) {
                own_sum = own_sum * rescale + sum;
                own_max = new_max;
            }
        }
        __syncthreads();
        product_accumulate<HEAD_PAD, FORWARD_KEY_TILE>(&probabilities[warp * 16][0], FORWARD_KEY_TILE, &v_tile[0][0],
                                                       &accumulated[warp * 16][0]);
    }
    if (lane < 16) {
        row_sum[warp * 16 + lane] = own_sum;
    }
    __syncthreads();
    store_tile<ROW_TILE, HEAD_PAD>(out + at.out_offset, accumulated, row_sum, 1.0f, first_query, tokens, at.width,
                                   head_dim);
}

// Each query's log-sum-exp of its scaled scores, and Δ = Σ ∂o·o over its head's features.
template <int HEAD_PAD>
__device__ __forceinline__ void attention_statistics(const bf16* qkv, const bf16* out, const bf16* grad,
                                                     float* log_sum_exp, float* delta, int tokens, int heads,
                                                     int head_dim, float scale) {
    __shared__ __align__(32) bf16 q_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 k_tile[FORWARD_KEY_TILE][HEAD_PAD];
    __shared__ __align__(32) float scores[ROW_TILE][FORWARD_KEY_TILE];
    __shared__ float row_max[ROW_TILE];
    __shared__ float row_sum[ROW_TILE];

    const Head at(qkv, tokens, heads, head_dim);
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int first_query = blockIdx.x * ROW_TILE;
    load_tile<ROW_TILE, HEAD_PAD>(q_tile, at.q, first_query, tokens, at.qkv_stride, head_dim);
    // Lane i (< 16) keeps the running maximum and sum of its warp's row i.
    float own_max = -INFINITY, own_sum = 0.0f;
    for (int first_key = 0; first_key < tokens; first_key += FORWARD_KEY_TILE) {
        __syncthreads();
        load_tile<FORWARD_KEY_TILE, HEAD_PAD>(k_tile, at.q + at.width, first_key, tokens, at.qkv_stride, head_dim);
        __syncthreads();
        product_transposed<HEAD_PAD, FORWARD_KEY_TILE>(&q_tile[warp * 16][0], &k_tile[0][0], &scores[warp * 16][0],
                                                      FORWARD_KEY_TILE);
        __syncthreads();
        const int keys = min(FORWARD_KEY_TILE, tokens - first_key);
        for (int i = 0; i < 16; ++i) {
            const int r = warp * 16 + i;
            float tile_max = -INFINITY;
            for (int c = lane; c < keys; c += WARP_SIZE) {
                tile_max = fmaxf(tile_max, scores[r][c] * scale);
            }
            const float old_max = __shfl_sync(0xffffffffu, own_max, i);
            const float new_max = fmaxf(old_max, warp_max(tile_max));
            float sum = 0.0f;
            for (int c = lane; c < keys; c += WARP_SIZE) {
                sum += expf(scores[r][c] * scale - new_max);
            }
            sum = warp_sum(sum);
            if (lane == i) {
                own_sum = own_sum * expf(old_max - new_max) + sum;
                own_max = new_max;
            }
        }
    }
    if (lane < 16) {
        row_max[warp * 16 + lane] = own_max;
        row_sum[warp * 16 + lane] = own_sum;
    }
    __syncthreads();
    if (threadIdx.x < ROW_TILE) {
        const int query = first_query + threadIdx.x;
        if (query < tokens) {
            float dot = 0.0f;
            const size_t row = at.out_offset + query * at.width;
            for (int c = 0; c < head_dim; ++c) {
                dot += load(grad, row + c) * load(out, row + c);
            }
            log_sum_exp[at.statistics_offset + query] = row_max[threadIdx.x] + logf(row_sum[threadIdx.x]);
            delta[at.statistics_offset + query] = dot;
        }
    }
}

// Loads the statistics of queries first … first + 31 (rows past `tokens`: a log-sum-exp of +∞,
// so that their probabilities are 0). The whole block.
__device__ __forceinline__ void load_statistics(float* lse_tile, float* delta_tile, const float* log_sum_exp,
                                                const float* delta, size_t offset, int first, int tokens) {
    if (threadIdx.x < ROW_TILE) {
        const int query = first + threadIdx.x;
        lse_tile[threadIdx.x] = query < tokens ? log_sum_exp[offset + query] : INFINITY;
        delta_tile[threadIdx.x] = query < tokens ? delta[offset + query] : 0.0f;
    }
}

// ∂k and ∂v of 32 keys: the rows of its tiles are keys, the columns queries.
template <int HEAD_PAD>
__device__ __forceinline__ void attention_backward_kv(const bf16* qkv, const bf16* grad, const float* log_sum_exp,
                                                      const float* delta, bf16* grad_qkv, int tokens, int heads,
                                                      int head_dim, float scale) {
    __shared__ __align__(32) bf16 k_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 v_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 q_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 grad_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) float products[ROW_TILE][ROW_TILE];
    __shared__ __align__(32) bf16 weights[ROW_TILE][ROW_TILE];
    __shared__ __align__(32) float grad_v[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) float grad_k[ROW_TILE][HEAD_PAD];
    __shared__ float lse_tile[ROW_TILE];
    __shared__ float delta_tile[ROW_TILE];

    const Head at(qkv, tokens, heads, head_dim);
    const int warp = threadIdx.x / WARP_SIZE;
    const int first_key = blockIdx.x * ROW_TILE;
    load_tile<ROW_TILE, HEAD_PAD>(k_tile, at.q + at.width, first_key, tokens, at.qkv_stride, head_dim);
    load_tile<ROW_TILE, HEAD_PAD>(v_tile, at.q + 2 * at.width, first_key, tokens, at.qkv_stride, head_dim);
    zero_tile<ROW_TILE, HEAD_PAD>(grad_v);
    zero_tile<ROW_TILE, HEAD_PAD>(grad_k);

    for (int first_query = 0; first_query < tokens; first_query += ROW_TILE) {
        __syncthreads();
        load_tile<ROW_TILE, HEAD_PAD>(q_tile, at.q, first_query, tokens, at.qkv_stride, head_dim);
        load_tile<ROW_TILE, HEAD_PAD>(grad_tile, grad + at.out_offset, first_query, tokens, at.width, head_dim);
        load_statistics(lse_tile, delta_tile, log_sum_exp, delta, at.statistics_offset, first_query, tokens);
        __syncthreads();
        // Sᵀ = k · qᵀ, then Pᵀ.
        product_transposed<HEAD_PAD, ROW_TILE>(&k_tile[warp * 16][0], &q_tile[0][0], &products[warp * 16][0], ROW_TILE);
        __syncthreads();
        for (int i = threadIdx.x; i < ROW_TILE * ROW_TILE; i += ATTENTION_THREADS) {
            const int r = i / ROW_TILE, c = i % ROW_TILE;
            const float p = first_key + r < tokens ? expf(products[r][c] * scale - lse_tile[c]) : 0.0f;
            weights[r][c] = __float2bfloat16(p);
        }
        __syncthreads();
        // ∂v += Pᵀ · ∂o, and ∂Pᵀ = v · ∂oᵀ.
        product_accumulate<HEAD_PAD, ROW_TILE>(&weights[warp * 16][0], ROW_TILE, &grad_tile[0][0], &grad_v[warp * 16][0]);
        product_transposed<HEAD_PAD, ROW_TILE>(&v_tile[warp * 16][0], &grad_tile[0][0], &products[warp * 16][0],
                                               ROW_TILE);
        __syncthreads();
        // ∂Sᵀ = Pᵀ ⊙ (∂Pᵀ − Δ), in place of Pᵀ.
        for (int i = threadIdx.x; i < ROW_TILE * ROW_TILE; i += ATTENTION_THREADS) {
            const int r = i / ROW_TILE, c = i % ROW_TILE;
            const float p = __bfloat162float(weights[r][c]);
            weights[r][c] = __float2bfloat16(p * (products[r][c] - delta_tile[c]));
        }
        __syncthreads();
        // ∂k += ∂Sᵀ · q (scaled at the end).
        product_accumulate<HEAD_PAD, ROW_TILE>(&weights[warp * 16][0], ROW_TILE, &q_tile[0][0], &grad_k[warp * 16][0]);
    }
    __syncthreads();
    bf16* out = grad_qkv + (at.q - qkv);
    store_tile<ROW_TILE, HEAD_PAD>(out + at.width, grad_k, nullptr, scale, first_key, tokens, at.qkv_stride, head_dim);
    store_tile<ROW_TILE, HEAD_PAD>(out + 2 * at.width, grad_v, nullptr, 1.0f, first_key, tokens, at.qkv_stride,
                                   head_dim);
}

// ∂q of 32 queries: the rows of its tiles are queries, the columns keys.
template <int HEAD_PAD>
__device__ __forceinline__ void attention_backward_q(const bf16* qkv, const bf16* grad, const float* log_sum_exp,
                                                     const float* delta, bf16* grad_qkv, int tokens, int heads,
                                                     int head_dim, float scale) {
    __shared__ __align__(32) bf16 q_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 grad_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 k_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) bf16 v_tile[ROW_TILE][HEAD_PAD];
    __shared__ __align__(32) float scores[ROW_TILE][ROW_TILE];
    __shared__ __align__(32) float grad_weights[ROW_TILE][ROW_TILE];
    __shared__ __align__(32) bf16 grad_scores[ROW_TILE][ROW_TILE];
    __shared__ __align__(32) float grad_q[ROW_TILE][HEAD_PAD];
    __shared__ float lse_tile[ROW_TILE];
    __shared__ float delta_tile[ROW_TILE];

    const Head at(qkv, tokens, heads, head_dim);
    const int warp = threadIdx.x / WARP_SIZE;
    const int first_query = blockIdx.x * ROW_TILE;
    load_tile<ROW_TILE, HEAD_PAD>(q_tile, at.q, first_query, tokens, at.qkv_stride, head_dim);
    load_tile<ROW_TILE, HEAD_PAD>(grad_tile, grad + at.out_offset, first_query, tokens, at.width, head_dim);
    load_statistics(lse_tile, delta_tile, log_sum_exp, delta, at.statistics_offset, first_query, tokens);
    zero_tile<ROW_TILE, HEAD_PAD>(grad_q);

    for (int first_key = 0; first_key < tokens; first_key += ROW_TILE) {
        __syncthreads();
        load_tile<ROW_TILE, HEAD_PAD>(k_tile, at.q + at.width, first_key, tokens, at.qkv_stride, head_dim);
        load_tile<ROW_TILE, HEAD_PAD>(v_tile, at.q + 2 * at.width, first_key, tokens, at.qkv_stride, head_dim);
        __syncthreads();
        // S = q · kᵀ and ∂P = ∂o · vᵀ.
        product_transposed<HEAD_PAD, ROW_TILE>(&q_tile[warp * 16][0], &k_tile[0][0], &scores[warp * 16][0], ROW_TILE);
        product_transposed<HEAD_PAD, ROW_TILE>(&grad_tile[warp * 16][0], &v_tile[0][0], &grad_weights[warp * 16][0],
                                               ROW_TILE);
        __syncthreads();
        // ∂S = P ⊙ (∂P − Δ).
        for (int i = threadIdx.x; i < ROW_TILE * ROW_TILE; i += ATTENTION_THREADS) {
            const int r = i / ROW_TILE, c = i % ROW_TILE;
            const float p = first_key + c < tokens ? expf(scores[r][c] * scale - lse_tile[r]) : 0.0f;
            grad_scores[r][c] = __float2bfloat16(p * (grad_weights[r][c] - delta_tile[r]));
        }
        __syncthreads();
        // ∂q += ∂S · k (scaled at the end).
        product_accumulate<HEAD_PAD, ROW_TILE>(&grad_scores[warp * 16][0], ROW_TILE, &k_tile[0][0], &grad_q[warp * 16][0]);
    }
    __syncthreads();
    bf16* out = grad_qkv + (at.q - qkv);
    store_tile<ROW_TILE, HEAD_PAD>(out, grad_q, nullptr, scale, first_query, tokens, at.qkv_stride, head_dim);
}

#define ATTENTION_KERNELS(PAD)                                                                                     \
    extern "C" __global__ void attention_forward_d##PAD##_bf16(const bf16* qkv, bf16* out, int tokens, int heads,  \
                                                              int head_dim, float scale) {                        \
        attention_forward<PAD>(qkv, out, tokens, heads, head_dim, scale);                                          \
    }                                                                                                              \
    extern "C" __global__ void attention_statistics_d##PAD##_bf16(const bf16* qkv, const bf16* out,                \
                                                                 const bf16* grad, float* log_sum_exp,            \
                                                                 float* delta, int tokens, int heads,             \
                                                                 int head_dim, float scale) {                     \
        attention_statistics<PAD>(qkv, out, grad, log_sum_exp, delta, tokens, heads, head_dim, scale);             \
    }                                                                                                              \
    extern "C" __global__ void attention_backward_kv_d##PAD##_bf16(const bf16* qkv, const bf16* grad,              \
                                                                  const float* log_sum_exp, const float* delta,   \
                                                                  bf16* grad_qkv, int tokens, int heads,          \
                                                                  int head_dim, float scale) {                    \
        attention_backward_kv<PAD>(qkv, grad, log_sum_exp, delta, grad_qkv, tokens, heads, head_dim, scale);       \
    }                                                                                                              \
    extern "C" __global__ void attention_backward_q_d##PAD##_bf16(const bf16* qkv, const bf16* grad,               \
                                                                 const float* log_sum_exp, const float* delta,    \
                                                                 bf16* grad_qkv, int tokens, int heads,           \
                                                                 int head_dim, float scale) {                     \
        attention_backward_q<PAD>(qkv, grad, log_sum_exp, delta, grad_qkv, tokens, heads, head_dim, scale);        \
    }

ATTENTION_KERNELS(32)
ATTENTION_KERNELS(64)
ATTENTION_KERNELS(80)

#endif
