//! `mc-setup`: the `mc` commands that point MinIO's webhook at the gateway, for the plain and
//! the replicated scenario; the token only ever as a shell variable, and the output a working
//! script.

use std::process::Command;

use dedup_gateway::mcsetup::{self, McSetup, Scenario};

use crate::helpers::*;

const SECRET: &str = "tok-SECRET-value-that-must-never-be-printed";

/// The seed scenario: the exact `mc` lines, the binary's output equal to the library's, and the
/// token value absent even though the variable is set in the binary's environment.
#[test]
fn mc_setup_replicated_scenario_prints_the_commands_and_never_the_token() {
    let out = bin()
        .args([
            "mc-setup",
            "--service",
            "svc-y",
            "--bucket",
            "intermediate",
            "--gateway-url",
            "http://dedup-gateway.oscar:8080",
            "--scenario",
            "replicated",
            "--alias",
            "origin",
            "--prefix",
            "in/",
        ])
        .env("OSCAR_SERVICE_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        r#"mc admin config set origin notify_webhook:svc-y endpoint="http://dedup-gateway.oscar:8080/job/svc-y" auth_token="${OSCAR_SERVICE_TOKEN}" queue_dir="/data/minio-events" queue_limit="100000""#,
        "mc admin service restart origin",
        "mc event rm origin/intermediate arn:minio:sqs::svc-y:webhook --event put --prefix in/ || true",
        "mc event add origin/intermediate arn:minio:sqs::svc-y:webhook --event replica --prefix in/",
    ] {
        assert!(lines.contains(&expected), "missing line {expected}\n{text}");
    }
    assert!(!text.contains(SECRET) && !String::from_utf8_lossy(&out.stderr).contains(SECRET));
    let mut o = McSetup::new("svc-y", "intermediate", "http://dedup-gateway.oscar:8080");
    o.scenario = Scenario::Replicated;
    o.alias = "origin".into();
    o.prefix = "in/".into();
    assert_eq!(
        text,
        mcsetup::render(&o).unwrap(),
        "binary and library disagree"
    );
}

/// The plain case subscribes to `put`, removes nothing, and uses the named variable.
#[test]
fn mc_setup_plain_scenario_uses_put_and_the_named_variable() {
    let out = bin()
        .args([
            "mc-setup",
            "--service",
            "grayify",
            "--bucket",
            "images",
            "--gateway-url",
            "http://gw:8080",
        ])
        .args(["--token-env", "MY_TOKEN", "--scenario", "plain"])
        .env("MY_TOKEN", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#"auth_token="${MY_TOKEN}""#), "{text}");
    assert!(
        text.contains(
            "\nmc event add minio/images arn:minio:sqs::grayify:webhook --event put || true\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("mc event rm") && !text.contains("replica"),
        "{text}"
    );
    assert!(!text.contains(SECRET));

    let out = bin()
        .args([
            "mc-setup",
            "--service",
            "s",
            "--bucket",
            "No_Such",
            "--gateway-url",
            "http://gw",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--bucket"));
}

/// The output is a working script: run by `sh` against a stand-in `mc` that logs its arguments,
/// the token reaches `mc` (expanded by the shell), and an unset variable stops the script.
#[cfg(unix)]
#[test]
fn mc_setup_output_runs_as_a_script() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mc.log");
    let fake = dir.path().join("mc");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$MC_LOG\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = McSetup::new("svc", "bucket-a", "http://gw:8080");
    o.scenario = Scenario::Replicated;
    let script = mcsetup::render(&o).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |token: Option<&str>| {
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("PATH", &path)
            .env("MC_LOG", &log);
        c.env_remove("OSCAR_SERVICE_TOKEN");
        if let Some(t) = token {
            c.env("OSCAR_SERVICE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(None);
    assert!(
        !out.status.success(),
        "an unset token variable must stop the script"
    );
    assert!(!log.exists(), "no mc command may run without the token");
    let out = run(Some(SECRET));
    assert_success(&out);
    let calls = std::fs::read_to_string(&log).unwrap();
    let first = calls.lines().next().unwrap_or_default();
    assert!(first.contains(&format!("auth_token={SECRET}")), "{calls}");
    assert!(
        calls
            .lines()
            .any(|l| l == "event add minio/bucket-a arn:minio:sqs::svc:webhook --event replica"),
        "{calls}"
    );
}
