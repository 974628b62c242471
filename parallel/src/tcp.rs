//! Rendezvous and collectives over TCP: rank 0 listens at `MASTER_ADDR:MASTER_PORT`, every
//! other rank connects to it. Sums gather at rank 0, add up in rank order (so every run adds
//! in the same order) and go back out; slow next to NCCL, but needs nothing besides sockets,
//! works between CPU processes and machines, and carries NCCL's unique id at start-up.
//!
//! Joining: rank 0 greets each connection with a fresh random challenge; the rank answers with
//! its world size, its rank and an HMAC-SHA256 of all three under the run's secret
//! ([`World::secret`]; empty without one). Connections that answer wrongly, late, for a
//! rank already taken or without the secret are refused and dropped; rank 0 keeps listening
//! until every rank has joined or the rendezvous time is over.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::{Collective, Error, Result, World};

const MAGIC: &[u8; 8] = b"MASKDIT2";
const ACCEPTED: u32 = 0;
const REFUSED: u32 = 1;
/// Bytes of rank 0's challenge.
const CHALLENGE: usize = 32;
/// Bytes of a rank's proof (HMAC-SHA256).
const PROOF: usize = 32;
/// How long a new connection has to answer the challenge.
const GREETING_TIME: Duration = Duration::from_secs(5);

type Hmac = hmac::Hmac<sha2::Sha256>;

/// The MAC of a greeting: challenge, world size and rank under `secret`.
fn greeting_mac(secret: Option<&str>, challenge: &[u8], size: u32, rank: u32) -> Hmac {
    use hmac::Mac;
    let mut mac = Hmac::new_from_slice(secret.unwrap_or("").as_bytes()).expect("HMAC takes keys of any length");
    mac.update(challenge);
    mac.update(&size.to_le_bytes());
    mac.update(&rank.to_le_bytes());
    mac
}

/// Ranks joined over TCP (a star around rank 0).
#[derive(Debug)]
pub struct TcpGroup {
    rank: usize,
    size: usize,
    /// Rank 0: the streams of ranks 1..size in rank order; other ranks: the stream to rank 0.
    peers: Vec<TcpStream>,
    timeout: Duration,
}

/// Maps a socket error while talking to `rank` to a lost peer or a timeout.
fn peer_error(rank: usize, timeout: Duration, err: std::io::Error) -> Error {
    match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Timeout { rank, seconds: timeout.as_secs() },
        _ => Error::PeerLost { rank, reason: err.to_string() },
    }
}

fn read_u32(stream: &mut TcpStream) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    stream.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(stream: &mut TcpStream) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    stream.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a length-prefixed frame of at most `limit` bytes.
fn read_frame(stream: &mut TcpStream, limit: usize) -> std::io::Result<Vec<u8>> {
    let len = read_u64(stream)?;
    if len > limit as u64 {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("frame of {len} bytes, expected ≤ {limit}")));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(bytes.len() as u64).to_le_bytes())?;
    stream.write_all(bytes)?;
    stream.flush()
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

