//! Downloads against a local stand-in of the Hugging Face Hub and of a mirror: files found by
//! listing the repository, verified before they are cached, fallbacks after a refusal, offline
//! runs served from the verified cache.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use maskdit_tests::hub_standin::{answer, serve, Answer};
use maskdit_tests::Scratch;
use sha2::{Digest, Sha256};

/// The bytes of the one good checkpoint.
fn good_bytes() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn registry(dir: &Path) -> std::path::PathBuf {
    let entry = |name: &str, repo: &str, file: &str, mirrors: &str| {
        format!(
            "[models.{name}]\ndescription = \"test\"\nrepo = \"{repo}\"\nfile = \"{file}\"\nresolution = 8\nsteps = 2\n\
             cfg = 1.0\nmirrors = [{mirrors}]\n\n"
        )
    };
    let mut text = String::from("default_model = \"good\"\n\n");
    text += &entry("good", "org/repo", "good.pt", "");
    text += &entry("cut", "org/repo", "cut.pt", "");
    text += &entry("wrong", "org/repo", "wrong.pt", "");
    text += &entry("fallback", "refused/repo", "good.pt", "\"https://mirror.example.org/maskdit/checkpoints/good.pt\"");
    text += "[vaes]\n\n[datasets.latents]\ndescription = \"test\"\nrepo = \"org/data\"\nfolder_contains = \"256\"\n\
             files = [\"data.mdb\", \"lock.mdb\"]\nchannels = 4\nresolution = 8\n";
    let path = dir.join("registry.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs maskdit with the Hub and every mirror at `served`, the registry file `registry` and
/// the cache under `home`.
fn run_against(served: &str, registry: &Path, home: &Path, args: &[&str], offline: bool) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskdit"))
        .args(args)
        .env("MASKDIT_REGISTRY", registry)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", served)
        .env("MASKDIT_MIRROR_BASE", served)
        .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

/// Everything a command printed.
fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn hub_routes(base: &str) -> HashMap<String, Answer> {
    let good = good_bytes();
    let listing = |entries: serde_json::Value| answer(200, entries.to_string().into_bytes());
    let lfs = |path: &str, bytes: &[u8]| serde_json::json!({"type": "file", "path": path, "size": bytes.len(), "lfs": {"oid": hex_sha256(bytes)}});
    let tree = "/api/models/org/repo/tree/main?recursive=true";
    let mut first_page = listing(serde_json::json!([
        {"type": "directory", "path": "checkpoints", "size": 0},
        lfs("checkpoints/good.pt", &good),
        {"type": "file", "path": "README.md", "size": 10},
    ]));
    first_page.headers.push(("Link".into(), format!("<{base}{tree}&cursor=2>; rel=\"next\"")));
    // Other contents than the good file's (blobs are shared by content).
    let (cut, listed) =
        (good.iter().map(|b| b ^ 2).collect::<Vec<u8>>(), good.iter().map(|b| b ^ 4).collect::<Vec<u8>>());
    let second_page = listing(serde_json::json!([lfs("checkpoints/cut.pt", &cut), lfs("other/wrong.pt", &listed)]));
    let file = |body: Vec<u8>, cut: bool| Answer {
        status: 200,
        headers: vec![
            ("X-Repo-Commit".into(), "0123abcd00000000000000000000000000000000".into()),
            ("ETag".into(), format!("\"{}\"", hex_sha256(&good))),
        ],
        body,
        cut,
    };
    HashMap::from([
        (tree.to_string(), first_page),
        (format!("{tree}&cursor=2"), second_page),
        ("/org/repo/resolve/main/checkpoints/good.pt".into(), file(good.clone(), false)),
        ("/org/repo/resolve/main/checkpoints/cut.pt".into(), file(cut, true)),
        ("/org/repo/resolve/main/other/wrong.pt".into(), file(good.iter().map(|b| b ^ 1).collect(), false)),
        ("/api/models/refused/repo/tree/main?recursive=true".into(), answer(403, b"forbidden".to_vec())),
        ("/maskdit/checkpoints/good.pt".into(), file(good.clone(), false)),
        (
            "/api/datasets/org/data/tree/main?recursive=true".into(),
            listing(serde_json::json!([
                lfs("imagenet_512_latent_lmdb/train/data.mdb", b"other"),
                lfs("imagenet_256_latent_lmdb/train/data.mdb", &good[..5000]),
                {"type": "file", "path": "imagenet_256_latent_lmdb/train/lock.mdb", "size": 3},
            ])),
        ),
        (
            "/datasets/org/data/resolve/main/imagenet_256_latent_lmdb/train/data.mdb".into(),
            file(good[..5000].to_vec(), false),
        ),
        (
            "/datasets/org/data/resolve/main/imagenet_256_latent_lmdb/train/lock.mdb".into(),
            file(b"abc".to_vec(), false),
        ),
    ])
}

#[test]
fn downloads_are_found_verified_and_never_cached_broken() {
    let dir = Scratch::new("hub");
    let served = serve(hub_routes);
    let registry = registry(&dir);
    let home = dir.join("hf-home");
    let run = |args: &[&str], offline: bool| run_against(&served, &registry, &home, args, offline);

    // Found in a subfolder on the second page of the listing, verified, cached.
    let got = run(&["download", "good"], false);
    assert!(got.status.success(), "{}", text(&got));
    let path = String::from_utf8_lossy(&got.stdout).trim().to_string();
    assert!(path.ends_with("snapshots/0123abcd00000000000000000000000000000000/checkpoints/good.pt"), "{path}");
    assert_eq!(std::fs::read(&path).unwrap(), good_bytes());
    // Offline, the verified cache serves it.
    let again = run(&["download", "good"], true);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), path);

    // A body cut short without a Content-Length: an error, and nothing an offline run takes.
    let cut = run(&["download", "cut"], false);
    assert!(!cut.status.success() && text(&cut).contains("broke off"), "{}", text(&cut));
    let cut_offline = run(&["download", "cut"], true);
    assert!(!cut_offline.status.success() && text(&cut_offline).contains("not in the cache"), "{}", text(&cut_offline));

    // Wrong bytes: an error naming the checksum; nothing kept.
    let wrong = run(&["download", "wrong"], false);
    assert!(!wrong.status.success() && text(&wrong).contains("SHA-256"), "{}", text(&wrong));

    // The Hub refuses (403): the mirror is tried and serves the file.
    let fallback = run(&["download", "fallback"], false);
    assert!(fallback.status.success(), "{}", text(&fallback));
    assert_eq!(std::fs::read(String::from_utf8_lossy(&fallback.stdout).trim()).unwrap(), good_bytes());

    // The latents: the LMDB folder found by listing the dataset repo, both files fetched.
    let latents = run(&["download", "latents"], false);
    assert!(latents.status.success(), "{}", text(&latents));
    let folder = std::path::PathBuf::from(String::from_utf8_lossy(&latents.stdout).trim());
    assert!(folder.ends_with("imagenet_256_latent_lmdb/train"), "{}", folder.display());
    assert_eq!(std::fs::read(folder.join("data.mdb")).unwrap(), &good_bytes()[..5000]);
    assert_eq!(std::fs::read(folder.join("lock.mdb")).unwrap(), b"abc");
    // `--data NAME` takes the cached folder (offline): its bytes are no LMDB, which is the error.
    let config = maskdit_tests::cases_of(maskdit_tests::CaseKind::Model)[0].join("config.json");
    let out = dir.join("run");
    let mut train = vec!["train", "--preset", "imagenet256-finetune", "--config", config.to_str().unwrap()];
    train.extend(["--data", "latents", "--out", out.to_str().unwrap()]);
    let trained = run(&train, true);
    assert!(!trained.status.success() && text(&trained).contains("LMDB"), "{}", text(&trained));
    // A dataset of other dimensions than the model's is refused by name.
    let wrong_size =
        run(&["train", "--preset", "mnist-pretrain", "--data", "latents", "--out", out.to_str().unwrap()], true);
    assert!(text(&wrong_size).contains("latents but the model takes"), "{}", text(&wrong_size));

    // A cached file damaged later is found out and not used.
    std::fs::write(std::fs::canonicalize(&path).unwrap(), b"damaged").unwrap();
    let damaged = run(&["download", "good"], true);
    assert!(!damaged.status.success() && text(&damaged).contains("not in the cache"), "{}", text(&damaged));
}

