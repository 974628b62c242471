//! The CUDA side of the fused operations: the PTX the build script compiled from
//! `kernels/cuda/*.cu` and kernel launches on candle's device and stream. The ops' `cuda_fwd`
//! methods (beside their `cpu_fwd`) call [`map`] and [`update`].

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaStorage, DType, Layout};

use crate::attention::{Dims, CUDA_MAX_HEAD_DIM};
use half::bf16;

/// Threads per block of the row and elementwise kernels.
const BLOCK_THREADS: u32 = 256;
/// Most blocks an elementwise kernel is launched with (its loop strides over the rest).
const MAX_BLOCKS: usize = 65_535;

/// A source file of `kernels/cuda/`, compiled to PTX.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Module {
    /// `layer_norm.cu`.
    LayerNorm,
    /// `tokens.cu`: modulation, gated residual, per-sample scaling, sums over tokens.
    Tokens,
    /// `gelu.cu`.
    Gelu,
    /// `updates.cu`: AdamW and running averages.
    Updates,
    /// `bias.cu`: the linear layer's bias.
    Bias,
    /// `attention.cu`: attention's forward pass on the tensor cores.
    Attention,
}

impl Module {
    fn name(self) -> &'static str {
        match self {
            Self::LayerNorm => "maskdit-layer-norm",
            Self::Tokens => "maskdit-tokens",
            Self::Gelu => "maskdit-gelu",
            Self::Updates => "maskdit-updates",
            Self::Bias => "maskdit-bias",
            Self::Attention => "maskdit-attention",
        }
    }

    fn ptx(self) -> &'static str {
        match self {
            Self::LayerNorm => include_str!(concat!(env!("OUT_DIR"), "/layer_norm.ptx")),
            Self::Tokens => include_str!(concat!(env!("OUT_DIR"), "/tokens.ptx")),
            Self::Gelu => include_str!(concat!(env!("OUT_DIR"), "/gelu.ptx")),
            Self::Updates => include_str!(concat!(env!("OUT_DIR"), "/updates.ptx")),
            Self::Bias => include_str!(concat!(env!("OUT_DIR"), "/bias.ptx")),
            Self::Attention => include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")),
        }
    }
}

/// A kernel's scalar argument.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar {
    /// `int`.
    I32(i32),
    /// `float`.
    F32(f32),
    /// `size_t`.
    U64(u64),
}

impl Scalar {
    /// A count as `int`, refused when it does not fit.
    pub(crate) fn count(value: usize) -> candle_core::Result<Self> {
        match i32::try_from(value) {
            Ok(v) => Ok(Self::I32(v)),
            Err(_) => bail!("{value} is too large for a CUDA kernel's int argument"),
        }
    }

    /// A size as `size_t`.
    pub(crate) fn size(value: usize) -> Self {
        Self::U64(value as u64)
    }

    fn push<'a>(&'a self, builder: &mut LaunchArgs<'a>) {
        match self {
            Self::I32(v) => builder.arg(v),
            Self::F32(v) => builder.arg(v),
            Self::U64(v) => builder.arg(v),
        };
    }
}

/// One block per row of `cols` elements.
pub(crate) fn per_row(rows: usize, cols: usize) -> candle_core::Result<LaunchConfig> {
    let threads = cols.div_ceil(32).clamp(1, BLOCK_THREADS as usize / 32) as u32 * 32;
    let blocks = u32::try_from(rows).map_err(|_| candle_core::Error::Msg(format!("{rows} rows for one launch")))?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 })
}

/// A grid-stride loop over `total` elements.
pub(crate) fn elementwise(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(BLOCK_THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// `sum_middle`/`dot_middle` over `(outer, middle, inner)` data: blocks of (32, 8) threads.
pub(crate) fn over_middle(outer: usize, inner: usize) -> candle_core::Result<LaunchConfig> {
    let columns = u32::try_from(inner.div_ceil(32)).map_err(|_| candle_core::Error::Msg(format!("{inner} columns")))?;
    let outer = u32::try_from(outer).map_err(|_| candle_core::Error::Msg(format!("{outer} rows")))?;
    if outer > 65_535 {
        bail!("{outer} outer rows for one launch (at most 65535)");
    }
    Ok(LaunchConfig { grid_dim: (columns.max(1), outer.max(1), 1), block_dim: (32, 8, 1), shared_mem_bytes: 0 })
}

/// The kernel name's suffix for a dtype.
fn suffix(dtype: DType, kernel: &str) -> candle_core::Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => bail!("{kernel}: no CUDA kernel for {other:?}"),
    }
}

/// The elements of a contiguous tensor.
fn view<'a, T: CudaDType>(
    storage: &'a CudaStorage,
    layout: &Layout,
    kernel: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(storage.as_cuda_slice::<T>()?.slice(start..end)),
        None => bail!("{kernel} expects contiguous tensors"),
    }
}

