//! `dedup-gateway mc-setup`: the `mc` commands that wire a MinIO bucket to the gateway.
//!
//! A pure function from options to text, so the exact output is unit-tested and the binary only
//! prints it. Two scenarios:
//! - `replicated` (the seed): the bucket is the source of a replication rule and the service must
//!   run once per *replicated* object version, so the bucket subscribes to `replica` events and any
//!   `put` subscription on the same target is removed (else both fire for every object);
//! - `plain`: a single cluster, the bucket subscribes to `put` events.
//!
//! The OSCAR service token is never printed, not even when the named variable is set while the
//! command runs: the output references it as `"${VAR}"`, so it is expanded by the shell that runs
//! the commands, and a guard line stops that shell when the variable is empty. The output is a
//! valid POSIX shell script (`dedup-gateway mc-setup ... | sh` works).
//!
//! Every value that reaches the script is validated or shell-quoted, so a bucket or prefix can
//! never inject a command.

mod validate;

use std::fmt::Write as _;

use validate::{shell_quote, validate};

/// Which events the bucket subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scenario {
    /// Single cluster: trigger on `put`.
    #[default]
    Plain,
    /// Replicated bucket (the seed scenario): trigger on `replica`, remove the conflicting `put`.
    Replicated,
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(Scenario::Plain),
            "replicated" => Ok(Scenario::Replicated),
            other => Err(format!(
                "unknown scenario `{other}`: use replicated or plain"
            )),
        }
    }
}

/// What the commands are generated from.
#[derive(Debug, Clone)]
pub struct McSetup {
    /// OSCAR service name: the `{service}` of `/job/{service}`.
    pub service: String,
    /// Bucket whose events trigger the service.
    pub bucket: String,
    /// Base URL of the gateway as MinIO reaches it, e.g. `http://dedup-gateway.oscar:8080`.
    pub gateway_url: String,
    /// Environment variable holding the OSCAR service token when the commands run.
    pub token_env: String,
    /// `mc` alias of the MinIO server that emits the events.
    pub alias: String,
    pub scenario: Scenario,
    /// MinIO's persistent event queue; absolute path on the MinIO server.
    pub queue_dir: String,
    /// Events MinIO keeps queued while the gateway is unreachable.
    pub queue_limit: u64,
    /// Object-name prefix filter (OSCAR uses `<folder>/`); empty: the whole bucket.
    pub prefix: String,
    /// Webhook target ID; empty: the service name (the ID OSCAR itself uses).
    pub target_id: String,
    /// MinIO region as it appears in the ARN (`mc admin config get ALIAS region`); usually empty.
    pub region: String,
    /// Also print the read-only S3 policy reconciliation needs (`--reconcile`).
    pub reconcile: bool,
}

impl McSetup {
    /// Options with the defaults the CLI uses.
    pub fn new(service: &str, bucket: &str, gateway_url: &str) -> Self {
        Self {
            service: service.into(),
            bucket: bucket.into(),
            gateway_url: gateway_url.into(),
            token_env: "OSCAR_SERVICE_TOKEN".into(),
            alias: "minio".into(),
            scenario: Scenario::Plain,
            queue_dir: "/data/minio-events".into(),
            queue_limit: 100_000,
            prefix: String::new(),
            target_id: String::new(),
            region: String::new(),
            reconcile: false,
        }
    }
}

