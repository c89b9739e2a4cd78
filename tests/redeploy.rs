//! The restore-on-redeploy guide's simulation (`docs/redeploy-simulation.sh`): two wrapper
//! processes, separate empty volumes, one repository; the app on the second "lease" must find
//! every record the first one wrote. Run against a local directory and against SeaweedFS.

mod common;

use std::process::Command;

use common::seaweed::{self, ACCESS_KEY, SECRET_KEY};

fn simulate(repo: Option<String>) {
    let mut c = Command::new("bash");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/redeploy-simulation.sh"
    ))
    .arg(env!("CARGO_BIN_EXE_lifeboat"))
    .env_remove("LIFEBOAT_REPOSITORY");
    if let Some(r) = repo {
        c.env("LIFEBOAT_REPOSITORY", r)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1");
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK: nothing lost"), "{text}");
    let found = text
        .lines()
        .find(|l| l.contains("the app on lease B said: FOUND"))
        .unwrap_or_else(|| panic!("{text}"));
    eprintln!("{found}");
}

#[test]
fn redeploy_simulation_local() {
    simulate(None);
}

#[test]
fn redeploy_simulation_seaweedfs() {
    let s = seaweed::server();
    simulate(Some(format!("s3:http://{}/redeploy/sim", s.s3)));
}
