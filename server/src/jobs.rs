//! The queue: requests become jobs, run one at a time on the device by a worker thread, which
//! reports each step (with a preview of the denoised estimate), stops between steps when asked,
//! and hands finished images to the gallery.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::Tensor;
use serde::Serialize;

use crate::gallery::{Gallery, Record};
use crate::preview::preview_png;
use crate::request::Settings;
use crate::ServedModel;

/// Most requests waiting at once.
pub const MAX_QUEUED: usize = 32;
/// Jobs remembered for `GET /api/jobs` (finished ones stay in the gallery).
const MAX_REMEMBERED: usize = 256;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for the device.
    Queued,
    /// Sampling.
    Running,
    /// Finished; its images are in the gallery.
    Done,
    /// Stopped by a cancel.
    Cancelled,
    /// Failed; `error` says why.
    Failed,
}

/// What `GET /api/jobs/ID` answers.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// The job's id.
    pub id: String,
    /// Its settings.
    pub settings: Settings,
    /// Where it stands.
    pub status: Status,
    /// Sampling steps finished.
    pub done: usize,
    /// Sampling steps in all.
    pub total: usize,
    /// Jobs ahead of it in the queue (queued jobs only).
    pub ahead: usize,
    /// Its images' file names in the gallery, once done.
    pub images: Vec<String>,
    /// The `maskdit generate` command that makes the same images.
    pub command: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// One request on its way.
#[derive(Debug)]
pub struct Job {
    id: String,
    order: u64,
    settings: Settings,
    command: String,
    cancel: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    status: Status,
    done: usize,
    total: usize,
    images: Vec<String>,
    error: Option<String>,
    preview: Option<Preview>,
}

/// The latest denoised estimate: kept as the sampler gave it while the job runs (turned into
/// pixels only when someone asks, never on the sampler's step), and as a PNG once it ends (so
/// that no device memory stays held).
#[derive(Debug, Clone)]
enum Preview {
    /// The estimate `(N, C, H, W)` and whether it is in latent space.
    Estimate(Tensor, bool),
    /// The final strip.
    Png(Vec<u8>),
}