/// An option that cannot produce a safe script; names the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid `--{flag}`: {reason}")]
pub struct McSetupError {
    pub flag: &'static str,
    pub reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> McSetupError {
    McSetupError {
        flag,
        reason: reason.into(),
    }
}

/// The commands, as a shell script with comments.
pub fn render(o: &McSetup) -> Result<String, McSetupError> {
    validate(o)?;
    let id = if o.target_id.is_empty() {
        &o.service
    } else {
        &o.target_id
    };
    let names = Names {
        id,
        endpoint: format!("{}/job/{}", o.gateway_url.trim_end_matches('/'), o.service),
        arn: format!("arn:minio:sqs:{}:{id}:webhook", o.region),
        target: format!("{}/{}", o.alias, o.bucket),
        prefix: if o.prefix.is_empty() {
            String::new()
        } else {
            format!(" --prefix {}", shell_quote(&o.prefix))
        },
    };
    let mut s = String::new();
    header(&mut s, o);
    point_target(&mut s, o, &names);
    subscribe(&mut s, o.scenario, &names);
    // `writeln!` into a String cannot fail.
    let _ = writeln!(s);
    let _ = writeln!(s, "# 3. Check.");
    let _ = writeln!(
        s,
        "mc admin config get {} notify_webhook:{}",
        o.alias, names.id
    );
    let _ = writeln!(s, "mc event list {}", names.target);
    if o.reconcile {
        crate::reconcile::policy::append_mc_commands(
            &mut s, &o.alias, &o.bucket, &o.prefix, &o.service,
        );
    }
    Ok(s)
}

/// The validated values the script names again and again.
struct Names<'a> {
    /// Webhook target ID.
    id: &'a str,
    endpoint: String,
    arn: String,
    /// `alias/bucket`.
    target: String,
    /// ` --prefix WORD`, or empty.
    prefix: String,
}

/// The shebang, what the script is for, and the guard that stops it without a token.
fn header(s: &mut String, o: &McSetup) {
    let var = &o.token_env;
    let _ = writeln!(s, "#!/bin/sh");
    let _ = writeln!(
        s,
        "# dedup-gateway mc-setup: service {}, bucket {}, scenario {}.",
        o.service,
        o.bucket,
        match o.scenario {
            Scenario::Plain => "plain",
            Scenario::Replicated => "replicated",
        }
    );
    let _ = writeln!(
        s,
        "# The OSCAR service token is read from ${var} when this runs; it is never written here."
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, ": \"${{{var}:?set {var} to the OSCAR service token}}\"");
    let _ = writeln!(s);
}

/// Step 1: the webhook target, with the token left to the shell that runs the script.
fn point_target(s: &mut String, o: &McSetup, n: &Names<'_>) {
    let var = &o.token_env;
    let _ = writeln!(
        s,
        "# 1. Point the webhook target at the gateway, with a persistent queue so MinIO retries."
    );
    let _ = writeln!(
        s,
        "mc admin config set {} notify_webhook:{} endpoint=\"{}\" auth_token=\"${{{var}}}\" queue_dir=\"{}\" queue_limit=\"{}\"",
        o.alias, n.id, n.endpoint, o.queue_dir, o.queue_limit
    );
    let _ = writeln!(s, "mc admin service restart {}", o.alias);
    let _ = writeln!(s);
}

