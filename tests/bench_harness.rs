//! The benchmark harness's smoke test: `bench/run.py --quick` runs every step against a local
//! directory and SeaweedFS with lifeboat and whichever peers (restic, rustic) are installed, and
//! writes a report. It checks the harness works, never how fast anything is.

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
    let run = Command::new("python3")
        .arg(root.join("bench/run.py"))
        .args([
            "--quick",
            "--tools",
            &tools.join(","),
            "--backends",
            "local,s3",
        ])
        .arg("--lifeboat")
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        // `cargo test` builds the examples beside the binary; a nested `cargo run` would rebuild
        // the dependency tree with a different feature set.
        .arg("--stages")
        .arg(Path::new(env!("CARGO_BIN_EXE_lifeboat")).with_file_name("examples/stages"))
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
    for backend in ["local", "s3"] {
        for step in ["initial", "no-change", "small-change", "restore"] {
            let row = text
                .lines()
                .find(|l| l.starts_with(&format!("| {backend} | {step} |")))
                .unwrap_or_else(|| panic!("no {backend}/{step} row in:\n{text}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // | backend | step | one cell per tool | speed-up | RSS ratio |
            assert_eq!(cells.len(), tools.len() + 6, "{row}");
            for cell in &cells[3..3 + tools.len()] {
                assert!(cell.contains("s / ") && cell.contains(" MB"), "{row}");
            }
            if tools.len() > 1 {
                assert!(cells[3 + tools.len()].ends_with('×'), "{row}");
            }
        }
    }
    assert!(
        text.contains("machine limit with"),
        "no stage speeds in:\n{text}"
    );
    assert!(text.contains("Repository size after the initial backup"));
}
