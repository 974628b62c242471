//! `maskdit serve` end to end on a loopback port: the page, the API, images byte-equal to
//! `maskdit generate`'s for the same settings, bad requests answered 4xx with a message,
//! cancel, the gallery kept across restarts, class search on a 1000-class model with
//! ImageNet's names.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maskdit_tests::Scratch;

mod common;
use common::{ok, s};

/// A `maskdit serve` process, killed when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `maskdit serve --port 0 args` and reads the address it prints.
fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_maskdit"))
        .args(["serve", "--port", "0"])
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start maskdit serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut said = String::new();
    let base = loop {
        let Some(Ok(line)) = lines.next() else { panic!("maskdit serve ended before serving:\n{said}") };
        said.push_str(&line);
        said.push('\n');
        if let Some(at) = line.find("http://") {
            let url = line[at..].split_whitespace().next().unwrap().trim_end_matches('/');
            break url.split("/?").next().unwrap().to_string();
        }
    };
    // Keep draining stderr so that the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Served { child, base }
}

fn get(url: &str) -> (u16, Vec<u8>) {
    match ureq::get(url).call() {
        Ok(response) => {
            let status = response.status();
            let mut bytes = Vec::new();
            response.into_reader().read_to_end(&mut bytes).unwrap();
            (status, bytes)
        }
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap_or_default().into_bytes()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn get_json(url: &str) -> serde_json::Value {
    let (status, bytes) = get(url);
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

/// POSTs `body` (raw text) and returns the status and the answer's JSON.
fn post(url: &str, body: &str) -> (u16, serde_json::Value) {
    let answer = ureq::post(url).set("Content-Type", "application/json").send_string(body);
    let (status, text) = match answer {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(status, r)) => (status, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{url}: {e}"),
    };
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Sends a raw HTTP request (to set `Host` and `Origin` as a browser elsewhere would) and
/// returns the status.
fn raw_status(base: &str, request: &str) -> u16 {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Polls job `id` until it is no longer queued or running.
fn finish(base: &str, id: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let job = get_json(&format!("{base}/api/jobs/{id}"));
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "job {id} never finished: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_page_makes_the_images_generate_makes_and_refuses_what_it_should() {
    let dir = Scratch::new("serve");
    let gallery = dir.join("gallery");
    let server = serve(&["--out", s(&gallery)]);
    let base = server.base.clone();

    let (status, page) = get(&format!("{base}/"));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>maskdit</title>"));
    let models = get_json(&format!("{base}/api/models"));
    assert_eq!(models[0]["name"], "mnist");
    assert_eq!(models[0]["classes"], 10);
    let found = get_json(&format!("{base}/api/classes?q=7"));
    assert!(found.as_array().unwrap().iter().any(|c| c["index"] == 7), "{found}");

    // Digit 7, seeds 5 and 6: the gallery's PNGs are byte for byte what generate writes.
    let (status, job) = post(&format!("{base}/api/jobs"), r#"{"class": 7, "seed": 5, "count": 2, "steps": 6}"#);
    assert_eq!(status, 202, "{job}");
    let job = finish(&base, job["id"].as_str().unwrap());
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!((job["done"].as_u64(), job["total"].as_u64()), (Some(6), Some(6)));
    let (status, preview) = get(&format!("{base}/api/jobs/{}/preview.png", job["id"].as_str().unwrap()));
    assert!(status == 200 && preview.starts_with(b"\x89PNG"), "preview");
    let command: Vec<String> = job["command"].as_str().unwrap().split(' ').map(str::to_string).collect();
    assert_eq!(command[..2], ["maskdit", "generate"], "{command:?}");
    let out = dir.join("generated");
    let mut args: Vec<&str> = command[1..command.len() - 1].iter().map(String::as_str).collect();
    args.push(s(&out));
    ok(&args);
    let images = job["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (name, seed) in images.iter().zip([5, 6]) {
        let (status, served) = get(&format!("{base}/images/{}", name.as_str().unwrap()));
        assert_eq!(status, 200);
        let written = std::fs::read(out.join(format!("{seed:06}.png"))).unwrap();
        assert!(served == written, "seed {seed}: the served image differs from generate's");
    }

    // Bad requests: 4xx with a message naming the limit; the server goes on.
    let jobs = format!("{base}/api/jobs");
    for (body, says) in [
        (r#"{"count": 17}"#, "16"),
        (r#"{"steps": 5000}"#, "1000"),
        (r#"{"class": 12}"#, "out of range"),
        (r#"{"class": "seven"}"#, "class"),
        (r#"{"guidance": 1e9}"#, "guidance"),
        (r#"{"model": "/etc/passwd"}"#, "unknown model"),
        (r#"{"bogus": 1}"#, "unknown field"),
        ("not json", "JSON"),
    ] {
        let (status, answer) = post(&jobs, body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(says)), "{body}: {answer}");
    }
    let (status, _) = post(&jobs, &format!(r#"{{"class": "{}"}}"#, "x".repeat(20_000)));
    assert_eq!(status, 413, "a body over the limit");
    assert_eq!(get(&format!("{base}/images/..%2Fgallery.json")).0, 404);
    assert_eq!(get(&format!("{base}/api/jobs/nope")).0, 404);
    let port = base.rsplit(':').next().unwrap();
    let rebinding = format!("GET /api/models HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&base, &rebinding), 403, "a request by another name (DNS rebinding)");
    let cross_site = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nContent-Type: \
         application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    assert_eq!(raw_status(&base, &cross_site), 403, "a cross-site request");

    // Cancel stops a long request between steps.
    let (status, long) = post(&jobs, r#"{"count": 16, "steps": 1000}"#);
    assert_eq!(status, 202, "{long}");
    let id = long["id"].as_str().unwrap().to_string();
    let (status, _) = post(&format!("{base}/api/jobs/{id}/cancel"), "");
    assert_eq!(status, 200);
    assert_eq!(finish(&base, &id)["status"], "cancelled");

    // The port is taken: a clear error.
    let taken = Command::new(env!("CARGO_BIN_EXE_maskdit"))
        .args(["serve", "--port", port, "--out", s(&gallery)])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&taken.stderr);
    assert!(!taken.status.success() && err.contains("--port"), "{err}");
    drop(server);

    // After a restart the gallery is still there.
    let again = serve(&["--out", s(&gallery)]);
    let records = get_json(&format!("{}/api/gallery", again.base));
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
    assert_eq!(records[0]["images"], job["images"]);
}

#[test]
fn a_thousand_class_model_is_searched_by_imagenet_names() {
    let dir = Scratch::new("serve-imagenet");
    let model = dir.join("stand-in.safetensors");
    write_thousand_class_model(&model);
    let server = serve(&["--model", s(&model), "--out", s(&dir.join("gallery"))]);
    let base = &server.base;
    let models = get_json(&format!("{base}/api/models"));
    assert_eq!((models[0]["name"].as_str(), models[0]["classes"].as_u64()), (Some("stand-in"), Some(1000)));
    let golden = get_json(&format!("{base}/api/classes?q=golden%20retriever"));
    assert_eq!(golden[0]["index"], 207, "{golden}");
    let cranes = get_json(&format!("{base}/api/classes?q=crane"));
    let indices: Vec<u64> = cranes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "crane")
        .filter_map(|c| c["index"].as_u64())
        .collect();
    assert_eq!(indices, [134, 517], "{cranes}");
    let (status, answer) = post(&format!("{base}/api/jobs"), r#"{"class": "crane"}"#);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(status == 400 && error.contains("134") && error.contains("517"), "{answer}");
}

/// A 1000-class model of the embedded model's size, freshly initialised, in a weights file
/// that records its architecture.
fn write_thousand_class_model(path: &Path) {
    let device = candle_core::Device::Cpu;
    let embedded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/assets/mnist.safetensors");
    let mut config = maskdit::weights::read_config(&embedded).unwrap().unwrap();
    config.num_classes = 1000;
    let mut rng = <rand_chacha::ChaCha12Rng as rand::SeedableRng>::seed_from_u64(7);
    let weights = maskdit::init::reference_weights(&config, &mut rng, &device).unwrap();
    maskdit::weights::save_model(&weights, &config, &[], path).unwrap();
}