/// Runs `kernel_<dtype>(inputs…, output, scalars…)` of `module` and returns its new output of
/// `output_len` elements; every input is contiguous and of one dtype, f32 or bf16.
pub(crate) fn map(
    module: Module,
    kernel: &str,
    inputs: &[(&CudaStorage, &Layout)],
    output_len: usize,
    config: LaunchConfig,
    scalars: &[Scalar],
) -> candle_core::Result<CudaStorage> {
    let Some(&(first, _)) = inputs.first() else { bail!("{kernel}: no inputs") };
    let dtype = first.dtype();
    if inputs.iter().any(|(s, _)| s.dtype() != dtype) {
        bail!("{kernel}: inputs of different dtypes");
    }
    match dtype {
        DType::F32 => map_typed::<f32>(module, kernel, inputs, output_len, config, scalars),
        DType::BF16 => map_typed::<bf16>(module, kernel, inputs, output_len, config, scalars),
        other => bail!("{kernel}: no CUDA kernel for {other:?}"),
    }
}

fn map_typed<T: CudaDType + DeviceRepr>(
    module: Module,
    kernel: &str,
    inputs: &[(&CudaStorage, &Layout)],
    output_len: usize,
    config: LaunchConfig,
    scalars: &[Scalar],
) -> candle_core::Result<CudaStorage> {
    let device = inputs[0].0.device.clone();
    let name = format!("{kernel}_{}", suffix(inputs[0].0.dtype(), kernel)?);
    let function = device.get_or_load_custom_func(&name, module.name(), module.ptx())?;
    let views = inputs.iter().map(|(s, l)| view::<T>(s, l, kernel)).collect::<candle_core::Result<Vec<_>>>()?;
    if output_len == 0 {
        // Nothing to compute, and a launch over empty inputs could read past them.
        // SAFETY: no elements, so none is read before being written.
        return Ok(CudaStorage::wrap_cuda_slice(unsafe { device.alloc::<T>(0)? }, device));
    }
    // SAFETY: the kernel writes every one of the `output_len` elements before anything reads them.
    let mut output: CudaSlice<T> = unsafe { device.alloc::<T>(output_len)? };
    let mut builder = function.builder();
    for v in &views {
        builder.arg(v);
    }
    builder.arg(&mut output);
    for s in scalars {
        s.push(&mut builder);
    }
    // SAFETY: the arguments match the kernel's parameters (inputs, output, scalars, in the
    // order `kernels/cuda/` declares them), and every buffer holds the elements it indexes.
    unsafe { builder.launch(config) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(output, device))
}

/// Runs `kernel(target, operands…, scalars…)` of `module` on f32 data, rewriting `target` in
/// place; the kernel may also rewrite operands (AdamW's moments), which the caller owns.
pub(crate) fn update(
    module: Module,
    kernel: &str,
    (target, target_layout): (&mut CudaStorage, &Layout),
    operands: &[(&CudaStorage, &Layout)],
    scalars: &[Scalar],
) -> candle_core::Result<()> {
    let total = target_layout.shape().elem_count();
    let device = target.device.clone();
    let function = device.get_or_load_custom_func(kernel, module.name(), module.ptx())?;
    let views = operands.iter().map(|(s, l)| view::<f32>(s, l, kernel)).collect::<candle_core::Result<Vec<_>>>()?;
    if views.iter().any(|v| v.len() != total) {
        bail!("{kernel}: operands of different sizes");
    }
    if total == 0 {
        return Ok(());
    }
    let Some((start, end)) = target_layout.contiguous_offsets() else { bail!("{kernel} expects contiguous tensors") };
    let mut target = target.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
    let mut builder = function.builder();
    builder.arg(&mut target);
    for v in &views {
        builder.arg(v);
    }
    let size = Scalar::size(total);
    size.push(&mut builder);
    for s in scalars {
        s.push(&mut builder);
    }
    // SAFETY: as for `map`: the arguments match the kernel's parameters, and every buffer holds
    // `total` elements. Operands the kernel rewrites are device memory nothing else uses meanwhile
    // (the optimiser's own state, on the device's one stream).
    unsafe { builder.launch(elementwise(total)) }.w()?;
    Ok(())
}

/// The CUDA kernels' view of an attention call's geometry.
impl Dims {
    /// The head width the kernels pad to (32, 64 or 80), refused above 80.
    fn padded(&self) -> candle_core::Result<usize> {
        match self.head_dim {
            0..=32 => Ok(32),
            33..=64 => Ok(64),
            65..=CUDA_MAX_HEAD_DIM => Ok(80),
            other => bail!("attention: no CUDA kernel for heads of {other} features"),
        }
    }

