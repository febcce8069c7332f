//! What may reach the script: each option checked against the characters its place in the script
//! allows, and the one free-form value (the prefix) quoted. Kept apart from the rendering so the
//! whole injection surface reads in one file.

use super::{McSetup, McSetupError, bad};

/// Every option, in flag order; the first bad one is reported.
pub(super) fn validate(o: &McSetup) -> Result<(), McSetupError> {
    if !crate::config::valid_service_name(&o.service) {
        return Err(bad("service", "use letters, digits, `-`, `_` and `.`"));
    }
    if !valid_bucket(&o.bucket) {
        return Err(bad(
            "bucket",
            "not an S3 bucket name (3-63 of a-z, 0-9, `.`, `-`)",
        ));
    }
    validate_gateway_url(&o.gateway_url)?;
    validate_shell_words(o)?;
    validate_prefix(&o.prefix)?;
    if !o.target_id.is_empty() && !crate::config::valid_service_name(&o.target_id) {
        return Err(bad("target-id", "use letters, digits, `-`, `_` and `.`"));
    }
    if !o.region.is_empty() && !word(&o.region, |b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad("region", "use letters, digits and `-`"));
    }
    Ok(())
}

/// The URL MinIO posts to: http(s), nothing a shell or MinIO would read differently.
fn validate_gateway_url(gateway_url: &str) -> Result<(), McSetupError> {
    let url = reqwest::Url::parse(gateway_url).map_err(|e| bad("gateway-url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("gateway-url", "must be an http:// or https:// URL"));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad(
            "gateway-url",
            "must not carry credentials, a query or a fragment",
        ));
    }
    if !url_is_shell_safe(gateway_url) {
        return Err(bad(
            "gateway-url",
            "contains characters that are unsafe in a shell word",
        ));
    }
    Ok(())
}

/// The values written into the script unquoted: each must be one safe shell word.
fn validate_shell_words(o: &McSetup) -> Result<(), McSetupError> {
    if !valid_env_name(&o.token_env) {
        return Err(bad(
            "token-env",
            "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        ));
    }
    if !word(&o.alias, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
    }) {
        return Err(bad("alias", "use letters, digits, `-`, `_` and `.`"));
    }
    if !o.queue_dir.starts_with('/')
        || !word(&o.queue_dir, |b| {
            b.is_ascii_alphanumeric() || b"/-_.".contains(&b)
        })
    {
        return Err(bad(
            "queue-dir",
            "must be an absolute path of letters, digits, `/`, `-`, `_` and `.`",
        ));
    }
    if o.queue_limit == 0 {
        return Err(bad("queue-limit", "must be at least 1"));
    }
    Ok(())
}

/// The prefix is quoted, so only what MinIO itself refuses is refused.
fn validate_prefix(prefix: &str) -> Result<(), McSetupError> {
    if prefix.len() > 1024
        || prefix.contains('\\')
        || prefix.split('/').any(|seg| seg == "." || seg == "..")
    {
        return Err(bad(
            "prefix",
            "MinIO refuses `.`/`..` segments, `\\` and more than 1024 bytes",
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(bad("prefix", "must not contain control characters"));
    }
    Ok(())
}

fn word(s: &str, ok: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.bytes().all(ok)
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && word(b, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'
        })
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

fn valid_env_name(v: &str) -> bool {
    word(v, |b| b.is_ascii_alphanumeric() || b == b'_') && !v.as_bytes()[0].is_ascii_digit()
}

/// The URL goes inside double quotes: `$`, `` ` ``, `"` and `\` would be interpreted there.
fn url_is_shell_safe(u: &str) -> bool {
    word(u, |b| b.is_ascii_graphic() && !b"$`\"\\'".contains(&b))
}

/// A shell word for `s`: as is when it has only safe characters, else single-quoted.
pub(super) fn shell_quote(s: &str) -> String {
    if word(s, |b| {
        b.is_ascii_alphanumeric() || b"/-_.+=:,@%".contains(&b)
    }) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}
