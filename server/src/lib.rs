//! `maskdit serve`: a local web page and a JSON API over the sampling pipeline. Pick a class
//! by name, watch the image form step by step, keep what you make in a gallery on disk (with
//! the `maskdit generate` command that makes it again).
//!
//! Requests are queued and run one at a time on the device by a worker thread; any number of
//! browser tabs see the queue. The server listens on 127.0.0.1 unless told otherwise, answers
//! only to its own address (no DNS rebinding) and its own page (no cross-site requests),
//! bounds every request, names every file it writes, and writes them atomically.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use maskdit_server::{Options, ServedModel, Server};
//! let registry = maskdit_registry::Registry::load()?;
//! let device = candle_core::Device::Cpu;
//! let loaded = maskdit_pipeline::load_model(&registry, "mnist", maskdit::WeightSet::Ema,
//!     candle_core::DType::F32, &device, &mut maskdit_registry::Quiet)?;
//! let model = ServedModel::new("mnist", "mnist", loaded, maskdit_pipeline::Decoder::Pixels)?;
//! let server = Server::start(vec![model], Options::default())?;
//! println!("open http://{}", server.address());
//! server.wait()?;
//! # Ok(())
//! # }
//! ```

mod api;
mod error;
mod gallery;
mod guard;
mod jobs;
mod preview;
mod request;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Error, Result};
pub use gallery::Record;
pub use jobs::{JobView, Status, MAX_QUEUED};
pub use request::{SamplerName, Settings, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS};

use maskdit_pipeline::{Decoder, LoadedModel};

/// A model the server offers.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The name requests use.
    pub name: String,
    /// What `maskdit generate --model` takes to load it (a registry name or a file).
    pub argument: String,
    /// The network and its defaults.
    pub loaded: LoadedModel,
    /// How its samples become pixels.
    pub decoder: Decoder,
    /// Its class names: its own, ImageNet's for 1000-class models, else none.
    pub class_names: Vec<String>,
}

impl ServedModel {
    /// `loaded` served as `name`, loaded by `maskdit generate --model argument`.
    pub fn new(name: &str, argument: &str, loaded: LoadedModel, decoder: Decoder) -> Result<Self> {
        let classes = loaded.model.config().num_classes;
        let class_names = maskdit_registry::labels::class_names(classes, &loaded.class_names)
            .map_err(|e| Error::Server(e.to_string()))?;
        Ok(Self { name: name.to_string(), argument: argument.to_string(), loaded, decoder, class_names })
    }
}

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (127.0.0.1: this machine only).
    pub host: std::net::IpAddr,
    /// Port (0: any free port).
    pub port: u16,
    /// A token the API and the images need, if any.
    pub token: Option<String>,
    /// The gallery folder.
    pub gallery: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self { host: std::net::Ipv4Addr::LOCALHOST.into(), port: 7860, token: None, gallery: PathBuf::from("gallery") }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds the address, starts the worker and serves until [`Server::stop`] (or forever,
    /// see [`Server::wait`]). A taken port is an [`Error::Bind`].
    pub fn start(models: Vec<ServedModel>, options: Options) -> Result<Self> {
        if models.is_empty() {
            return Err(Error::Server("the server needs a model".into()));
        }
        let gallery = gallery::Gallery::open(&options.gallery)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Server(format!("cannot start the server's runtime: {e}")))?;
        let wanted = SocketAddr::new(options.host, options.port);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(wanted))
            .map_err(|source| Error::Bind { address: wanted.to_string(), source })?;
        let address = listener.local_addr().map_err(|source| Error::Bind { address: wanted.to_string(), source })?;
        let models = Arc::new(models);
        let (jobs, queue) = jobs::Jobs::new();
        {
            let (models, gallery) = (models.clone(), gallery.clone());
            std::thread::Builder::new()
                .name("maskdit-worker".into())
                .spawn(move || jobs::run_worker(queue, models, gallery))
                .map_err(|e| Error::Server(format!("cannot start the worker: {e}")))?;
        }
        let app = Arc::new(api::App { models, jobs, gallery, port: address.port(), token: options.token });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = std::thread::Builder::new()
            .name("maskdit-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    axum::serve(listener, api::router(app))
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await
                })
            })
            .map_err(|e| Error::Server(format!("cannot start the server: {e}")))?;
        Ok(Self { address, stop: Some(stop), serving })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until the process ends (or the server fails).
    pub fn wait(self) -> Result<()> {
        let Self { serving, stop, .. } = self;
        let outcome = serving.join();
        drop(stop);
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Server(format!("the server stopped: {e}"))),
            Err(_) => Err(Error::Server("the server stopped unexpectedly".into())),
        }
    }

    /// Stops accepting requests and returns once the server has shut down.
    pub fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait()
    }
}
