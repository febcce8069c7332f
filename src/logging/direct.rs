//! The decision line written straight into the batched log buffer, past `tracing`'s dispatch.
//!
//! Why: every judged record logs one line, and even with the hand-written text format
//! ([`super::text`]) a line through `tracing` cost ≈ 5 k instructions (callgrind, BENCHMARKS.md
//! "Session 8 levers"): the dispatch to the subscriber, the `ValueSet` visitor calling a
//! `dyn Visit` per field, ≈ 45 `dyn fmt::Write` calls into the layer's buffer, the `Display` of
//! the dedup key through `core::fmt`, and the hand-over to the writer. Here the line is built with
//! slice copies in a thread-local buffer and appended to the writer's buffer under its lock.
//!
//! Same output: the bytes are exactly what [`super::text::TextLine`] (and so
//! `tracing_subscriber`'s default text format) writes for the same event; a test compares them,
//! escapes included. Same filter: a caller asks [`enabled`] first, which is on only when
//! - [`super::init`] installed the text format on the batched writer without ANSI colours, and
//! - the `RUST_LOG` filter has no span or field directives (`[...]`): those match on values or
//!   spans this path does not see, so with one every line goes through `tracing` as before;
//!
//! and the caller checks its own callsite with `tracing::enabled!`, so `RUST_LOG=warn` or a
//! per-target level silences the line as it silenced the `tracing` event. No span is ever open
//! around a decision (the gateway opens none), so the line never needs the span scope the default
//! format would print; [`enabled`] checks that too.

use std::{
    cell::RefCell,
    fmt::Write as _,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use super::{Shared, text};

/// The batched writer's buffer, set once by [`super::init`] when the direct path applies.
static SINK: OnceLock<Arc<Shared>> = OnceLock::new();

thread_local! {
    /// One line's bytes, kept between lines so that a line allocates nothing.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Turns the direct path on for the process (see the module doc for when `init` calls it).
pub(super) fn install(shared: Arc<Shared>) {
    let _ = SINK.set(shared);
}

/// Whether the environment filter allows the direct path: no span or field directives.
pub(super) fn filter_allows(rust_log: Option<&str>) -> bool {
    !rust_log.is_some_and(|f| f.contains('['))
}

/// True when a line may be written with [`info`] instead of a `tracing` event (the caller has
/// also checked its callsite with `tracing::enabled!`).
#[inline]
pub fn enabled() -> bool {
    SINK.get().is_some() && tracing::Span::current().is_none()
}

/// A field's value, as the `tracing` call it stands for would have passed it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A `&str` field: quoted and escaped as `Debug` writes it.
    Str(&'a str),
    /// A `%value` field: written as it is. Only for text the gateway made (a hex digest), never
    /// for input, which could hold a newline.
    Display(&'a str),
    /// A `None` field: left out, as `tracing` leaves it out.
    Absent,
}

/// Writes one INFO line of `target` with `message` and the `fields` in order. Does nothing
/// unless installed.
pub fn info(target: &str, message: &str, fields: &[(&str, Value<'_>)]) {
    let Some(shared) = SINK.get() else {
        return;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        format_line(line, SystemTime::now(), target, message, fields);
        // Nowhere to report a failing stderr, as for a line through `tracing`.
        let _ = shared.append(line.as_bytes());
    });
}

/// The text format's INFO line (see [`text::TextLine`]) for these fields.
pub(super) fn format_line(
    out: &mut String,
    now: SystemTime,
    target: &str,
    message: &str,
    fields: &[(&str, Value<'_>)],
) {
    // Writing to a `String` cannot fail.
    let _ = text::write_timestamp(out, now);
    out.push_str("  INFO ");
    out.push_str(target);
    out.push_str(": ");
    let _ = text::write_message(out, message);
    for (name, value) in fields {
        let value = match *value {
            Value::Str(v) => v,
            Value::Display(v) => {
                out.push(' ');
                out.push_str(name);
                out.push('=');
                out.push_str(v);
                continue;
            }
            Value::Absent => continue,
        };
        out.push(' ');
        out.push_str(name.strip_prefix("r#").unwrap_or(name));
        out.push('=');
        if super::plain::is_plain(value) {
            out.push('"');
            out.push_str(value);
            out.push('"');
        } else {
            let _ = write!(out, "{value:?}");
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tracing::Level;

    use super::*;
    use crate::logging::text::tests::Buf;

    /// The line `tracing` writes for the decision event with these values, without its timestamp.
    fn through_tracing(object: &str, version: Option<&str>, key: Option<&str>) -> String {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(buf.clone())
            .event_format(text::TextLine::default())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                target: "dedup_gateway::pipeline::report",
                verdict = "forwarded",
                reason = "new",
                service = "svc",
                event = "s3:ObjectCreated:Put",
                bucket = "in",
                object,
                version,
                dedup_key = key.map(tracing::field::display),
                "decision"
            );
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        text.split_once(' ')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(text)
    }

    fn direct(object: &str, version: Option<&str>, key: Option<&str>) -> String {
        let mut out = String::new();
        let fields = [
            ("verdict", Value::Str("forwarded")),
            ("reason", Value::Str("new")),
            ("service", Value::Str("svc")),
            ("event", Value::Str("s3:ObjectCreated:Put")),
            ("bucket", Value::Str("in")),
            ("object", Value::Str(object)),
            ("version", version.map_or(Value::Absent, Value::Str)),
            ("dedup_key", key.map_or(Value::Absent, Value::Display)),
        ];
        let now = UNIX_EPOCH + Duration::new(1_764_087_882, 153_438_000);
        format_line(
            &mut out,
            now,
            "dedup_gateway::pipeline::report",
            "decision",
            &fields,
        );
        assert!(
            out.starts_with("2025-11-25T16:24:42.153438Z  INFO "),
            "{out}"
        );
        out.split_once(' ')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(out)
    }

    #[test]
    fn the_line_is_the_tracing_line() {
        let key = Some("0123456789abcdef0123456789abcdef");
        for object in [
            "plain/key.txt",
            "a\nb \"q\" \\ é \u{1b}[31m",
            "",
            "tab\there",
            "\u{7f}",
        ] {
            for (version, key) in [(Some("v1"), key), (None, None), (Some("null"), None)] {
                assert_eq!(
                    direct(object, version, key),
                    through_tracing(object, version, key)
                );
            }
        }
    }

    #[test]
    fn span_and_field_directives_turn_the_path_off() {
        assert!(filter_allows(None));
        assert!(filter_allows(Some("info,dedup_gateway::store=debug")));
        assert!(!filter_allows(Some("info,[{verdict=forwarded}]=debug")));
        assert!(!filter_allows(Some("dedup_gateway[req]=trace")));
    }

    proptest::proptest! {
        #[test]
        fn any_object_key_writes_the_same_line(object in "\\PC{0,24}|[ -~\\t\\n\"\\\\é\u{7f}\u{9b}]{0,24}") {
            let key = Some("00112233445566778899aabbccddeeff");
            proptest::prop_assert_eq!(direct(&object, Some("v"), key), through_tracing(&object, Some("v"), key));
        }
    }
}