#[test]
fn the_official_checkpoint_is_found_wherever_the_repo_keeps_it() {
    let dir = Scratch::new("hub-official");
    let good = good_bytes();
    let served = serve(|_| {
        let file = |body: &[u8]| Answer {
            status: 200,
            headers: vec![("X-Repo-Commit".into(), "feedbeef00000000000000000000000000000000".into())],
            body: body.to_vec(),
            cut: false,
        };
        let tree = |entries: serde_json::Value| answer(200, entries.to_string().into_bytes());
        let (vae, config) = (vec![5u8; 1000], b"{}".to_vec());
        HashMap::from([
            (
                "/api/models/hzzheng/MaskDiT/tree/main?recursive=true".to_string(),
                tree(serde_json::json!([
                    {"type": "file", "path": "checkpoints/imagenet256-ckpt-best_with_guidance.pt", "size": good.len(),
                     "lfs": {"oid": hex_sha256(&good)}},
                    {"type": "file", "path": "code/train.py", "size": 4},
                ])),
            ),
            ("/hzzheng/MaskDiT/resolve/main/checkpoints/imagenet256-ckpt-best_with_guidance.pt".into(), file(&good)),
            (
                "/api/models/stabilityai/sd-vae-ft-mse/tree/main?recursive=true".to_string(),
                tree(serde_json::json!([
                    {"type": "file", "path": "diffusion_pytorch_model.safetensors", "size": vae.len(),
                     "lfs": {"oid": hex_sha256(&vae)}},
                    {"type": "file", "path": "config.json", "size": config.len()},
                ])),
            ),
            ("/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors".into(), file(&vae)),
            ("/stabilityai/sd-vae-ft-mse/resolve/main/config.json".into(), file(&config)),
        ])
    });
    let out = Command::new(env!("CARGO_BIN_EXE_maskdit"))
        .args(["download", "imagenet256-guidance"])
        .env("HF_HOME", dir.join("hf-home"))
        .env("HF_ENDPOINT", &served)
        .env("HF_HUB_OFFLINE", "0")
        .env_remove("MASKDIT_REGISTRY")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        path.ends_with(
            "models--hzzheng--MaskDiT/snapshots/feedbeef00000000000000000000000000000000/checkpoints/imagenet256-ckpt-best_with_guidance.pt"
        ),
        "{path}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert!(stderr.contains("diffusion_pytorch_model.safetensors"), "the VAE it pairs with: {stderr}");
}

