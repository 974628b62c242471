//! Data-parallel launch: `--nproc N` starts N ranks of the same command on this machine and
//! watches them; across machines each one runs the launcher with `--nnodes`/`--node-rank`, or
//! an outside launcher (torchrun, `srun`) sets the torchrun variables for each rank itself.

use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use maskdit_parallel::{
    Collective, TcpGroup, World, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, RANK, RDZV_SECRET, WORLD_SIZE,
};

use crate::runtime::device::RankDevices;

/// How many ranks, and where rank 0 listens.
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// Ranks (processes) to start on this machine: one per GPU with --device cuda, or CPU
    /// processes. The result is the same for any number.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..65536))]
    pub nproc: usize,
    /// Machines taking part; start the same command on each with its --node-rank.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..65536))]
    pub nnodes: usize,
    /// This machine's index, 0..nnodes (node 0 hosts rank 0).
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of node 0, reachable from every machine (default 127.0.0.1 on one machine).
    #[arg(long)]
    pub master_addr: Option<String>,
    /// Port of rank 0's rendezvous (default: a free port on one machine, 29500 across machines).
    #[arg(long)]
    pub master_port: Option<u16>,
    /// Seconds a rank waits for the others, at start-up and in every exchange, before the run
    /// stops (a rank that dies is noticed at once; this bounds a hung one).
    #[arg(long, default_value_t = 1800)]
    pub dist_timeout: u64,
}

/// The exit status the launcher passes on when its ranks stopped (their messages are printed).
#[derive(Debug)]
pub struct RanksExited(pub u8);

impl std::fmt::Display for RanksExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the ranks exited with status {}", self.0)
    }
}

impl std::error::Error for RanksExited {}

impl LaunchArgs {
    /// Whether this process should start and watch ranks rather than train itself: ranks were
    /// asked for and no launcher has made this process one of them already.
    pub fn launches(&self, world: Option<&World>) -> bool {
        world.is_none() && (self.nproc > 1 || self.nnodes > 1)
    }

    /// How long a rank waits for the others.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.dist_timeout.max(1))
    }
}

/// The collective of this rank: NCCL between GPUs when built with it, TCP otherwise.
pub fn connect(world: &World, device: &candle_core::Device, launch: &LaunchArgs) -> Result<Box<dyn Collective>> {
    warn_without_secret(world);
    let timeout = launch.timeout();
    #[cfg(feature = "nccl")]
    if device.is_cuda() {
        let rank = world.rank;
        let on_failure: maskdit_parallel::OnFailure = Arc::new(move |reason| {
            eprintln!("error: rank {rank}: {reason}");
            std::process::exit(1)
        });
        let group = maskdit_parallel::NcclGroup::join(world, device, timeout, timeout, on_failure)?;
        return Ok(Box::new(group));
    }
    if device.is_cuda() && world.is_main() {
        eprintln!(
            "this maskdit was built without NCCL: gradients travel between GPUs over TCP through host memory (slow); \
             build with --features nccl"
        );
    }
    let (group, _) = TcpGroup::join(world, b"", timeout, timeout)?;
    Ok(Box::new(group))
}

/// Warns (on rank 0) when the run has no shared secret, so that any process reaching the
/// rendezvous could join as a rank.
pub fn warn_without_secret(world: &World) {
    if world.size > 1 && world.is_main() && world.secret.is_none() {
        eprintln!(
            "warning: {RDZV_SECRET} is not set, so any process that reaches {} can join this run as a rank; set the \
             same secret for every rank (--nproc on one machine makes one itself)",
            world.address()
        );
    }
}

/// The run's secret: `MASKDIT_RDZV_SECRET` where set, else (on one machine) a fresh random one.
fn run_secret(nnodes: usize) -> Option<String> {
    let given = std::env::var(RDZV_SECRET).ok().filter(|s| !s.is_empty());
    given.or_else(|| (nnodes == 1).then(|| rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect()))
}

/// A free TCP port on the loopback interface (for a run on one machine).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port for the ranks")?;
    Ok(listener.local_addr()?.port())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Starts this machine's ranks of the command line this process was given and waits for
