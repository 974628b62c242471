//! A hostile Hub stand-in: listings, headers and bodies that try to write outside the cache,
//! loop forever, send the token elsewhere or fill the disk. Every fetch must fail with an
//! error, touch nothing outside `HF_HOME` and never send the token off the endpoint's server.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use maskdit_registry::{fetch, Error, Quiet, Registry};
use maskdit_tests::hub_standin::{answer, serve, Answer};
use maskdit_tests::Scratch;
use sha2::{Digest, Sha256};

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A server on another port that only counts the connections it receives.
fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (base, count)
}

fn listing(path: &str, oid: &str, size: usize) -> Vec<u8> {
    serde_json::json!([{"type": "file", "path": path, "size": size, "lfs": {"oid": oid}}]).to_string().into_bytes()
}

/// Every file under `root`, relative.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_hostile_hub_cannot_write_outside_the_cache_loop_or_take_the_token() {
    let body: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let sha = hex_sha256(&body);
    let (elsewhere, elsewhere_hits) = counting_server();
    let served_body = body.clone();
    let served = serve(move |base| {
        let tree = |repo: &str| format!("/api/models/org/{repo}/tree/main?recursive=true");
        let resolve = |repo: &str, path: &str| format!("/org/{repo}/resolve/main/{path}");
        let mut routes: HashMap<String, Answer> = HashMap::new();
        // A path that climbs out of the snapshot folder to the test's `outside` folder.
        let climb = "../../../../../outside/model.pt";
        routes.insert(tree("climb"), answer(200, listing(climb, &sha, body.len())));
        routes.insert(resolve("climb", climb), answer(200, served_body.clone()));
        routes.insert(tree("absolute"), answer(200, listing("/tmp/maskdit-pwned.pt", &sha, body.len())));
        // An object id that is a path, not a SHA-256.
        routes.insert(tree("oid"), answer(200, listing("model.pt", "../../../outside/blob", body.len())));
        // A commit header that climbs out of `snapshots`.
        routes.insert(tree("commit"), answer(200, listing("model.pt", &sha, body.len())));
        let mut climbing_commit = answer(200, served_body.clone());
        climbing_commit.headers.push(("X-Repo-Commit".into(), "../../../../outside".into()));
        routes.insert(resolve("commit", "model.pt"), climbing_commit);
        // A listing whose next page is itself.
        let mut looping = answer(200, b"[]".to_vec());
        looping.headers.push(("Link".into(), format!("<{base}{}>; rel=\"next\"", tree("loop"))));
        routes.insert(tree("loop"), looping);
        // A listing whose next page is on another server (which would receive the token).
        let mut away = answer(200, b"[]".to_vec());
        away.headers.push(("Link".into(), format!("<{elsewhere}/api/next>; rel=\"next\"")));
        routes.insert(tree("away"), away);
        // A body far longer than the listed size.
        routes.insert(tree("long"), answer(200, listing("model.pt", &sha, body.len())));
        routes.insert(resolve("long", "model.pt"), answer(200, served_body.repeat(64)));
        routes
    });
    let home = Scratch::new("hostile-hub");
    std::fs::create_dir_all(home.join("outside")).unwrap();
    // This test binary holds this one test, so the process environment is its own.
    std::env::set_var("HF_HOME", home.join("hf"));
    std::env::set_var("HF_ENDPOINT", &served);
    std::env::set_var("HF_HUB_OFFLINE", "0");
    std::env::set_var("HF_TOKEN", "hf_secret_token");
    let entries: String = ["climb", "absolute", "oid", "commit", "loop", "away", "long"]
        .iter()
        .map(|repo| {
            format!(
                "[models.{repo}]\ndescription = \"t\"\nrepo = \"org/{repo}\"\nfile = \"model.pt\"\n\
                 resolution = 8\nsteps = 2\ncfg = 1.0\n\n"
            )
        })
        .collect();
    let registry = Registry::parse(&format!("default_model = \"climb\"\n\n{entries}[vaes]\n")).unwrap();

    let failure = |repo: &str| -> String {
        let err = fetch::fetch_model(repo, registry.model(repo).unwrap(), &mut Quiet).unwrap_err();
        let Error::AllSourcesFailed { failures, .. } = &err else { panic!("{repo}: {err}") };
        assert!(!err.to_string().contains("hf_secret_token"), "{err}");
        failures.join("\n")
    };
    assert!(failure("climb").contains("leaves the repository"));
    assert!(failure("absolute").contains("not a relative path"));
    assert!(failure("oid").contains("not 64 hexadecimal digits"));
    assert!(failure("commit").contains("not 40 hexadecimal digits"));
    assert!(failure("loop").contains("does not end"));
    assert!(failure("away").contains("not on"));
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "a request (with the token) went to another server");
    assert!(failure("long").contains("more than the 4096 bytes"));

    assert!(files_under(&home.join("outside")).is_empty(), "{:?}", files_under(&home.join("outside")));
    assert!(!Path::new("/tmp/maskdit-pwned.pt").exists());
    let cached = files_under(&home.join("hf"));
    assert!(
        cached.iter().all(|f| !f.ends_with(".pt") && !f.contains("snapshots")),
        "a refused file stayed in the cache: {cached:?}"
    );

    // A token that would inject a header is refused without being repeated.
    std::env::set_var("HF_TOKEN", "hf_secret_token\r\nX-Injected: 1");
    let err = fetch::fetch_model("commit", registry.model("commit").unwrap(), &mut Quiet).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HF_TOKEN") && !text.contains("hf_secret"), "{text}");
}
