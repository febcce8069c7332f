//! The read-only S3 policy a reconciling gateway needs, as `mc` commands (`mc-setup --reconcile`).
//!
//! Listing needs `s3:ListBucket` (ListObjectsV2) and `s3:ListBucketVersions` (ListObjectVersions)
//! on the bucket, limited to the event prefix when there is one; the replication-health check
//! also reads object metadata on the *source* bucket (`s3:GetObject`, `s3:GetObjectVersion` for
//! HEAD), so the same policy applied there allows that too. Nothing can write. The secret key is
//! never printed: the commands read it from `$RECONCILE_S3_SECRET_KEY` when they run.

use std::fmt::Write as _;

use serde_json::json;

/// The policy document for `bucket` (and `prefix`, empty: the whole bucket).
pub fn read_only_policy(bucket: &str, prefix: &str) -> String {
    let mut list = json!({
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning"],
        "Resource": [format!("arn:aws:s3:::{bucket}")],
    });
    if !prefix.is_empty() {
        list["Condition"] = json!({"StringLike": {"s3:prefix": [format!("{prefix}*")]}});
    }
    let doc = json!({
        "Version": "2012-10-17",
        "Statement": [
            list,
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}*")],
            },
        ],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Appends step 4 of the `mc-setup` script: the policy, a user with it, and where the keys go.
/// `bucket` is validated by `mc-setup`; the policy goes through a quoted here-document (no shell
/// expansion) and JSON escaping, so no value can reach the shell.
pub fn append_mc_commands(s: &mut String, alias: &str, bucket: &str, prefix: &str, service: &str) {
    let name = format!("dedup-gateway-reconcile-{service}");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "# 4. Reconciliation ([services.{service}.reconcile]): a read-only user for the listing."
    );
    let _ = writeln!(
        s,
        "#    The user's secret is read from $RECONCILE_S3_SECRET_KEY; give the same pair to the gateway"
    );
    let _ = writeln!(
        s,
        "#    through access_key_env/secret_key_env or *_file. Apply the policy on the source cluster too"
    );
    let _ = writeln!(s, "#    when the replication-health check lists it.");
    let _ = writeln!(
        s,
        ": \"${{RECONCILE_S3_SECRET_KEY:?set RECONCILE_S3_SECRET_KEY to the new user's secret key}}\""
    );
    let _ = writeln!(s, "cat > /tmp/{name}.json <<'POLICY'");
    let _ = writeln!(s, "{}", read_only_policy(bucket, prefix));
    let _ = writeln!(s, "POLICY");
    let _ = writeln!(s, "mc admin policy create {alias} {name} /tmp/{name}.json");
    let _ = writeln!(
        s,
        "mc admin user add {alias} {name} \"${{RECONCILE_S3_SECRET_KEY}}\""
    );
    let _ = writeln!(s, "mc admin policy attach {alias} {name} --user {name}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_only_lists_and_reads_under_the_prefix() {
        let p: serde_json::Value =
            serde_json::from_str(&read_only_policy("intermediate", "in/")).unwrap();
        let text = p.to_string();
        assert!(
            text.contains("s3:ListBucketVersions")
                && text.contains("arn:aws:s3:::intermediate/in/*")
        );
        assert!(!text.contains("Put") && !text.contains("Delete"), "{text}");
        assert_eq!(
            p["Statement"][0]["Condition"]["StringLike"]["s3:prefix"][0],
            "in/*"
        );
    }
}
