//! Data parallel end to end on the CPU: N ranks train exactly like one rank with the global
//! batch, a stopped multi-rank run resumes exactly (on any number of ranks), torchrun-style
//! variables work without `--nproc`, and a rank that dies stops the run at once with the
//! last checkpoint intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use maskdit_tests::{relative_l2, Scratch};

mod common;
use common::s;

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist/digits.safetensors")
}

fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_maskdit"));
    command.env("HF_HUB_OFFLINE", "1");
    for name in ["WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"] {
        command.env_remove(name);
    }
    command
}

fn check(out: Output, what: &str) -> Output {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{err}");
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
    out
}

/// Trains `preset` into `out` with `extra` options.
fn train(preset: &str, out: &Path, extra: &[&str]) -> Output {
    let mut c = command();
    c.args(["train", "--preset", preset, "--data", s(&digits()), "--out", s(out), "--checkpoint-every", "2"]);
    check(c.args(extra).output().unwrap(), &format!("train {preset} {extra:?}"))
}

/// Every tensor of a training checkpoint (weights, EMA, AdamW moments).
fn tensors(run: &Path, step: u64) -> HashMap<String, Tensor> {
    let path = run.join(format!("checkpoints/{step:07}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The largest relative L2 difference over the tensors of two checkpoints (which must hold the
/// same names).
fn largest_difference(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    let mut worst_name = String::new();
    for (name, t) in a {
        let other = b.get(name).unwrap_or_else(|| panic!("{name} missing"));
        // In f64: AdamW's second moments of barely-used parameters are subnormal in f32.
        let d = relative_l2(other, t);
        if d > worst {
            worst = d;
            worst_name = name.clone();
        }
    }
    if worst > 0.0 {
        eprintln!("largest difference {worst:e} in {worst_name}");
    }
    worst
}

#[test]
fn two_ranks_train_like_one_rank_with_the_whole_batch() {
    let dir = Scratch::new("dp-equal");
    // The fine-tune recipe steps at full learning rate from the first step; the pretraining
    // recipe draws masks.
    for preset in ["mnist-finetune", "mnist-pretrain"] {
        let one = dir.join(format!("{preset}-one"));
        let two = dir.join(format!("{preset}-two"));
        let accum = dir.join(format!("{preset}-accum"));
        train(preset, &one, &["--steps", "4", "--batch", "8"]);
        train(preset, &two, &["--steps", "4", "--batch", "8", "--nproc", "2"]);
        train(preset, &accum, &["--steps", "4", "--batch", "8", "--grad-accum", "4"]);
        let reference = tensors(&one, 4);
        let two_ranks = largest_difference(&reference, &tensors(&two, 4));
        let accumulated = largest_difference(&reference, &tensors(&accum, 4));
        assert!(two_ranks <= 1e-5, "{preset}: 2 ranks differ from 1 by {two_ranks:e}");
        assert!(accumulated <= 1e-5, "{preset}: 4 micro-batches differ from 1 by {accumulated:e}");
        // The weights did move: the comparison is not between two copies of the start.
        let first = tensors(&one, 2);
        assert!(largest_difference(&first, &reference) > 1e-4, "{preset}: training did not change the weights");
        let log = |run: &Path| std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count();
        assert_eq!((log(&one), log(&two)), (4, 4), "only rank 0 logs");
    }
}

#[test]
fn a_stopped_two_rank_run_resumes_exactly_on_two_ranks_or_one() {
    let dir = Scratch::new("dp-resume");
    let whole = dir.join("whole");
    // The uninterrupted run, started the way torchrun or srun would: one process per rank with
    // the torchrun variables, no --nproc.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            command()
                .args(["train", "--preset", "mnist-pretrain", "--data", s(&digits()), "--out", s(&whole)])
                .args(["--steps", "4", "--batch", "8", "--checkpoint-every", "2"])
                .env("WORLD_SIZE", "2")
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                // As --nproc 2 does on two cores: equal threads, equal round-off.
                .env("RAYON_NUM_THREADS", "1")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in ranks {
        check(child.wait_with_output().unwrap(), "a torchrun-style rank");
    }
    let stopped = dir.join("stopped");
    train("mnist-pretrain", &stopped, &["--steps", "2", "--batch", "8", "--nproc", "2"]);
    let again = dir.join("again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::create_dir_all(again.join("checkpoints")).unwrap();
    std::fs::copy(stopped.join("checkpoints/0000002.safetensors"), again.join("checkpoints/0000002.safetensors"))
        .unwrap();
    train("mnist-pretrain", &stopped, &["--steps", "4", "--batch", "8", "--nproc", "2", "--resume"]);
    train("mnist-pretrain", &again, &["--steps", "4", "--batch", "8", "--resume"]);
    let reference = tensors(&whole, 4);
    let resumed = largest_difference(&reference, &tensors(&stopped, 4));
    assert_eq!(resumed, 0.0, "2 ranks resumed on 2 differ from the uninterrupted run");
    let fewer = largest_difference(&reference, &tensors(&again, 4));
    assert!(fewer <= 1e-5, "2 ranks resumed on 1 differ by {fewer:e}");
}

/// The children of process `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the parenthesised name: state, ppid, …
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// The value of `name` in process `pid`'s environment.
fn environment_of(pid: u32, name: &str) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    bytes.split(|&b| b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry.strip_prefix(&prefix).map(str::to_string)
    })
}

#[test]
fn a_killed_rank_stops_the_run_within_seconds_and_the_last_checkpoint_resumes() {
    let dir = Scratch::new("dp-kill");
    let run = dir.join("run");
    let launcher = command()
        .args(["train", "--preset", "mnist-pretrain", "--data", s(&digits()), "--out", s(&run)])
        .args(["--steps", "100000", "--batch", "4", "--checkpoint-every", "1", "--nproc", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !run.join("checkpoints/0000002.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "training did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = children_of(launcher.id());
    let victim = *ranks
        .iter()
        .find(|&&pid| environment_of(pid, "RANK").as_deref() == Some("1"))
        .unwrap_or_else(|| panic!("no rank 1 among the launcher's children {ranks:?}"));
    // SAFETY: kill has no memory preconditions; the pid is a live child of our own child.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let out = launcher.wait_with_output().unwrap();
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_secs(10), "the launcher took {took:?} to stop");
    assert!(err.contains("rank 1 failed (killed by signal 9)") && err.contains("--resume"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Whatever checkpoint is last resumes (written whole, never half).
    let mut saved: Vec<PathBuf> =
        std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    saved.sort();
    let last = saved.last().unwrap();
    let step: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert!(saved.iter().all(|p| p.extension().is_some_and(|e| e == "safetensors")), "{saved:?}");
    train("mnist-pretrain", &run, &["--steps", &(step + 1).to_string(), "--batch", "4", "--resume"]);
}

#[test]
fn a_batch_that_does_not_split_over_the_ranks_is_refused() {
    let dir = Scratch::new("dp-split");
    let out = command()
        .args(["train", "--preset", "mnist-pretrain", "--data", s(&digits()), "--out", s(&dir.join("run"))])
        .args(["--steps", "1", "--batch", "3", "--nproc", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not split over 2 ranks") && err.contains("rank 0 failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn two_ranks_generate_the_images_of_one_process_and_rank_0_packs_them() {
    let dir = Scratch::new("dp-generate");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut c = command();
        c.args(["generate", "--seeds", "0-6", "--steps", "4", "--batch", "2", "--out", s(&out)]);
        c.args(["--grid", s(&dir.join(format!("{name}.png"))), "--npz", s(&dir.join(format!("{name}.npz")))]);
        check(c.args(extra).output().unwrap(), &format!("generate {extra:?}"));
        out
    };
    let one = run("one", &[]);
    let two = run("two", &["--nproc", "2"]);
    let files = |dir: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(files(&one).len(), 7);
    assert_eq!(files(&one), files(&two));
    for name in files(&one) {
        assert_eq!(std::fs::read(one.join(&name)).unwrap(), std::fs::read(two.join(&name)).unwrap(), "{name}");
    }
    for packed in ["png", "npz"] {
        let (a, b) = (dir.join(format!("one.{packed}")), dir.join(format!("two.{packed}")));
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "the {packed} differs");
    }
    let out = command()
        .args(["generate", "--seeds", "0-3", "--shard", "0/2", "--nproc", "2", "--out", s(&dir.join("x"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--shard and ranks"), "{err}");
}

#[test]
fn two_nodes_of_one_rank_each_train_like_one_rank() {
    let dir = Scratch::new("dp-nodes");
    let one = dir.join("one");
    train("mnist-finetune", &one, &["--steps", "2", "--batch", "8"]);
    let nodes = dir.join("nodes");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let launchers: Vec<_> = ["1", "0"]
        .iter()
        .map(|node| {
            command()
                .args(["train", "--preset", "mnist-finetune", "--data", s(&digits()), "--out", s(&nodes)])
                .args(["--steps", "2", "--batch", "8", "--checkpoint-every", "2", "--nnodes", "2", "--node-rank", node])
                .args(["--master-addr", "127.0.0.1", "--master-port", &port])
                .env("RAYON_NUM_THREADS", "1")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for launcher in launchers {
        check(launcher.wait_with_output().unwrap(), "a node's launcher");
    }
    let difference = largest_difference(&tensors(&one, 2), &tensors(&nodes, 2));
    assert!(difference <= 1e-5, "2 nodes differ from 1 rank by {difference:e}");
}