/// them. When a rank fails the others get a moment to stop by themselves (they notice the lost
/// peer), then are killed; the launcher fails with the first failure. `after_failure` tells
/// the user what to do then. Ctrl-C is passed on to the ranks, which stop together.
pub fn supervise(launch: &LaunchArgs, devices: &RankDevices, after_failure: &str) -> Result<()> {
    let LaunchArgs { nproc, nnodes, node_rank, .. } = *launch;
    if node_rank >= nnodes {
        bail!("--node-rank {node_rank} must lie in 0..{nnodes} (--nnodes)");
    }
    if let Some(listed) = devices.listed() {
        if listed < nproc {
            bail!("--nproc {nproc} needs {nproc} GPUs in --device, which lists {listed}");
        }
    }
    let master_addr = match (&launch.master_addr, nnodes) {
        (Some(addr), _) => addr.clone(),
        (None, 1) => "127.0.0.1".into(),
        (None, _) => bail!("--nnodes {nnodes} needs --master-addr: the address of node 0, reachable from every node"),
    };
    let master_port = match (launch.master_port, nnodes) {
        (Some(port), _) => port,
        (None, 1) => free_port()?,
        (None, _) => 29500,
    };
    let world = nproc * nnodes;
    let exe = std::env::current_exe().context("cannot find this program to start its ranks")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let secret = run_secret(nnodes);
    let mut ranks: Vec<(usize, Child)> = Vec::with_capacity(nproc);
    for local in 0..nproc {
        let rank = node_rank * nproc + local;
        let mut command = Command::new(&exe);
        command
            .args(std::env::args_os().skip(1))
            .env(WORLD_SIZE, world.to_string())
            .env(RANK, rank.to_string())
            .env(LOCAL_RANK, local.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env(MASTER_ADDR, &master_addr)
            .env(MASTER_PORT, master_port.to_string());
        if let Some(secret) = &secret {
            command.env(RDZV_SECRET, secret);
        }
        if devices.is_cpu() && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // CPU ranks share the cores instead of each taking all of them.
            command.env("RAYON_NUM_THREADS", (threads / nproc).max(1).to_string());
        }
        match command.spawn() {
            Ok(child) => ranks.push((rank, child)),
            Err(e) => {
                for (_, child) in &mut ranks {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e).with_context(|| format!("cannot start rank {rank}"));
            }
        }
    }
    watch(ranks, &interrupted, after_failure)
}

/// Waits for the ranks; see [`supervise`].
fn watch(mut ranks: Vec<(usize, Child)>, interrupted: &AtomicBool, after_failure: &str) -> Result<()> {
    const GRACE: Duration = Duration::from_secs(3);
    // Each rank's exit, and whether the launcher killed it.
    let mut exits: Vec<(usize, ExitStatus, bool)> = Vec::new();
    let mut first_failure: Option<(usize, ExitStatus, Instant)> = None;
    let mut forwarded = false;
    while !ranks.is_empty() {
        if interrupted.load(Ordering::SeqCst) && !forwarded {
            forwarded = true;
            for (_, child) in &ranks {
                // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            }
        }
        let mut still = Vec::with_capacity(ranks.len());
        for (rank, mut child) in ranks {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && first_failure.is_none() {
                        first_failure = Some((rank, status, Instant::now()));
                    }
                    exits.push((rank, status, false));
                }
                Ok(None) => still.push((rank, child)),
                Err(e) => return Err(e).with_context(|| format!("cannot watch rank {rank}")),
            }
        }
        ranks = still;
        if let Some((_, _, when)) = first_failure {
            if when.elapsed() > GRACE && !interrupted.load(Ordering::SeqCst) {
                for (rank, child) in &mut ranks {
                    let _ = child.kill();
                    if let Ok(status) = child.wait() {
                        exits.push((*rank, status, true));
                    }
                }
                ranks.clear();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some((first, first_status, _)) = first_failure else { return Ok(()) };
    if first_status.code() == Some(130) && exits.iter().all(|(_, s, _)| s.code() == Some(130)) {
        return Err(RanksExited(130).into());
    }
    exits.sort_by_key(|(rank, _, _)| *rank);
    // A rank killed by a signal (not by the launcher) is the cause; the others only noticed it
    // is gone, and may have exited first.
    use std::os::unix::process::ExitStatusExt;
    let (rank, status) = exits
        .iter()
        .find(|(_, s, by_launcher)| !by_launcher && s.signal().is_some())
        .map_or((first, first_status), |(r, s, _)| (*r, *s));
    let all: Vec<String> = exits
        .iter()
        .map(|(r, s, by_launcher)| {
            format!("rank {r}: {}{}", describe(*s), if *by_launcher { " (stopped by the launcher)" } else { "" })
        })
        .collect();
    bail!(
        "rank {rank} failed ({}); the run stopped on every rank ({}). {after_failure}",
        describe(status),
        all.join(", ")
    )
}