#[test]
fn evaluator_weights_are_checked_by_their_published_checksum_prefix() {
    let dir = Scratch::new("hub-evaluator");
    let served = serve(|_| {
        let path = "/mseitzer/pytorch-fid/releases/download/fid_weights/weights.pth".to_string();
        HashMap::from([(path, answer(200, good_bytes()))])
    });
    let url = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/weights.pth";
    let prefix = &hex_sha256(&good_bytes())[..8];
    let entry = |name: &str, sha: &str| {
        format!("[evaluators.{name}]\ndescription = \"test\"\nurl = \"{url}\"\nfile = \"{name}.pth\"\nsha256 = \"{sha}\"\n\n")
    };
    let mut toml =
        String::from("default_model = \"mnist\"\n\n[models.mnist]\ndescription = \"test\"\nembedded = true\n");
    toml += "file = \"mnist.safetensors\"\nresolution = 28\nsteps = 2\ncfg = 1.0\n\n[vaes]\n\n";
    toml += &entry("inception-fid", prefix);
    toml += &entry("other", "deadbeef");
    let registry = dir.join("registry.toml");
    std::fs::write(&registry, toml).unwrap();
    let home = dir.join("hf-home");
    let run = |args: &[&str], offline: bool| run_against(&served, &registry, &home, args, offline);

    let got = run(&["download", "inception-fid"], false);
    assert!(got.status.success(), "{}", text(&got));
    let path = String::from_utf8_lossy(&got.stdout).trim().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), good_bytes());
    let listed = run(&["list"], true);
    assert!(text(&listed).contains("inception-fid") && text(&listed).contains("cached, verified"), "{}", text(&listed));

    // A file whose SHA-256 does not begin with the published digits is refused and not kept.
    let other = run(&["download", "other"], false);
    assert!(!other.status.success() && text(&other).contains("SHA-256"), "{}", text(&other));

    // `fid` without --inception takes the cached file (whose bytes are no network: that is the error).
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..2 {
        image::RgbImage::from_pixel(8, 8, image::Rgb([i * 100, 50, 50])).save(images.join(format!("{i}.png"))).unwrap();
    }
    let fid = run(&["fid", images.to_str().unwrap(), images.to_str().unwrap()], true);
    assert!(!fid.status.success() && text(&fid).contains(&path), "{}", text(&fid));
}