impl TcpGroup {
    /// Meets the other ranks of `world` at `MASTER_ADDR:MASTER_PORT`: rank 0 waits up to
    /// `rendezvous` for every other rank to connect, the others retry until it listens. Rank 0
    /// hands `payload` (e.g. an NCCL unique id) to every rank; every rank gets it back.
    /// Collectives wait at most `timeout` for a peer.
    pub fn join(world: &World, payload: &[u8], rendezvous: Duration, timeout: Duration) -> Result<(Self, Vec<u8>)> {
        let address = world.address();
        let fail = |reason: String| Error::Rendezvous { address: address.clone(), reason };
        let addrs: Vec<SocketAddr> = (world.master_addr.as_str(), world.master_port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve MASTER_ADDR: {e}")))?
            .collect();
        let target = *addrs.first().ok_or_else(|| fail("MASTER_ADDR resolves to no address".into()))?;
        let deadline = Instant::now() + rendezvous;
        let group = |peers| Self { rank: world.rank, size: world.size, peers, timeout };
        if world.size == 1 {
            return Ok((group(Vec::new()), payload.to_vec()));
        }
        if world.is_main() {
            let peers = accept_ranks(world, target, payload, deadline, timeout).map_err(fail)?;
            Ok((group(peers), payload.to_vec()))
        } else {
            let (stream, payload) = connect_to_main(world, target, deadline, timeout).map_err(fail)?;
            Ok((group(vec![stream]), payload))
        }
    }

    /// Ends the group's connections (the other ranks see this rank leave).
    pub fn close(self) {
        for stream in &self.peers {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// The sockets of this rank's peers (for a watch on their liveness).
    pub fn streams(&self) -> &[TcpStream] {
        &self.peers
    }

    fn peer_rank(&self, index: usize) -> usize {
        if self.rank == 0 {
            index + 1
        } else {
            0
        }
    }

    /// Sum (`combine`) or broadcast (no `combine`) of raw f32 values.
    fn exchange(&mut self, mut values: Vec<f32>, combine: bool) -> Result<Vec<f32>> {
        let limit = values.len() * 4;
        let timeout = self.timeout;
        if self.rank == 0 {
            if combine {
                for index in 0..self.peers.len() {
                    let rank = self.peer_rank(index);
                    let bytes = read_frame(&mut self.peers[index], limit).map_err(|e| peer_error(rank, timeout, e))?;
                    if bytes.len() != limit {
                        return Err(Error::Protocol(format!(
                            "rank {rank} sent {} values where this rank has {}",
                            bytes.len() / 4,
                            values.len()
                        )));
                    }
                    for (acc, v) in values.iter_mut().zip(from_bytes(&bytes)) {
                        *acc += v;
                    }
                }
            }
            let bytes = to_bytes(&values);
            for index in 0..self.peers.len() {
                let rank = self.peer_rank(index);
                write_frame(&mut self.peers[index], &bytes).map_err(|e| peer_error(rank, timeout, e))?;
            }
            Ok(values)
        } else {
            let stream = &mut self.peers[0];
            if combine {
                write_frame(stream, &to_bytes(&values)).map_err(|e| peer_error(0, timeout, e))?;
            }
            let bytes = read_frame(stream, limit).map_err(|e| peer_error(0, timeout, e))?;
            if bytes.len() != limit {
                return Err(Error::Protocol(format!(
                    "rank 0 sent {} values where this rank has {}",
                    bytes.len() / 4,
                    values.len()
                )));
            }
            values = from_bytes(&bytes);
            Ok(values)
        }
    }

    fn run(&mut self, values: &Tensor, combine: bool) -> Result<Tensor> {
        let device = values.device().clone();
        let host = values.flatten_all()?.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let n = host.len();
        let out = self.exchange(host, combine)?;
        Ok(Tensor::from_vec(out, n, &Device::Cpu)?.to_device(&device)?)
    }
}

impl Collective for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn sum(&mut self, values: &Tensor) -> Result<Tensor> {
        self.run(values, true)
    }

    fn broadcast(&mut self, values: &Tensor) -> Result<Tensor> {
        self.run(values, false)
    }
}

/// Rank 0's side: listens, accepts every other rank once, and answers each with `payload`.
fn accept_ranks(
    world: &World,
    target: SocketAddr,
    payload: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> std::result::Result<Vec<TcpStream>, String> {
    // Loopback stays loopback; any other address listens on every interface, as torchrun does.
    let bind = if target.ip().is_loopback() {
        target
    } else {
        SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), target.port())
    };
    let listener = TcpListener::bind(bind)
        .map_err(|e| format!("rank 0 cannot listen on {bind}: {e} (is MASTER_PORT taken by another run?)"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut peers: Vec<Option<TcpStream>> = (1..world.size).map(|_| None).collect();
    // What was refused, for the error should the real ranks never come.
    let mut refused: Vec<String> = Vec::new();
    while peers.iter().any(Option::is_none) {
        let (mut stream, from) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<String> = peers
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    let refusals = match refused.len() {
                        0 => String::new(),
                        n => format!(" ({n} connection(s) refused; the last: {})", refused[n - 1]),
                    };
                    return Err(format!("rank(s) {} never arrived{refusals}", missing.join(", ")));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(format!("accepting a rank failed: {e}")),
        };
        // A stray connection must not stall the start-up: a short limit for the greeting.
        let setup = |s: &mut TcpStream, challenge: &[u8]| -> std::io::Result<()> {
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(GREETING_TIME))?;
            s.set_write_timeout(Some(GREETING_TIME))?;
            s.write_all(MAGIC)?;
            s.write_all(challenge)?;
            s.flush()
        };
        let challenge: [u8; CHALLENGE] = rand::random();
        if setup(&mut stream, &challenge).is_err() {
            continue;
        }
        let mut magic = [0u8; 8];
        let mut proof = [0u8; PROOF];
        let greeting = stream.read_exact(&mut magic).and_then(|_| {
            let (size, rank) = (read_u32(&mut stream)?, read_u32(&mut stream)?);
            stream.read_exact(&mut proof)?;
            Ok((size, rank))
        });
        let Ok((size, rank)) = greeting else {
            refused.push(format!("a connection from {from} sent no greeting"));
            continue;
        };
        if &magic != MAGIC {
            refused.push(format!("a connection from {from} is not a maskdit rank"));
            continue;
        }
        let authentic = hmac::Mac::verify_slice(greeting_mac(world.secret.as_deref(), &challenge, size, rank), &proof);
        let (size, rank) = (size as usize, rank as usize);
        let refusal = if authentic.is_err() {
            Some(format!(
                "a process from {from} claiming rank {rank} does not know the run's secret ({})",
                crate::RDZV_SECRET
            ))
        } else if size != world.size {
            Some(format!("rank {rank} from {from} has WORLD_SIZE {size}, rank 0 has {}", world.size))
        } else if rank == 0 || rank >= world.size {
            Some(format!("a process from {from} claims rank {rank} of {}", world.size))
        } else if peers[rank - 1].is_some() {
            Some(format!("rank {rank} arrived twice (the second from {from})"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            let _ = reply(&mut stream, REFUSED, reason.as_bytes());
            refused.push(reason);
            continue;
        }
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        peers[rank - 1] = Some(stream);
    }
    let mut peers: Vec<TcpStream> = peers.into_iter().flatten().collect();
    for (index, stream) in peers.iter_mut().enumerate() {
        reply(stream, ACCEPTED, payload).map_err(|e| format!("rank {} left during start-up: {e}", index + 1))?;
    }
    Ok(peers)
}

fn reply(stream: &mut TcpStream, status: u32, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(MAGIC)?;
    stream.write_all(&status.to_le_bytes())?;
    write_frame(stream, payload)
}

/// Another rank's side: connects to rank 0 (retrying until `deadline`), greets it, and reads
/// the payload.
fn connect_to_main(
    world: &World,
    target: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> std::result::Result<(TcpStream, Vec<u8>), String> {
    let mut stream = loop {
        match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => return Err(format!("rank 0 never answered ({e})")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let io = |e: std::io::Error| format!("rank 0 dropped the connection during start-up: {e}");
    stream.set_nodelay(true).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // Rank 0 answers once every rank has arrived: wait for it as long as the rendezvous lasts.
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    let not_rank_0 = || "the process at MASTER_ADDR:MASTER_PORT is not a maskdit rank 0 of this version".to_string();
    let mut magic = [0u8; 8];
    let mut challenge = [0u8; CHALLENGE];
    stream.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(not_rank_0());
    }
    stream.read_exact(&mut challenge).map_err(io)?;
    let (size, rank) = (world.size as u32, world.rank as u32);
    let proof = hmac::Mac::finalize(greeting_mac(world.secret.as_deref(), &challenge, size, rank)).into_bytes();
    stream.write_all(MAGIC).map_err(io)?;
    stream.write_all(&size.to_le_bytes()).map_err(io)?;
    stream.write_all(&rank.to_le_bytes()).map_err(io)?;
    stream.write_all(&proof).map_err(io)?;
    stream.flush().map_err(io)?;
    stream.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(not_rank_0());
    }
    let status = read_u32(&mut stream).map_err(io)?;
    let payload = read_frame(&mut stream, 1 << 20).map_err(io)?;
    if status != ACCEPTED {
        return Err(format!("rank 0 refused this rank: {}", String::from_utf8_lossy(&payload)));
    }
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    Ok((stream, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn world(size: usize, rank: usize, port: u16) -> World {
        World { size, rank, local_rank: rank, master_addr: "127.0.0.1".into(), master_port: port, secret: None }
    }

    /// Runs `body` as each of `size` ranks on threads, joined at a fresh port.
    fn ranks<T: Send + 'static>(size: usize, body: fn(TcpGroup, Vec<u8>) -> T) -> Vec<T> {
        let port = free_port();
        let handles: Vec<_> = (0..size)
            .map(|rank| {
                std::thread::spawn(move || {
                    let w = world(size, rank, port);
                    let (group, payload) =
                        TcpGroup::join(&w, b"id-from-rank-0", Duration::from_secs(20), Duration::from_secs(20))
                            .unwrap();
                    body(group, payload)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn sums_and_broadcasts_between_three_ranks() {
        let results = ranks(3, |mut group, payload| {
            assert_eq!(payload, b"id-from-rank-0");
            let r = group.rank() as f32;
            let t = Tensor::new(&[r, 10.0 * r, 1.0], &Device::Cpu).unwrap();
            let sum: Vec<f32> = group.sum(&t).unwrap().to_vec1().unwrap();
            let bcast: Vec<f32> = group.broadcast(&(t + 5.0).unwrap()).unwrap().to_vec1().unwrap();
            let tensors =
                vec![Tensor::full(r, (2, 3), &Device::Cpu).unwrap(), Tensor::full(1.0f32, 4, &Device::Cpu).unwrap()];
            let summed = crate::sum_all(&mut group, &tensors).unwrap();
            assert_eq!(summed[0].dims(), &[2, 3]);
            let summed: Vec<Vec<f32>> = summed.iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
            (sum, bcast, summed)
        });
        for (sum, bcast, summed) in results {
            assert_eq!(sum, vec![3.0, 30.0, 3.0]);
            assert_eq!(bcast, vec![5.0, 5.0, 6.0]);
            assert_eq!(summed, vec![vec![3.0; 6], vec![3.0; 4]]);
        }
    }

    #[test]
    fn a_rank_that_leaves_is_reported_not_waited_for() {
        let results = ranks(2, |mut group, _| {
            if group.rank() == 1 {
                group.close();
                return None;
            }
            let t = Tensor::new(&[1f32], &Device::Cpu).unwrap();
            let started = Instant::now();
            let err = group.sum(&t).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5));
            Some(err.to_string())
        });
        let message = results[0].clone().unwrap();
        assert!(message.contains("rank 1 is gone"), "{message}");
    }

    #[test]
    fn a_rank_that_never_arrives_ends_the_rendezvous() {
        let port = free_port();
        let err =
            TcpGroup::join(&world(2, 0, port), b"", Duration::from_millis(300), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("rank(s) 1 never arrived"), "{err}");
        let err =
            TcpGroup::join(&world(2, 1, port), b"", Duration::from_millis(300), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("rank 0 never answered"), "{err}");
    }

    #[test]
    fn a_rank_of_another_world_size_is_refused() {
        let port = free_port();
        let main = std::thread::spawn(move || {
            TcpGroup::join(&world(2, 0, port), b"", Duration::from_secs(2), Duration::from_secs(20)).unwrap_err()
        });
        let other =
            TcpGroup::join(&world(3, 1, port), b"", Duration::from_secs(20), Duration::from_secs(20)).unwrap_err();
        let main = main.join().unwrap();
        assert!(main.to_string().contains("never arrived") && main.to_string().contains("WORLD_SIZE 3"), "{main}");
        assert!(other.to_string().contains("refused"), "{other}");
    }

    #[test]
    fn impostors_and_garbage_are_dropped_and_the_real_ranks_still_join() {
        let port = free_port();
        let secret = move |size, rank| World { secret: Some("run-secret".into()), ..world(size, rank, port) };
        let main = std::thread::spawn(move || {
            TcpGroup::join(&secret(2, 0), b"payload", Duration::from_secs(20), Duration::from_secs(20))
        });
        // Garbage, then a silent connection, then a well-formed greeting without the secret.
        let mut garbage = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => break stream,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        drop(garbage);
        let impostor =
            TcpGroup::join(&world(2, 1, port), b"", Duration::from_secs(20), Duration::from_secs(20)).unwrap_err();
        assert!(impostor.to_string().contains("does not know the run's secret"), "{impostor}");
        // The real rank 1 joins after all of them.
        let (mut rank1, payload) =
            TcpGroup::join(&secret(2, 1), b"", Duration::from_secs(20), Duration::from_secs(20)).unwrap();
        assert_eq!(payload, b"payload");
        let (mut rank0, _) = main.join().unwrap().unwrap();
        let one = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let summer = std::thread::spawn(move || rank1.sum(&one).unwrap().to_vec1::<f32>().unwrap());
        let total: Vec<f32> = rank0.sum(&Tensor::new(&[2f32], &Device::Cpu).unwrap()).unwrap().to_vec1().unwrap();
        assert_eq!((total, summer.join().unwrap()), (vec![3.0], vec![3.0]));
    }

    #[test]
    fn a_silent_rank_times_out() {
        let port = free_port();
        let quiet = std::thread::spawn(move || {
            let (group, _) =
                TcpGroup::join(&world(2, 1, port), b"", Duration::from_secs(20), Duration::from_millis(500)).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(group);
        });
        let (mut group, _) =
            TcpGroup::join(&world(2, 0, port), b"", Duration::from_secs(20), Duration::from_millis(500)).unwrap();
        let err = group.sum(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Timeout { rank: 1, .. }), "{err}");
        quiet.join().unwrap();
    }
}
