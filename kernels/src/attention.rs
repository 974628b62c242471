//! Multi-head self-attention, `softmax(q·kᵀ/√d)·v`, read straight from the packed qkv
//! projection: one task per (sample, head), each running single-threaded GEMMs on strided views,
//! so no q/k/v copies, no transposes and no stored score matrices. The backward pass recomputes
//! the attention weights of a head instead of keeping them from the forward pass.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};

use super::product::{self, Operand, Threads};
use super::{contiguous_slice, fast_exp, Backend, Pass, SharedMut};

/// `(N, L, 3·width)` packed `[q | k | v]` (heads side by side in each) → `(N, L, width)`, the
/// heads' outputs side by side, `softmax(q·kᵀ/√d)·v` per head. For f32 on the CPU one fused op
/// (differentiable); with the CUDA kernels, for bf16 with heads of at most
/// [`CUDA_MAX_HEAD_DIM`] features, kernels on the tensor cores that store no scores (three more
/// for the backward pass); elsewhere candle's matrix products around its fused softmax, which
/// has a backward pass attached for [`Pass::Training`].
pub fn attention(qkv: &Tensor, heads: usize, pass: Pass) -> candle_core::Result<Tensor> {
    match Backend::of(&[qkv]) {
        Backend::CpuF32 => return qkv.contiguous()?.apply_op1(Attention { heads }),
        Backend::Cuda if qkv.dtype() == DType::BF16 && qkv.dim(2)? / 3 / heads.max(1) <= CUDA_MAX_HEAD_DIM => {
            let op = Attention { heads };
            return match pass {
                Pass::Inference => qkv.contiguous()?.apply_op1_no_bwd(&op),
                Pass::Training => qkv.contiguous()?.apply_op1(op),
            };
        }
        _ => {}
    }
    let (n, l, packed) = qkv.dims3()?;
    let (width, head_dim) = (packed / 3, packed / 3 / heads.max(1));
    let qkv = qkv.reshape((n, l, 3, heads, head_dim))?.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)? * (head_dim as f64).powf(-0.5))?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let scores = q.matmul(&k.t()?)?;
    let weights = match pass {
        Pass::Inference => candle_nn::ops::softmax_last_dim(&scores)?,
        Pass::Training => super::attached::softmax_last_dim(&scores)?,
    };
    weights.matmul(&v)?.transpose(1, 2)?.reshape((n, l, width))
}

/// The widest head the CUDA attention kernel takes (XL/2's 72, padded to 80).
pub const CUDA_MAX_HEAD_DIM: usize = 80;

struct Attention {
    heads: usize,
}

/// The geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    /// Samples.
    pub(crate) batch: usize,
    /// Tokens per sample.
    pub(crate) tokens: usize,
    /// Features of all heads together.
    pub(crate) width: usize,
    /// Features per head.
    pub(crate) head_dim: usize,
    /// Heads.
    pub(crate) heads: usize,
}

impl Dims {
    fn of(layout: &Layout, heads: usize, op: &str) -> candle_core::Result<Self> {
        let (batch, tokens, packed) = layout.shape().dims3()?;
        if heads == 0 || packed % (3 * heads) != 0 {
            bail!("{op}: {packed} packed qkv features do not split into 3 × {heads} heads");
        }
        let width = packed / 3;
        Ok(Self { batch, tokens, width, head_dim: width / heads, heads })
    }

    /// Element offset of head `head`'s first query feature of sample `sample` in qkv.
    fn qkv_offset(&self, sample: usize, head: usize) -> usize {
        sample * self.tokens * 3 * self.width + head * self.head_dim
    }

    /// Element offset of head `head`'s first output feature of sample `sample`.
    fn out_offset(&self, sample: usize, head: usize) -> usize {
        sample * self.tokens * self.width + head * self.head_dim
    }

    fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }
}

/// `dst = beta · lhs · rhs` on the calling thread, each matrix given as `(pointer, (row
/// stride, column stride))`.
///
/// # Safety
/// As [`product::product`].
unsafe fn head_product(
    dims: (usize, usize, usize),
    (dst, dst_strides): (*mut f32, (usize, usize)),
    (lhs, lhs_strides): (*const f32, (usize, usize)),
    (rhs, rhs_strides): (*const f32, (usize, usize)),
    beta: f32,
) {
    // SAFETY: the caller upholds `product`'s contract for these matrices.
    unsafe {
        product::product(
            dims,
            Operand { ptr: dst, strides: dst_strides },
            false,
            Operand { ptr: lhs, strides: lhs_strides },
            Operand { ptr: rhs, strides: rhs_strides },
            beta,
            Threads::Calling,
        )
    }
}

