//! A local stand-in for the Hugging Face Hub and for mirror hosts: fixed answers per path,
//! `Range` requests honoured, bodies cut short on request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// What the stand-in answers for a path: status, headers, body, and whether to cut the body
/// short (half of it, no Content-Length).
#[derive(Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Send half of the body and no Content-Length.
    pub cut: bool,
}

/// A plain answer: `status` with `body`.
pub fn answer(status: u16, body: Vec<u8>) -> Answer {
    Answer { status, headers: Vec::new(), body, cut: false }
}

/// Serves the routes `build` makes for the server's address (path with query → answer) on a
/// local port until the test ends; honours `Range: bytes=N-` on 200 answers.
pub fn serve(build: impl FnOnce(&str) -> HashMap<String, Answer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes = build(&base);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            handle(stream, &routes);
        }
    });
    base
}

/// Answers one request.
fn handle(mut stream: std::net::TcpStream, routes: &HashMap<String, Answer>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range_start = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.to_lowercase().strip_prefix("range: bytes=") {
            range_start = value.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let Some(a) = routes.get(&path) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let (status, body) = if a.status == 200 && range_start > 0 && range_start <= a.body.len() {
        (206, &a.body[range_start..])
    } else {
        (a.status, &a.body[..])
    };
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = if a.cut {
        head.push_str("\r\n");
        &body[..body.len() / 2]
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        body
    };
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).and_then(|()| stream.flush());
}