    /// A block of 64 threads for each 32 rows of each head of each sample.
    fn config(&self) -> candle_core::Result<LaunchConfig> {
        let fits = |value: usize, limit: u32| u32::try_from(value).ok().filter(|&v| v <= limit);
        let blocks = fits(self.tokens.div_ceil(32), u32::MAX >> 1);
        let (heads, batch) = (fits(self.heads, 65_535), fits(self.batch, 65_535));
        let (Some(blocks), Some(heads), Some(batch)) = (blocks, heads, batch) else {
            bail!("attention: {self:?} is too large for one launch")
        };
        Ok(LaunchConfig { grid_dim: (blocks.max(1), heads, batch), block_dim: (64, 1, 1), shared_mem_bytes: 0 })
    }

    /// The scalar arguments every attention kernel ends with.
    fn scalars(&self) -> candle_core::Result<[Scalar; 4]> {
        Ok([
            Scalar::count(self.tokens)?,
            Scalar::count(self.heads)?,
            Scalar::count(self.head_dim)?,
            Scalar::F32((self.head_dim as f32).powf(-0.5)),
        ])
    }
}

/// Attention's forward pass on bf16 qkv: `(N, L, W)`.
pub(crate) fn attention_forward(shape: Dims, qkv: (&CudaStorage, &Layout)) -> candle_core::Result<CudaStorage> {
    let kernel = format!("attention_forward_d{}", shape.padded()?);
    let total = shape.batch * shape.tokens * shape.width;
    map(Module::Attention, &kernel, &[qkv], total, shape.config()?, &shape.scalars()?)
}

/// Attention's backward pass on bf16 tensors: `∂qkv` `(N, L, 3·W)` from qkv, the forward's
/// output and its gradient. Three launches: each query's log-sum-exp and Δ = Σ ∂o·o (f32
/// buffers of `N·heads·L`), then ∂k and ∂v, then ∂q, each into its own columns of ∂qkv.
pub(crate) fn attention_backward(
    shape: Dims,
    (qkv, qkv_layout): (&CudaStorage, &Layout),
    (out, out_layout): (&CudaStorage, &Layout),
    (grad, grad_layout): (&CudaStorage, &Layout),
) -> candle_core::Result<CudaStorage> {
    let padded = shape.padded()?;
    if [qkv.dtype(), out.dtype(), grad.dtype()] != [DType::BF16; 3] {
        bail!("attention's backward pass runs on bf16 tensors only");
    }
    let device = qkv.device.clone();
    let function = |name: &str| {
        let module = Module::Attention;
        device.get_or_load_custom_func(&format!("attention_{name}_d{padded}_bf16"), module.name(), module.ptx())
    };
    let qkv = view::<bf16>(qkv, qkv_layout, "attention backward")?;
    let out = view::<bf16>(out, out_layout, "attention backward")?;
    let grad = view::<bf16>(grad, grad_layout, "attention backward")?;
    let width = shape.width;
    if qkv.len() != shape.batch * shape.tokens * 3 * width || out.len() * 3 != qkv.len() || grad.len() != out.len() {
        bail!("attention backward: qkv, output and gradient of different sizes");
    }
    let rows = shape.batch * shape.heads * shape.tokens;
    if rows == 0 || width == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(device.alloc_zeros::<bf16>(qkv.len())?, device));
    }
    // SAFETY: the statistics kernel writes every row's entry before the other two read them,
    // and the two gradient kernels write every element of ∂qkv between them.
    let (mut log_sum_exp, mut delta, mut grad_qkv) =
        unsafe { (device.alloc::<f32>(rows)?, device.alloc::<f32>(rows)?, device.alloc::<bf16>(qkv.len())?) };
    let (config, scalars) = (shape.config()?, shape.scalars()?);

    {
        let statistics = function("statistics")?;
        let mut builder = statistics.builder();
        builder.arg(&qkv).arg(&out).arg(&grad).arg(&mut log_sum_exp).arg(&mut delta);
        scalars.iter().for_each(|s| s.push(&mut builder));
        // SAFETY: the arguments match attention_statistics's parameters, and every buffer holds
        // the elements the kernel indexes for `shape`.
        unsafe { builder.launch(config) }.w()?;
    }
    for name in ["backward_kv", "backward_q"] {
        let kernel = function(name)?;
        let mut builder = kernel.builder();
        builder.arg(&qkv).arg(&grad).arg(&log_sum_exp).arg(&delta).arg(&mut grad_qkv);
        scalars.iter().for_each(|s| s.push(&mut builder));
        // SAFETY: as above, for attention_backward_kv and attention_backward_q.
        unsafe { builder.launch(config) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(grad_qkv, device))
}
