//! Single-thread speed of each backup stage, to tell how close the pipeline gets to what the
//! machine can do: `cargo run --release --example stages -- [DIR] [--mib N]`. Reads up to N MiB
//! (default 512) of files under DIR (default: generated, half compressible) into memory, then
//! times read (from the page cache), FastCDC, keyed BLAKE3, zstd level 3 and
//! XChaCha20-Poly1305 separately on one core.

use std::io::Read;
use std::time::Instant;

use lifeboat::chunker::Chunker;
use lifeboat::crypto::MasterKey;
use lifeboat::repository::config::ChunkerParams;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args
        .iter()
        .position(|a| a == "--mib")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(512);
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<usize>().is_err());
    let limit = mib << 20;
    let files = dir
        .map(|d| collect(std::path::Path::new(d), limit))
        .unwrap_or_default();

    // read: stream the files (page cache) through a 1 MiB buffer
    let (data, read_secs) = if files.is_empty() {
        (generated(limit), f64::NAN)
    } else {
        let t = Instant::now();
        let mut data = Vec::with_capacity(limit);
        let mut buf = vec![0u8; 1 << 20];
        for f in &files {
            let mut fh = std::fs::File::open(f).unwrap();
            loop {
                let n = fh.read(&mut buf).unwrap();
                if n == 0 || data.len() >= limit {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
        }
        (data, t.elapsed().as_secs_f64())
    };
    let n = data.len() as f64;
    let key = MasterKey::generate();
    let params = ChunkerParams::default_with_seed(12345);

    let t = Instant::now();
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    Chunker::new(&params)
        .chunk::<_, std::io::Error>(&data[..], |c| {
            chunks.push((pos, c.len()));
            pos += c.len();
            Ok(())
        })
        .unwrap();
    let cdc = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for &(o, l) in &chunks {
        std::hint::black_box(key.blob_id(&data[o..o + l]));
    }
    let hash = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut comp = zstd::bulk::Compressor::new(3).unwrap();
    let mut compressed = Vec::with_capacity(chunks.len());
    for &(o, l) in &chunks {
        let c = comp.compress(&data[o..o + l]).unwrap();
        compressed.push(if c.len() < l {
            c
        } else {
            data[o..o + l].to_vec()
        });
    }
    let zstd = t.elapsed().as_secs_f64();
    let stored: usize = compressed.iter().map(Vec::len).sum();

    let t = Instant::now();
    for c in &compressed {
        std::hint::black_box(
            key.sealer(lifeboat::crypto::Kind::DataBlob)
                .seal(&[0; 32], c),
        );
    }
    let seal = t.elapsed().as_secs_f64();

    let mbs = |secs: f64| n / secs / 1e6;
    println!(
        "stage speeds on one core, {:.0} MB of input, {} chunks:",
        n / 1e6,
        chunks.len()
    );
    if read_secs.is_finite() {
        println!("  read (page cache)      {:8.0} MB/s", mbs(read_secs));
    }
    println!("  FastCDC                {:8.0} MB/s", mbs(cdc));
    println!("  keyed BLAKE3           {:8.0} MB/s", mbs(hash));
    println!(
        "  zstd -3                {:8.0} MB/s  (ratio {:.2})",
        mbs(zstd),
        n / stored as f64
    );
    println!("  XChaCha20-Poly1305     {:8.0} MB/s", mbs(seal));
    let serial = cdc
        + hash
        + zstd
        + seal
        + if read_secs.is_finite() {
            read_secs
        } else {
            0.0
        };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!(
        "  all stages, one core   {:8.0} MB/s; machine limit with {cores} cores ≈ {:.0} MB/s",
        mbs(serial),
        mbs(serial) * cores
    );
}

fn collect(dir: &std::path::Path, limit: usize) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && total < limit as u64 {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(e.path());
            }
        }
    }
    out
}

fn generated(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        if (v.len() >> 20) % 2 == 0 {
            v.extend_from_slice(
                format!("row {} value {} status active\n", v.len(), v.len() % 977).as_bytes(),
            );
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(n);
    v
}
