// The optimiser's and the EMA's in-place updates of f32 tensors, elementwise over grid-stride
// loops: one launch per tensor for AdamW (parameter and both moments) and one for a running average
// (the EMA).
#include "common.cuh"

// One AdamW step in PyTorch's order: m ← m + (1 − β₁)(g − m), v ← β₂v + (1 − β₂)g²,
// p ← p·decay − step_size · m / (√v / √c₂ + eps), with decay = 1 − lr·wd applied only when
// `decays` (step_size = lr / c₁, cᵢ = 1 − βᵢᵗ).
// The weights come from the host as f32 roundings of f64 values (first_weight = 1 − β₁,
// second_keep = β₂, second_weight = 1 − β₂), as the CPU update has them.
extern "C" __global__ void adamw_f32(float* param, float* first, float* second, const float* grad, size_t total,
                                     float first_weight, float second_keep, float second_weight, float decay,
                                     int decays, float step_size, float correction2_sqrt, float eps) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        const float g = grad[i];
        const float m = first[i] + first_weight * (g - first[i]);
        const float v = second[i] * second_keep + second_weight * g * g;
        first[i] = m;
        second[i] = v;
        const float base = decays ? param[i] * decay : param[i];
        param[i] = base - step_size * (m / (sqrtf(v) / correction2_sqrt + eps));
    }
}

// The running averages of the CPU's `Average`, by `kind`: 0 the EMA of the weights,
// average ← keep·average + take·value; 1 Adam's second moment, keep·average + take·value²;
// 2 a lerp, average + take·(value − average).
extern "C" __global__ void running_average_f32(float* average, const float* value, size_t total, float keep,
                                               float take, int kind) {
    for (size_t i = global_index(); i < total; i += global_stride()) {
        const float v = value[i];
        if (kind == 0) {
            average[i] = average[i] * keep + take * v;
        } else if (kind == 1) {
            average[i] = average[i] * keep + take * v * v;
        } else {
            average[i] += take * (v - average[i]);
        }
    }
}