/// The attention weights of one head, row-major `(L, L)`, into `weights`.
///
/// # Safety
/// `qkv` must point at the first query feature of the head (see [`Dims::qkv_offset`]) in a
/// contiguous qkv tensor of geometry `dims`.
#[inline(always)]
unsafe fn head_weights(dims: Dims, qkv: *const f32, weights: &mut [f32]) {
    let (l, d, row) = (dims.tokens, dims.head_dim, 3 * dims.width);
    // SAFETY: the caller guarantees `qkv` addresses this head's queries in a tensor of geometry
    // `dims`, so its keys lie `width` further and every (L, d) read stays inside the tensor;
    // `weights` is an exclusive (L, L) buffer.
    unsafe {
        let keys = qkv.add(dims.width);
        // scores = q · kᵀ · scale: kᵀ is k read with its strides swapped.
        head_product((l, l, d), (weights.as_mut_ptr(), (l, 1)), (qkv, (row, 1)), (keys, (1, row)), dims.scale());
    }
    for scores in weights.chunks_mut(l) {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scores.iter_mut().for_each(|s| *s = fast_exp::exp(*s - max));
        let norm = 1.0 / scores.iter().sum::<f32>();
        scores.iter_mut().for_each(|s| *s *= norm);
    }
}

/// Runs `task(sample, head, scratch)` for every (sample, head) on candle's CPU worker pool,
/// with an `L × L` scratch matrix per worker range.
fn for_each_head(dims: Dims, scratch_matrices: usize, task: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let tasks = dims.batch * dims.heads;
    let run = |range: std::ops::Range<usize>| {
        let mut scratch = vec![0f32; scratch_matrices * dims.tokens * dims.tokens];
        super::wide::wide(|| {
            for index in range {
                task(index / dims.heads, index % dims.heads, &mut scratch);
            }
        });
    };
    if tasks <= 1 {
        run(0..tasks);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(tasks, run);
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = Dims::of(layout, self.heads, self.name())?;
        let qkv = contiguous_slice(storage, layout, self.name())?;
        let mut out = vec![0f32; dims.batch * dims.tokens * dims.width];
        let out_ptr = SharedMut(out.as_mut_ptr());
        let (l, d, row) = (dims.tokens, dims.head_dim, 3 * dims.width);
        for_each_head(dims, 1, |sample, head, weights| {
            // SAFETY: offsets stay inside the (N, L, 3W) input and (N, L, W) output; each task
            // writes only its own head's columns of its own sample.
            unsafe {
                let q = qkv.as_ptr().add(dims.qkv_offset(sample, head));
                head_weights(dims, q, weights);
                let values = q.add(2 * dims.width);
                let dst = out_ptr.get().add(dims.out_offset(sample, head));
                head_product((l, d, l), (dst, (dims.width, 1)), (weights.as_ptr(), (l, 1)), (values, (row, 1)), 1.0);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((dims.batch, dims.tokens, dims.width))))
    }

    /// bf16 only ([`attention`] sends nothing else here): one block per 32 queries of one head
    /// of one sample, the head dimension padded to 32, 64 or 80.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dims = Dims::of(layout, self.heads, self.name())?;
        let out = crate::cuda::attention_forward(dims, (storage, layout))?;
        Ok((out, Shape::from((dims.batch, dims.tokens, dims.width))))
    }

    fn bwd(&self, qkv: &Tensor, out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = AttentionGrad { heads: self.heads };
        let grad_qkv = qkv.contiguous()?.apply_op3_no_bwd(&out.contiguous()?, &grad.contiguous()?, &op)?;
        Ok(Some(grad_qkv))
    }
}

/// `(qkv, out, ∂out)` → `∂qkv` of [`Attention`]. The CPU recomputes each head's weights and
/// needs no `out`; the CUDA kernels take Δ = Σ ∂o·o from it.
struct AttentionGrad {
    heads: usize,
}

