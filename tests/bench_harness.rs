//! The benchmark harness's smoke test: `bench/run.py --quick` runs every step of the main row
//! against a local directory, SeaweedFS, and SeaweedFS behind `examples/delay_proxy` (50 ms round
//! trip, with and without a bandwidth cap), and the many-small-files row locally, with lifeboat
//! and whichever peers (restic, rustic) are installed, and writes a report. It checks the harness
//! works and that every tool's restore was verified byte for byte, never how fast anything is.

use std::path::Path;
use std::process::Command;

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x \"$HOME/.cargo/bin/{tool}\""),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn quick_run_reports_every_step_for_every_backend() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("BENCH.md");
    let mut tools = vec!["lifeboat"];
    tools.extend(["restic", "rustic"].into_iter().filter(|t| installed(t)));
    // `cargo test` builds the examples beside the binary; a nested `cargo run` or `cargo build`
    // would rebuild the dependency tree with a different feature set.
    let examples = Path::new(env!("CARGO_BIN_EXE_lifeboat")).with_file_name("examples");
    let run = Command::new("python3")
        .arg(root.join("bench/run.py"))
        .args([
            "--quick",
            "--tools",
            &tools.join(","),
            "--rows",
            "main,many",
            "--backends",
            "local,s3,s3-rtt50,s3-rtt50-cap",
        ])
        .arg("--lifeboat")
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--stages")
        .arg(examples.join("stages"))
        .arg("--proxy")
        .arg(examples.join("delay_proxy"))
        .arg("--out")
        .arg(&report)
        .env_remove("CI") // never let a smoke test install packages
        .current_dir(root)
        .output()
        .expect("python3 runs bench/run.py");
    assert!(
        run.status.success(),
        "bench/run.py --quick failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let main_steps = ["initial", "no-change", "small-change", "restore"];
    let mut rows = vec![];
    for backend in ["local", "s3", "s3-rtt50", "s3-rtt50-cap"] {
        rows.extend(main_steps.map(|step| ("main", backend, step)));
    }
    rows.extend(["initial", "no-change", "restore"].map(|step| ("many", "local", step)));
    for (dataset, backend, step) in rows {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {dataset} | {backend} | {step} |")))
            .unwrap_or_else(|| panic!("no {dataset}/{backend}/{step} row in:\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | dataset | backend | step | one cell per tool | requests | speed-up | RSS ratio |
        assert_eq!(cells.len(), tools.len() + 8, "{row}");
        for cell in &cells[4..4 + tools.len()] {
            assert!(cell.contains("s / ") && cell.contains(" MB"), "{row}");
            // every tool's restore is compared byte for byte with the snapshot
            if step == "restore" {
                assert!(cell.contains("verified"), "{row}");
            }
            if step == "restore" && backend == "s3-rtt50-cap" {
                assert!(cell.contains("% of cap"), "{row}");
            }
        }
        if tools.len() > 1 {
            assert!(cells[5 + tools.len()].contains('×'), "{row}");
        }
    }
    assert!(
        text.contains("machine limit with"),
        "no stage speeds in:\n{text}"
    );
    assert!(text.contains("Repository size after the initial backup"));
    assert!(text.contains("Caches: warm"), "{text}");
}
