//! `maskdit serve`: the web page and its API (the `maskdit-server` crate) for one model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use maskdit_registry::Registry;
use maskdit_server::{Options, ServedModel, Server};

use crate::runtime::device::{DTypeChoice, DeviceChoice};
use crate::runtime::model_args::ModelArgs;

/// Options of `maskdit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Number format of the model and the VAE.
    #[arg(long, value_enum, default_value_t = DTypeChoice::F32)]
    dtype: DTypeChoice,
    /// Address to listen on; anything but 127.0.0.1 lets other machines in.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// A token the page and the API then need (give it to whoever may use the server).
    #[arg(long)]
    token: Option<String>,
    /// Gallery folder: every result's PNGs and settings, shown again after a restart.
    #[arg(long, default_value = "gallery")]
    out: PathBuf,
}

/// Runs `maskdit serve` until the process is stopped.
pub fn run(args: ServeArgs) -> Result<()> {
    if let Some(token) = &args.token {
        if token.len() < 8 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("--token must be at least 8 visible characters (no spaces)");
        }
    }
    let registry = Registry::load()?;
    let device = args.device.open()?;
    let (loaded, decoder) = args.model.load(&registry, &device, args.dtype.dtype())?;
    let name = args.model.name(&registry);
    let shown = std::path::Path::new(&name).file_stem().and_then(|s| s.to_str()).unwrap_or(&name).to_string();
    let served = ServedModel::new(&shown, &name, loaded, decoder)?;
    let options = Options { host: args.host, port: args.port, token: args.token.clone(), gallery: args.out.clone() };
    let server = Server::start(vec![served], options).context("cannot start the server")?;
    if !args.host.is_loopback() {
        eprintln!(
            "warning: listening on {}: other machines can reach this server{}",
            args.host,
            if args.token.is_some() { " (with the token)" } else { "; pass --token to require one" }
        );
    }
    let address = server.address();
    let query = args.token.as_ref().map(|t| format!("/?token={t}")).unwrap_or_default();
    let shown_host = if args.host.is_unspecified() { "127.0.0.1".to_string() } else { address.ip().to_string() };
    let shown_host = if address.is_ipv6() { format!("[{shown_host}]") } else { shown_host };
    eprintln!(
        "serving {shown} at http://{shown_host}:{}{query} (gallery in {}); Ctrl-C stops",
        address.port(),
        args.out.display()
    );
    server.wait()?;
    Ok(())
}