impl AttentionGrad {
    /// The geometry, with the output and its gradient checked against it.
    fn dims(&self, qkv: &Layout, out: &Layout, grad: &Layout) -> candle_core::Result<Dims> {
        let dims = Dims::of(qkv, self.heads, self.name())?;
        for (what, layout) in [("output", out), ("gradient", grad)] {
            if layout.shape().dims() != [dims.batch, dims.tokens, dims.width] {
                bail!("{}: {what} {:?} against qkv {:?}", self.name(), layout.shape(), qkv.shape());
            }
        }
        Ok(dims)
    }
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1, l2, l3)?;
        let qkv = contiguous_slice(s1, l1, self.name())?;
        let grad_out = contiguous_slice(s3, l3, self.name())?;
        let mut grad_qkv = vec![0f32; qkv.len()];
        let grad_ptr = SharedMut(grad_qkv.as_mut_ptr());
        let (l, d, w, row) = (dims.tokens, dims.head_dim, dims.width, 3 * dims.width);
        for_each_head(dims, 2, |sample, head, scratch| {
            let (weights, grad_scores) = scratch.split_at_mut(l * l);
            // SAFETY: as in the forward pass; each task writes only its own head's q, k and v
            // columns of its own sample in ∂qkv.
            unsafe {
                let q = qkv.as_ptr().add(dims.qkv_offset(sample, head));
                let (k, v) = (q.add(w), q.add(2 * w));
                let grad_o = grad_out.as_ptr().add(dims.out_offset(sample, head));
                let grad_q = grad_ptr.get().add(dims.qkv_offset(sample, head));
                let (grad_k, grad_v) = (grad_q.add(w), grad_q.add(2 * w));
                head_weights(dims, q, weights);
                // ∂v = Pᵀ · ∂o
                head_product((l, d, l), (grad_v, (row, 1)), (weights.as_ptr(), (1, l)), (grad_o, (w, 1)), 1.0);
                // ∂P = ∂o · vᵀ, then ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)) in place.
                head_product((l, l, d), (grad_scores.as_mut_ptr(), (l, 1)), (grad_o, (w, 1)), (v, (1, row)), 1.0);
                for (g, p) in grad_scores.chunks_mut(l).zip(weights.chunks(l)) {
                    let dot = g.iter().zip(p).map(|(&a, &b)| a * b).sum::<f32>();
                    g.iter_mut().zip(p).for_each(|(a, &b)| *a = b * (*a - dot));
                }
                // ∂q = scale · ∂S · k,  ∂k = scale · ∂Sᵀ · q
                let scale = dims.scale();
                head_product((l, d, l), (grad_q, (row, 1)), (grad_scores.as_ptr(), (l, 1)), (k, (row, 1)), scale);
                head_product((l, d, l), (grad_k, (row, 1)), (grad_scores.as_ptr(), (1, l)), (q, (row, 1)), scale);
            }
        });
        Ok((CpuStorage::F32(grad_qkv), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let dims = self.dims(l1, l2, l3)?;
        let grad_qkv = crate::cuda::attention_backward(dims, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((grad_qkv, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};
    use maskdit_testkit::{relative_l2, SeededTensors};

    /// The composition the fused op replaces.
    fn reference(qkv: &Tensor, heads: usize) -> Tensor {
        let (n, l, packed) = qkv.dims3().unwrap();
        let (width, head_dim) = (packed / 3, packed / 3 / heads);
        let qkv = qkv.reshape((n, l, 3, heads, head_dim)).unwrap().permute((2, 0, 3, 1, 4)).unwrap();
        let q = qkv.get(0).unwrap().contiguous().unwrap();
        let k = qkv.get(1).unwrap().contiguous().unwrap();
        let v = qkv.get(2).unwrap().contiguous().unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * (head_dim as f64).powf(-0.5)).unwrap();
        let weights = candle_nn::ops::softmax(&scores, candle_core::D::Minus1).unwrap();
        weights.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((n, l, width)).unwrap()
    }

    #[test]
    fn matches_the_composition_in_values_and_gradients() {
        let mut draw = SeededTensors::new(1);
        for (n, l, heads, head_dim) in [(3, 37, 4, 16), (1, 5, 1, 8), (2, 64, 6, 12)] {
            let qkv = Var::from_tensor(&draw.normal(0.0, 1.5, (n, l, 3 * heads * head_dim))).unwrap();
            let probe = draw.normal(0.0, 1.0, (n, l, heads * head_dim));
            let run = |y: Tensor| {
                let grads = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                [y, grads.get(&qkv).unwrap().clone()]
            };
            let fused = run(super::attention(&qkv, heads, crate::Pass::Training).unwrap());
            let composed = run(reference(&qkv, heads));
            let value_error = relative_l2(&fused[0], &composed[0]);
            let grad_error = relative_l2(&fused[1], &composed[1]);
            assert!(value_error < 1e-6, "{n}×{l}, {heads} heads: values {value_error}");
            assert!(grad_error < 1e-5, "{n}×{l}, {heads} heads: gradient {grad_error}");
        }
    }
}
