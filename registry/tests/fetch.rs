//! A Rust program fetches a registry model through the library, against a local stand-in of
//! the Hugging Face Hub: found by listing, verified, cached, served offline afterwards, and a
//! damaged transfer refused.

use std::collections::HashMap;

use maskdit_registry::{fetch, DownloadProgress, Error, ModelWeights, Registry};
use maskdit_tests::hub_standin::{answer, serve, Answer};
use maskdit_tests::Scratch;
use sha2::{Digest, Sha256};

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts what the library reports.
#[derive(Default)]
struct Counted {
    starts: usize,
    bytes: u64,
    finishes: usize,
}

impl DownloadProgress for Counted {
    fn start(&mut self, _: &str, done: u64, _: Option<u64>) {
        self.starts += 1;
        self.bytes += done;
    }
    fn advance(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
    fn finish(&mut self) {
        self.finishes += 1;
    }
}

#[test]
fn a_registry_model_is_fetched_verified_and_then_served_offline() {
    let good: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let damaged: Vec<u8> = good.iter().map(|b| b ^ 1).collect();
    let good_sha = hex_sha256(&good);
    let (good_route, damaged_route) = (good.clone(), damaged.clone());
    let served = serve(move |_| {
        let listing = |path: &str, sha: &str, size: usize| {
            serde_json::json!([{"type": "file", "path": path, "size": size, "lfs": {"oid": sha}}]).to_string()
        };
        let mut routes: HashMap<String, Answer> = HashMap::new();
        routes.insert(
            "/api/models/org/repo/tree/main?recursive=true".into(),
            answer(200, listing("weights/model.pt", &hex_sha256(&good_route), good_route.len()).into_bytes()),
        );
        routes.insert("/org/repo/resolve/main/weights/model.pt".into(), answer(200, good_route));
        // A repository whose file does not hash to what its listing says.
        routes.insert(
            "/api/models/org/damaged/tree/main?recursive=true".into(),
            answer(200, listing("model.pt", &good_sha, damaged_route.len()).into_bytes()),
        );
        routes.insert("/org/damaged/resolve/main/model.pt".into(), answer(200, damaged_route));
        routes
    });
    let home = Scratch::new("registry-fetch");
    // This test binary holds this one test, so the process environment is its own.
    std::env::set_var("HF_HOME", home.join("hf"));
    std::env::set_var("HF_ENDPOINT", &served);
    std::env::set_var("HF_HUB_OFFLINE", "0");
    std::env::remove_var("HF_TOKEN");
    let registry = Registry::parse(
        "default_model = \"tiny\"\n\n\
         [models.tiny]\ndescription = \"test\"\nrepo = \"org/repo\"\nfile = \"model.pt\"\nresolution = 8\nsteps = 2\ncfg = 1.0\n\n\
         [models.damaged]\ndescription = \"test\"\nrepo = \"org/damaged\"\nfile = \"model.pt\"\nresolution = 8\nsteps = 2\ncfg = 1.0\n\n\
         [vaes]\n",
    )
    .unwrap();

    let mut progress = Counted::default();
    let ModelWeights::File(path) =
        fetch::model_weights("tiny", registry.model("tiny").unwrap(), &mut progress).unwrap()
    else {
        panic!("a Hub model resolved to embedded weights")
    };
    assert_eq!(std::fs::read(&path).unwrap(), good, "the fetched file");
    assert!(path.starts_with(home.join("hf/hub/models--org--repo/snapshots")), "{}", path.display());
    assert_eq!((progress.starts, progress.bytes, progress.finishes), (1, good.len() as u64, 1));

    std::env::set_var("HF_HUB_OFFLINE", "1");
    let again = fetch::fetch_model("tiny", registry.model("tiny").unwrap(), &mut Counted::default()).unwrap();
    assert_eq!(again, path, "offline, the verified cached copy");
    let err = fetch::fetch_model("damaged", registry.model("damaged").unwrap(), &mut Counted::default()).unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");

    std::env::set_var("HF_HUB_OFFLINE", "0");
    let err = fetch::fetch_model("damaged", registry.model("damaged").unwrap(), &mut Counted::default()).unwrap_err();
    let Error::AllSourcesFailed { failures, .. } = &err else { panic!("{err}") };
    assert!(failures[0].contains("SHA-256"), "{err}");
    assert!(err.to_string().contains("`damaged` (model.pt)"), "{err}");
    assert!(!home.join("hf/hub/models--org--damaged/snapshots").exists(), "a damaged file was cached");

    let err = registry.model("tinny").unwrap_err();
    assert!(matches!(&err, Error::Unknown { suggestions, .. } if suggestions[0] == "tiny"), "{err}");
    let embedded = Registry::builtin().unwrap();
    let name = embedded.default_model.clone();
    let weights = fetch::model_weights(&name, embedded.model(&name).unwrap(), &mut Counted::default()).unwrap();
    assert!(matches!(weights, ModelWeights::Embedded(bytes) if bytes == maskdit_registry::EMBEDDED_MNIST));
}