impl Preview {
    fn png(&self) -> Option<Vec<u8>> {
        match self {
            Self::Estimate(estimate, latent) => preview_png(estimate, *latent).ok(),
            Self::Png(bytes) => Some(bytes.clone()),
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere (the state stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Job {
    /// The latest preview (PNG), once the first step is done.
    pub fn preview(&self) -> Option<Vec<u8>> {
        // Encoded outside the lock: the worker's next step need not wait for it.
        let preview = lock(&self.state).preview.clone();
        preview?.png()
    }

    /// Asks the job to stop (a queued job never starts; a running one stops after its step).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        let mut state = lock(&self.state);
        if state.status == Status::Queued {
            state.status = Status::Cancelled;
        }
    }

    fn view(&self, ahead: usize) -> JobView {
        let state = lock(&self.state);
        JobView {
            id: self.id.clone(),
            settings: self.settings.clone(),
            status: state.status,
            done: state.done,
            total: state.total,
            ahead: if state.status == Status::Queued { ahead } else { 0 },
            images: state.images.clone(),
            command: self.command.clone(),
            error: state.error.clone(),
        }
    }
}

/// The jobs of this server run and the queue into the worker.
#[derive(Debug)]
pub struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
    queue: SyncSender<Arc<Job>>,
    next: AtomicU64,
    /// Distinguishes this run's ids from earlier runs' in the same gallery.
    run: String,
}

/// Why a job was not taken.
#[derive(Debug)]
pub enum Refused {
    /// The queue holds [`MAX_QUEUED`] jobs.
    Full,
    /// The worker is gone.
    Stopped,
}

impl Jobs {
    /// An empty list and the receiving end of its queue (for [`run_worker`]).
    pub fn new() -> (Self, Receiver<Arc<Job>>) {
        let (queue, receiver) = std::sync::mpsc::sync_channel(MAX_QUEUED);
        let started = now_ms();
        let jobs = Self { list: Mutex::new(Vec::new()), queue, next: AtomicU64::new(1), run: format!("{started:x}") };
        (jobs, receiver)
    }

    /// Queues `settings`; returns the job.
    pub fn submit(&self, settings: Settings, command: String) -> Result<Arc<Job>, Refused> {
        let order = self.next.fetch_add(1, Ordering::SeqCst);
        let job = Arc::new(Job {
            id: format!("{}-{order}", self.run),
            order,
            command,
            cancel: AtomicBool::new(false),
            state: Mutex::new(State {
                status: Status::Queued,
                done: 0,
                total: settings.steps,
                images: Vec::new(),
                error: None,
                preview: None,
            }),
            settings,
        });
        match self.queue.try_send(job.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => return Err(Refused::Stopped),
        }
        let mut list = lock(&self.list);
        list.push(job.clone());
        if list.len() > MAX_REMEMBERED {
            let finished = list
                .iter()
                .position(|j| matches!(lock(&j.state).status, Status::Done | Status::Cancelled | Status::Failed));
            if let Some(index) = finished {
                list.remove(index);
            }
        }
        Ok(job)
    }

    /// The job `id`, if remembered.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.list).iter().find(|j| j.id == id).cloned()
    }

    /// Every remembered job, oldest first, with its place in the queue.
    pub fn views(&self) -> Vec<JobView> {
        let list = lock(&self.list);
        let mut ahead = 0;
        let mut views = Vec::with_capacity(list.len());
        for job in list.iter() {
            let view = job.view(ahead);
            if matches!(view.status, Status::Queued | Status::Running) {
                ahead += 1;
            }
            views.push(view);
        }
        views
    }

    /// The view of `job`, with its place in the queue.
    pub fn view(&self, job: &Job) -> JobView {
        let ahead = lock(&self.list)
            .iter()
            .filter(|j| j.order < job.order && matches!(lock(&j.state).status, Status::Queued | Status::Running))
            .count();
        job.view(ahead)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs queued jobs one at a time until the queue's sending end is dropped. A failed job
/// records its error; the worker goes on.
pub fn run_worker(receiver: Receiver<Arc<Job>>, models: Arc<Vec<ServedModel>>, gallery: Gallery) {
    while let Ok(job) = receiver.recv() {
        if job.cancel.load(Ordering::SeqCst) {
            lock(&job.state).status = Status::Cancelled;
            continue;
        }
        lock(&job.state).status = Status::Running;
        let outcome = run_job(&job, &models, &gallery);
        let last = lock(&job.state).preview.take();
        let last = last.and_then(|preview| preview.png()).map(Preview::Png);
        let mut state = lock(&job.state);
        state.preview = last;
        match outcome {
            Ok(images) => {
                state.status = Status::Done;
                state.images = images;
            }
            Err(_) if job.cancel.load(Ordering::SeqCst) => state.status = Status::Cancelled,
            Err(message) => {
                state.status = Status::Failed;
                state.error = Some(message);
            }
        }
    }
}

/// Samples `job`, keeps its images in the gallery and returns their file names.
fn run_job(job: &Job, models: &[ServedModel], gallery: &Gallery) -> Result<Vec<String>, String> {
    let settings = &job.settings;
    let served = models.iter().find(|m| m.name == settings.model).ok_or("the model is gone")?;
    let pipeline =
        maskdit_pipeline::Pipeline::new(served.loaded.model.clone(), served.decoder.clone(), settings.sampler())
            .with_guidance(settings.guidance, served.loaded.interval)
            .map_err(|e| e.to_string())?;
    let latent = matches!(served.decoder, maskdit_pipeline::Decoder::Vae(_));
    let seeds = settings.seeds();
    let classes = settings.class.map(|c| vec![c; seeds.len()]);
    let mut on_step = |step: &maskdit_sampler::Step<'_>| {
        let mut state = lock(&job.state);
        state.done = step.done();
        state.total = step.total;
        // A handle, not a copy: the estimate is the sampler's own fresh tensor.
        state.preview = Some(Preview::Estimate(step.denoised.clone(), latent));
        drop(state);
        if job.cancel.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let images = pipeline.images(&seeds, classes.as_deref(), &mut on_step).map_err(|e| e.to_string())?;
    let mut files = Vec::with_capacity(images.len());
    for (seed, image) in seeds.iter().zip(&images) {
        let mut bytes = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .map_err(|e| format!("cannot encode the image of seed {seed}: {e}"))?;
        files.push((format!("job-{}-{seed:06}.png", job.id), bytes));
    }
    let record = Record {
        id: job.id.clone(),
        finished_ms: now_ms(),
        settings: settings.clone(),
        images: files.iter().map(|(name, _)| name.clone()).collect(),
        command: job.command.clone(),
    };
    gallery.keep(&record, &files).map_err(|e| e.to_string())?;
    Ok(record.images)
}