/// Step 2: the bucket's subscription, per scenario.
fn subscribe(s: &mut String, scenario: Scenario, n: &Names<'_>) {
    let (target, arn, prefix) = (&n.target, &n.arn, &n.prefix);
    match scenario {
        Scenario::Plain => {
            let _ = writeln!(
                s,
                "# 2. Trigger on new objects. OSCAR may have subscribed the bucket to this target already"
            );
            let _ = writeln!(
                s,
                "#    when it created the service (then MinIO refuses a second one): `|| true`, see 3."
            );
            let _ = writeln!(s, "mc event add {target} {arn} --event put{prefix} || true");
        }
        Scenario::Replicated => {
            let _ = writeln!(
                s,
                "# 2. Replicated bucket: remove the put subscription (else put and replica both fire),"
            );
            let _ = writeln!(
                s,
                "#    then trigger on replication events. `|| true`: there may be none to remove."
            );
            let _ = writeln!(s, "mc event rm {target} {arn} --event put{prefix} || true");
            let _ = writeln!(s, "mc event add {target} {arn} --event replica{prefix}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICATED: &str = r#"#!/bin/sh
# dedup-gateway mc-setup: service service-y, bucket intermediate, scenario replicated.
# The OSCAR service token is read from $SVC_TOKEN when this runs; it is never written here.
set -eu
: "${SVC_TOKEN:?set SVC_TOKEN to the OSCAR service token}"

# 1. Point the webhook target at the gateway, with a persistent queue so MinIO retries.
mc admin config set origin notify_webhook:service-y endpoint="http://gw.oscar:8080/job/service-y" auth_token="${SVC_TOKEN}" queue_dir="/data/minio-events" queue_limit="100000"
mc admin service restart origin

# 2. Replicated bucket: remove the put subscription (else put and replica both fire),
#    then trigger on replication events. `|| true`: there may be none to remove.
mc event rm origin/intermediate arn:minio:sqs::service-y:webhook --event put --prefix in/ || true
mc event add origin/intermediate arn:minio:sqs::service-y:webhook --event replica --prefix in/

# 3. Check.
mc admin config get origin notify_webhook:service-y
mc event list origin/intermediate
"#;

    const PLAIN: &str = r#"#!/bin/sh
# dedup-gateway mc-setup: service grayify, bucket images, scenario plain.
# The OSCAR service token is read from $OSCAR_SERVICE_TOKEN when this runs; it is never written here.
set -eu
: "${OSCAR_SERVICE_TOKEN:?set OSCAR_SERVICE_TOKEN to the OSCAR service token}"

# 1. Point the webhook target at the gateway, with a persistent queue so MinIO retries.
mc admin config set minio notify_webhook:grayify endpoint="http://dedup-gateway:8080/job/grayify" auth_token="${OSCAR_SERVICE_TOKEN}" queue_dir="/data/minio-events" queue_limit="100000"
mc admin service restart minio

# 2. Trigger on new objects. OSCAR may have subscribed the bucket to this target already
#    when it created the service (then MinIO refuses a second one): `|| true`, see 3.
mc event add minio/images arn:minio:sqs::grayify:webhook --event put || true

# 3. Check.
mc admin config get minio notify_webhook:grayify
mc event list minio/images
"#;

    #[test]
    fn replicated_scenario_text() {
        let mut o = McSetup::new("service-y", "intermediate", "http://gw.oscar:8080/");
        o.scenario = Scenario::Replicated;
        o.alias = "origin".into();
        o.token_env = "SVC_TOKEN".into();
        o.prefix = "in/".into();
        assert_eq!(render(&o).unwrap(), REPLICATED);
    }

    #[test]
    fn plain_scenario_text() {
        let o = McSetup::new("grayify", "images", "http://dedup-gateway:8080");
        assert_eq!(render(&o).unwrap(), PLAIN);
    }

    #[test]
    fn odd_prefix_is_quoted_and_region_enters_the_arn() {
        let mut o = McSetup::new("s", "bkt", "https://gw");
        o.prefix = "my dir/it's".into();
        o.region = "us-east-1".into();
        o.target_id = "s-dedup".into();
        let out = render(&o).unwrap();
        assert!(
            out.contains("mc event add minio/bkt arn:minio:sqs:us-east-1:s-dedup:webhook --event put --prefix 'my dir/it'\\''s' || true"),
            "{out}"
        );
        assert!(
            out.contains("notify_webhook:s-dedup endpoint=\"https://gw/job/s\""),
            "{out}"
        );
    }

    #[test]
    fn unsafe_values_are_refused_naming_the_flag() {
        let base = McSetup::new("s", "bkt", "http://gw:8080");
        type Case = (&'static str, fn(&mut McSetup));
        let cases: [Case; 8] = [
            ("service", |o| o.service = "a;b".into()),
            ("bucket", |o| o.bucket = "Bad_Bucket".into()),
            ("gateway-url", |o| o.gateway_url = "http://gw/$(id)".into()),
            ("gateway-url", |o| o.gateway_url = "ftp://gw".into()),
            ("token-env", |o| o.token_env = "1TOKEN".into()),
            ("queue-dir", |o| o.queue_dir = "relative/dir".into()),
            ("prefix", |o| o.prefix = "a/../b".into()),
            ("alias", |o| o.alias = "x y".into()),
        ];
        for (flag, f) in cases {
            let mut o = base.clone();
            f(&mut o);
            let err = render(&o).unwrap_err();
            assert_eq!(err.flag, flag, "{err}");
        }
    }

    #[test]
    fn mc_setup_prints_the_policy_without_the_secret() {
        let mut o = McSetup::new("grayify", "images", "http://gw:8080");
        o.reconcile = true;
        let text = render(&o).unwrap();
        assert!(text.contains("mc admin policy create minio dedup-gateway-reconcile-grayify"));
        assert!(text.contains("\"s3:ListBucket\""));
        assert!(text.contains("\"${RECONCILE_S3_SECRET_KEY}\""));
        o.reconcile = false;
        assert!(!render(&o).unwrap().contains("policy create"));
    }
}
