//! Collectives between CUDA ranks over NCCL. The unique id travels from rank 0 over the TCP
//! rendezvous, whose connections then stay open as a liveness line: a rank that dies closes
//! them, and the others end at once instead of waiting in NCCL, which has no timeout. A
//! watchdog ends the process when a collective (or the communicator's set-up) outlasts the
//! time limit.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::backend::BackendDevice;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, Storage, Tensor};

use crate::{Collective, Error, Result, TcpGroup, World};

/// What ends the process when a peer is lost or NCCL hangs (it cannot be returned as an
/// error: the calling thread is stuck inside NCCL). It receives the reason.
pub type OnFailure = Arc<dyn Fn(String) + Send + Sync>;

/// Times the operation in flight and calls [`OnFailure`] when it outlasts the limit.
struct Watchdog {
    armed: Arc<Mutex<Option<(Instant, &'static str)>>>,
}

impl Watchdog {
    fn start(limit: Duration, on_failure: OnFailure) -> Self {
        let armed: Arc<Mutex<Option<(Instant, &'static str)>>> = Arc::new(Mutex::new(None));
        let watched = armed.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let late = watched
                .lock()
                .ok()
                .and_then(|guard| guard.filter(|(since, _)| since.elapsed() > limit).map(|(_, what)| what));
            if let Some(what) = late {
                on_failure(format!(
                    "NCCL {what} did not finish within {} s: another rank is hung or gone",
                    limit.as_secs()
                ));
                return;
            }
        });
        Self { armed }
    }

    fn run<T>(&self, what: &'static str, work: impl FnOnce() -> T) -> T {
        if let Ok(mut guard) = self.armed.lock() {
            *guard = Some((Instant::now(), what));
        }
        let out = work();
        if let Ok(mut guard) = self.armed.lock() {
            *guard = None;
        }
        out
    }
}

/// CUDA ranks joined by NCCL.
pub struct NcclGroup {
    // Never dropped: cudarc's drop aborts the communicator and panics if that fails; the
    // process ends soon after the run anyway.
    comm: ManuallyDrop<Comm>,
    cuda: CudaDevice,
    rank: usize,
    size: usize,
    watchdog: Watchdog,
    closing: Arc<AtomicBool>,
    _control: TcpGroup,
}

impl std::fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclGroup").field("rank", &self.rank).field("size", &self.size).finish_non_exhaustive()
    }
}

fn nccl_error(what: &str, err: impl std::fmt::Debug) -> Error {
    Error::Launch(format!("NCCL {what} failed: {err:?}"))
}

impl NcclGroup {
    /// Joins the ranks of `world` on `device` (a CUDA device): rendezvous over TCP within
    /// `rendezvous`, then NCCL's communicator; `on_failure` runs (and should end the process)
    /// when a peer's connection closes or an NCCL call outlasts `timeout`.
    pub fn join(
        world: &World,
        device: &Device,
        rendezvous: Duration,
        timeout: Duration,
        on_failure: OnFailure,
    ) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            return Err(Error::Launch(format!("NCCL needs a CUDA device, not {device:?}")));
        };
        let id = if world.is_main() { Some(Id::new().map_err(|e| nccl_error("unique id", e))?) } else { None };
        let payload: Vec<u8> =
            id.as_ref().map(|id| id.internal().iter().map(|&c| c as u8).collect()).unwrap_or_default();
        let (control, payload) = TcpGroup::join(world, &payload, rendezvous, timeout)?;
        let internal: [std::ffi::c_char; 128] = payload
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| Error::Protocol(format!("an NCCL id has 128 bytes, rank 0 sent {}", payload.len())))?;
        let id = id.unwrap_or_else(|| Id::uninit(internal));
        let closing = Arc::new(AtomicBool::new(false));
        watch_peers(&control, world.rank, closing.clone(), on_failure.clone())?;
        let watchdog = Watchdog::start(timeout, on_failure);
        let stream = cuda.cuda_stream();
        let comm = watchdog
            .run("set-up", || Comm::from_rank(stream, world.rank, world.size, id))
            .map_err(|e| nccl_error("communicator set-up", e))?;
        Ok(Self {
            comm: ManuallyDrop::new(comm),
            cuda: cuda.clone(),
            rank: world.rank,
            size: world.size,
            watchdog,
            closing,
            _control: control,
        })
    }

    fn run(&mut self, values: &Tensor, reduce: bool) -> Result<Tensor> {
        let home = values.device().clone();
        let on =
            values.flatten_all()?.to_dtype(DType::F32)?.to_device(&Device::Cuda(self.cuda.clone()))?.contiguous()?;
        let n = on.elem_count();
        let mut out = self.cuda.alloc_zeros::<f32>(n)?;
        {
            let (storage, layout) = on.storage_and_layout();
            let Storage::Cuda(storage) = &*storage else {
                return Err(Error::Launch("NCCL got a tensor off the GPU".into()));
            };
            let start = layout.start_offset();
            let input = storage.as_cuda_slice::<f32>()?.slice(start..start + n);
            let (comm, cuda) = (&self.comm, &self.cuda);
            self.watchdog.run(if reduce { "all-reduce" } else { "broadcast" }, || {
                let status = if reduce {
                    comm.all_reduce(&input, &mut out, &ReduceOp::Sum)
                } else {
                    comm.broadcast(Some(&input), &mut out, 0)
                };
                status.map_err(|e| nccl_error("collective", e))?;
                cuda.synchronize().map_err(Error::from)
            })?;
        }
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, self.cuda.clone()));
        Ok(Tensor::from_storage(storage, n, BackpropOp::none(), false).to_device(&home)?)
    }
}

/// Watches each control connection: when a peer's closes before the run ends, `on_failure`.
fn watch_peers(control: &TcpGroup, rank: usize, closing: Arc<AtomicBool>, on_failure: OnFailure) -> Result<()> {
    for (index, stream) in control.streams().iter().enumerate() {
        let peer = if rank == 0 { index + 1 } else { 0 };
        let mut stream = stream.try_clone().map_err(|e| Error::PeerLost { rank: peer, reason: e.to_string() })?;
        stream.set_read_timeout(None).map_err(|e| Error::PeerLost { rank: peer, reason: e.to_string() })?;
        let (closing, on_failure) = (closing.clone(), on_failure.clone());
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut stream, &mut byte);
            if !closing.load(Ordering::SeqCst) {
                on_failure(format!("rank {peer} is gone (its connection closed); the run stops on every rank"));
            }
        });
    }
    Ok(())
}

impl Collective for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn sum(&mut self, values: &Tensor) -> Result<Tensor> {
        self.run(values, true)
    }

    fn broadcast(&mut self, values: &Tensor) -> Result<Tensor> {
        self.run(values, false)
    }

    fn finish(&mut self) -> Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        self.sum(&Tensor::zeros(1, DType::F32, &Device::Cpu)?).map(|_| ())
    }
}
