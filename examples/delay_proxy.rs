//! A TCP proxy that adds a round-trip time and, optionally, a bandwidth cap, so the benchmark
//! can put an S3 server "far away" on loopback (bench/run.py's `s3-rtt50` rows):
//!
//! ```text
//! delay_proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:8333 --rtt-ms 50 [--mbit 400]
//! ```
//!
//! Prints `listening on ADDR` once bound. Every chunk read from one side is delivered to the
//! other side rtt/2 after it was read; chunks are timestamped on read, so a chunk read later
//! never waits behind an earlier one for more than that (the pipe is delayed, not serialised).
//! A new connection also pays one round trip for the TCP handshake the proxy cannot delay
//! itself: nothing the client sends reaches upstream before accept + rtt + rtt/2. `--mbit N`
//! caps each direction, shared by all connections, at N megabit/s with a token bucket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where every accepted connection is forwarded.
    #[arg(long)]
    upstream: String,
    /// Round-trip time to add, in milliseconds (half of it each way).
    #[arg(long, default_value_t = 50)]
    rtt_ms: u64,
    /// Cap on each direction's throughput, in megabit/s, shared by all connections.
    #[arg(long)]
    mbit: Option<f64>,
}

/// Largest chunk read at once; chunks in flight per direction and connection are bounded by
/// `IN_FLIGHT`, i.e. up to 64 MiB, enough for ~2.6 GB/s at a 25 ms one-way delay.
const CHUNK: usize = 64 << 10;
const IN_FLIGHT: usize = 1024;

/// A token bucket in bytes: refills at `rate` bytes/s up to `burst`; a taker may overdraw it and
/// then sleeps until the debt is repaid, so later takers queue behind it and the long-run rate
/// across every connection sharing it is `rate`.
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>, // (tokens, last refill)
}

impl Bucket {
    fn new(mbit: f64) -> Self {
        let rate = mbit * 1e6 / 8.0;
        // 10 ms worth of burst: timer sleeps overshoot by about a millisecond, and a smaller
        // bucket would lose the credit earned meanwhile and undershoot the cap.
        let burst = (rate * 0.010).max(CHUNK as f64);
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    async fn take(&self, n: usize) {
        let debt = {
            let mut s = self.state.lock().unwrap();
            let now = Instant::now();
            let tokens = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
            *s = (tokens - n as f64, now);
            -s.0
        };
        if debt > 0.0 {
            sleep(Duration::from_secs_f64(debt / self.rate)).await;
        }
    }
}

/// Copies `from` to `to`, delivering each chunk at `max(read time + half, not_before)`.
/// A reader task timestamps chunks; this task sleeps until each one is due and writes it.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    half: Duration,
    not_before: Instant,
    cap: Option<Arc<Bucket>>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // EOF and errors both end the stream; an empty chunk tells the writer to shut down.
            let n = from.read(&mut buf).await.unwrap_or(0);
            if let Some(cap) = &cap {
                cap.take(n).await; // the link is busy sending these bytes
            }
            let due = (Instant::now() + half).max(not_before);
            if tx.send((due, buf[..n].to_vec())).await.is_err() || n == 0 {
                return; // the writer is gone (peer closed), or this side reached EOF
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        sleep_until(due).await;
        if chunk.is_empty() {
            let _ = to.shutdown().await; // pass the half-close on
            break;
        }
        if to.write_all(&chunk).await.is_err() {
            break; // dropping `rx` stops the reader
        }
    }
    drop(rx);
    let _ = reader.await;
}

async fn serve(
    client: TcpStream,
    upstream: String,
    half: Duration,
    caps: [Option<Arc<Bucket>>; 2],
) {
    let accepted = Instant::now();
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return; // dropping the client closes it
    };
    // Small writes must not wait for Nagle's algorithm on top of the added delay.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let [up_cap, down_cap] = caps;
    // The client's connect() returned at once; a real link would have spent one round trip on
    // the handshake before the request could even start out.
    let handshake = accepted + 2 * half;
    tokio::join!(
        pipe(client_r, server_w, half, handshake + half, up_cap),
        pipe(server_r, client_w, half, accepted, down_cap),
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    let half = Duration::from_micros(args.rtt_ms * 500);
    // One bucket per direction (upload, download), shared by all connections.
    let caps = [(); 2].map(|_| args.mbit.map(|m| Arc::new(Bucket::new(m))));
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(serve(client, args.upstream.clone(), half, caps.clone()));
    }
}
