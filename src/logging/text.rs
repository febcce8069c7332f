//! The text log line, written with a few string copies instead of `core::fmt` machinery.
//!
//! Why: every record the gateway judges logs one decision line, and formatting it through
//! `tracing_subscriber`'s default text format (timestamp, level padding, ANSI style objects, each
//! string field through `Debug`, char by char) was the largest share of the drop path's CPU after
//! the JSON parse itself (BENCHMARKS.md). The layout is exactly that format's without colours —
//! `2026-11-25T17:44:42.153438Z  INFO dedup_gateway::pipeline: decision verdict="ignored" …` —
//! so nothing that reads the logs changes; a test compares the two on the same events.
//!
//! Only plain events take this path: one inside a span (the default prints the span scope), one
//! bridged from the `log` crate (its `log.*` fields are metadata), or a writer with ANSI colours
//! goes to the default formatter. String fields are quoted and escaped exactly as `Debug` does
//! (a key with a newline cannot forge a line); the message is escaped for terminal control codes
//! as the default does.

use std::{
    cell::Cell,
    fmt::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{self, Writer},
    },
    registry::LookupSpan,
};

/// The text event format (see the module doc).
#[derive(Debug, Default)]
pub struct TextLine {
    fallback: format::Format,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if w.has_ansi_escapes()
            || ctx.event_scope().is_some()
            || meta.fields().iter().any(|f| f.name().starts_with("log."))
        {
            return self.fallback.format_event(ctx, w, event);
        }
        write_timestamp(&mut w, SystemTime::now())?;
        w.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// Writes the fields as the default visitor does: `message` bare, then ` name=value`.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn pad(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.w.write_char(' ')
        }
    }

    fn name(&mut self, field: &Field) -> fmt::Result {
        let name = field.name();
        self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.w.write_char('=')
    }
}

impl tracing::field::Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        self.result = self
            .pad()
            .and_then(|()| self.name(field))
            .and_then(|()| write_debug_str(self.w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = self.pad().and_then(|()| {
            if field.name() == "message" {
                write!(ControlEscaped(self.w), "{value:?}")
            } else {
                self.name(field)?;
                write!(self.w, "{value:?}")
            }
        });
    }
}

/// `value` as `Debug` writes a `&str`, without going through `Debug` when nothing needs escaping.
fn write_debug_str(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    if super::plain::is_plain(value) {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// The `message` field as the visitor writes it: bare, terminal control codes escaped.
pub(super) fn write_message(w: &mut impl Write, message: &str) -> fmt::Result {
    ControlEscaped(w).write_str(message)
}

/// Escapes terminal control codes in a message, as `tracing_subscriber` does for its own.
struct ControlEscaped<'a, W>(&'a mut W);

impl<W: Write> Write for ControlEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let clean = s.chars().all(|c| {
            !matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        });
        if clean {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds, as `tracing_subscriber`'s `SystemTime` timer writes it.
pub(super) fn write_timestamp(w: &mut impl Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = civil(secs);
        SECOND.set((secs, text));
    }
    let mut micros = *b".000000Z";
    let mut n = since.subsec_micros();
    for d in micros[1..7].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Both buffers are ASCII digits and separators.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch (UTC; days to civil date after H. Hinnant).
fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9_999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3_600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A `MakeWriter` into memory, for comparing formatted lines.
    #[derive(Clone, Default)]
    pub(in crate::logging) struct Buf(pub(in crate::logging) Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn events() {
        tracing::info!(
            verdict = "duplicate",
            reason = "already-delivered",
            object = "a\nb \"q\" \\ é \u{1b}[31m",
            r#type = "x",
            n = 3u64,
            ok = true,
            shown = %"display",
            dbg = ?Some(1),
            "decision"
        );
        tracing::warn!("message with \u{1b}[2J control and é");
        tracing::error!(error = %"boom", "failed: {}", 42);
        tracing::debug!(only = "fields");
        let span = tracing::info_span!("outer", id = 7);
        span.in_scope(|| tracing::info!(inner = "x", "in a span"));
    }

    /// Each line without its timestamp (the two subscribers run at different instants).
    fn lines(buf: &Buf) -> Vec<String> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_owned())
            .collect()
    }

    #[test]
    fn lines_match_the_default_text_format() {
        let ours = Buf::default();
        let theirs = Buf::default();
        let sub = |buf: &Buf| {
            tracing_subscriber::fmt()
                .with_max_level(Level::TRACE)
                .with_ansi(false)
                .with_writer(buf.clone())
        };
        tracing::subscriber::with_default(
            sub(&ours).event_format(TextLine::default()).finish(),
            events,
        );
        tracing::subscriber::with_default(sub(&theirs).finish(), events);
        let (ours, theirs) = (lines(&ours), lines(&theirs));
        assert_eq!(ours.len(), 5);
        assert_eq!(ours, theirs);
        assert!(
            ours[0].contains(r#"object="a\nb \"q\" \\ é \u{1b}[31m""#),
            "{}",
            ours[0]
        );
    }

    #[test]
    fn timestamps_match_the_default_timer() {
        for secs in [0u64, 951_782_400, 1_764_087_882, 4_102_444_799] {
            let t = UNIX_EPOCH + Duration::new(secs, 153_438_000);
            let mut ours = String::new();
            write_timestamp(&mut ours, t).unwrap();
            let mut expected = String::new();
            let days = secs / 86_400;
            // Independent check of the date part through a plain day count.
            let (mut y, mut d) = (1970u64, days);
            loop {
                let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                    366
                } else {
                    365
                };
                if d < len {
                    break;
                }
                d -= len;
                y += 1;
            }
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let months = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let mut m = 0;
            while d >= months[m] {
                d -= months[m];
                m += 1;
            }
            let rem = secs % 86_400;
            write!(
                expected,
                "{y:04}-{:02}-{:02}T{:02}:{:02}:{:02}.153438Z",
                m + 1,
                d + 1,
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            )
            .unwrap();
            assert_eq!(ours, expected);
        }
    }
}
