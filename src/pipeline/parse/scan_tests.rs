//! The scanner (`scan.rs`) held to serde: on every body it reads, it must give exactly what
//! serde gives (`records_serde`), and `records` must always answer what serde answers. Fixtures,
//! hand-picked edges, generated bodies and byte-level mutations of both.

use std::sync::LazyLock;

use super::*;

type Flat<'a> = Result<Vec<(Option<&'a str>, Result<Record<'a>, RecordError>)>, EnvelopeError>;

/// A parse result as a comparable list: each record with its raw slice (none for one record).
fn flat(r: Result<Records<'_>, EnvelopeError>) -> Flat<'_> {
    r.map(|recs| match recs {
        Records::Single(rec) => vec![(None, rec)],
        Records::Many(many) => many
            .into_iter()
            .map(|(raw, r)| (Some(raw.get()), r))
            .collect(),
    })
}

/// Whenever the scanner reads a body, serde reads it the same way; and `records` always
/// answers what serde answers. Returns whether the scanner read it.
fn scanner_agrees(body: &[u8]) -> bool {
    let serde = flat(records_serde(body));
    assert_eq!(
        flat(records(body)),
        serde,
        "{}",
        String::from_utf8_lossy(body)
    );
    match scanned(body) {
        Some(recs) => {
            assert_eq!(flat(Ok(recs)), serde, "{}", String::from_utf8_lossy(body));
            true
        }
        None => false,
    }
}

/// The recorded MinIO bodies (`tests/fixtures/minio-events`), read once.
static FIXTURES: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(read_fixtures);

fn read_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minio-events");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 19, "the MinIO fixtures are there");
    out
}

/// Every recorded MinIO body takes the scanner (the fast path is the common one), with
/// serde's answer; the multi-record one with the same raw slices.
#[test]
fn the_scanner_reads_every_fixture_as_serde_does() {
    for (name, body) in FIXTURES.iter() {
        assert!(scanner_agrees(body), "{name} falls back to serde");
    }
}

/// Hand-picked edges of JSON and of the shapes read: each one either takes the scanner with
/// serde's answer or falls back to serde (marked `false`: serde must see it).
#[test]
fn the_scanner_leaves_every_edge_to_serde_or_agrees() {
    let rec = |obj: &str| {
        format!(
            r#"{{"Records":[{{"eventName":"e","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k",{obj}}}}}}}]}}"#
        )
    };
    let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let cases: Vec<(String, bool)> = vec![
        (rec(r#""versionId":"v""#), true),
        (rec(r#""versionId":null,"eTag":"E""#), true),
        (rec(r#""versionId":"v","versionId":"w""#), false),
        (rec(r#""versionId":1"#), false),
        (rec(r#""versionId":"v\u0041""#), false),
        (rec(r#""versionId":"v","x":"a\"b""#), false),
        (rec("\"versionId\":\"v\",\"x\":\"a\u{1}b\""), false),
        (rec(r#""versionId":"v","x":"é","size":-0.5e+3"#), true),
        (rec(r#""versionId":"v","size":01"#), false),
        (rec(r#""versionId":"v","size":1."#), false),
        (rec(r#""versionId":"v","size":-"#), false),
        (rec(r#""versionId":"v","size":1e"#), false),
        (rec(r#""versionId":"v","x":[1,]"#), false),
        (rec(r#""versionId":"v","x":{"a":1,}"#), false),
        (rec(r#""versionId":"v","x":nul"#), false),
        (rec(r#""versionId":"v","x":[true,false,null,{},[]]"#), true),
        (
            rec(r#""versionId":"v","userMetadata":{"X-Amz-Replication-Status":"PENDING"}"#),
            true,
        ),
        (
            rec(r#""versionId":"v","userMetadata":{"X-Amz-Replication-Status":null}"#),
            false,
        ),
        (
            rec(
                r#""versionId":"v","userMetadata":{"a":null,"x-minio-internal-replication-status":"t=PENDING;"}"#,
            ),
            true,
        ),
        (rec(r#""versionId":"v","userMetadata":null"#), true),
        (
            rec(&format!(r#""versionId":"v","x":{}"#, nest(MAX_DEPTH - 5))),
            true,
        ),
        (
            rec(&format!(r#""versionId":"v","x":{}"#, nest(MAX_DEPTH - 4))),
            false,
        ),
        (rec(r#""key":"k2","versionId":"v""#), false),
        (r#"{"Records":[{"eventName":null,"s3":null}]}"#.into(), true),
        (r#"{"Records":[{"eventName":"e","s3":[]}]}"#.into(), false),
        (r#"{"Records":[1]}"#.into(), false),
        (r#"{"Records":[]}"#.into(), false),
        (r#"{"Records":{}}"#.into(), false),
        (r#"{"Records":null}"#.into(), false),
        (r#"{"Records":[{}],"Records":[{}]}"#.into(), false),
        (r#"{"Rec\u006frds":[{}]}"#.into(), false),
        (
            r#"{"x":{"Records":[{}]},"Records":[{},{"s3":{}}]}"#.into(),
            true,
        ),
        (" \t\r\n{ \"Records\" : [ { } , { } ] } \n".into(), true),
        (r#"{"Records":[{}]} x"#.into(), false),
        (r#"{"Records":[{}]}{}"#.into(), false),
        ("\u{feff}{\"Records\":[{}]}".into(), false),
        (r#"["Records"]"#.into(), false),
        (r#"{"Records":[{}]"#.into(), false),
        (r#"{"Records":[{"eventName":"e"#.into(), false),
    ];
    for (body, scanned) in cases {
        assert_eq!(scanner_agrees(body.as_bytes()), scanned, "{body}");
    }
    let mut bad_utf8 = rec(r#""versionId":"v","x":"ab""#).into_bytes();
    let at = bad_utf8.len() - 8;
    bad_utf8[at] = 0xff;
    assert!(!scanner_agrees(&bad_utf8));
}

mod generated {
    use proptest::{prelude::*, sample::select};

    use super::{FIXTURES, scanner_agrees};

    const KEYS: &[&str] = &[
        "eventName",
        "s3",
        "bucket",
        "name",
        "object",
        "key",
        "versionId",
        "sequencer",
        "eTag",
        "userMetadata",
        "X-Amz-Replication-Status",
        "x-minio-internal-replication-status",
        "Records",
        "size",
        "é",
    ];

    /// Leaves: the strings the read fields expect (plain, form-encoded, badly encoded, with
    /// escapes) and the other JSON scalars, valid or nearly so.
    fn leaf() -> impl Strategy<Value = String> {
        select(vec![
            r#""v1""#,
            r#""""#,
            r#""null""#,
            r#""a%2Fb+c""#,
            r#""bad%zz""#,
            r#""%FF""#,
            r#""PENDING""#,
            r#""t=PENDING;""#,
            r#""\u0041""#,
            r#""x\"y""#,
            r#""é""#,
            "null",
            "true",
            "false",
            "0",
            "-1.5e3",
            "01",
            "1.",
            "{}",
            "[]",
        ])
        .prop_map(str::to_owned)
    }

    /// JSON-like values: objects over the keys the reader knows (so records, `s3` and
    /// `userMetadata` shapes come up, with repeats and wrong types), arrays, and leaves,
    /// joined with random whitespace.
    fn value() -> impl Strategy<Value = String> {
        leaf().prop_recursive(5, 48, 6, |inner| {
            let ws = select(vec!["", " ", "\n", "\t", "\r\n "]);
            prop_oneof![
                (
                    proptest::collection::vec((select(KEYS), inner.clone()), 0..6),
                    ws.clone()
                )
                    .prop_map(|(fields, ws)| {
                        let body: Vec<String> = fields
                            .iter()
                            .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
                            .collect();
                        format!("{{{}{ws}}}", body.join(","))
                    }),
                (proptest::collection::vec(inner, 0..4), ws)
                    .prop_map(|(items, ws)| format!("[{ws}{}{ws}]", items.join(","))),
            ]
        })
    }

    /// A record shaped as MinIO's, each read field drawn from the leaves or left out.
    fn record() -> impl Strategy<Value = String> {
        let f = || proptest::option::of(prop_oneof![3 => Just(r#""v1""#.to_owned()), 1 => leaf()]);
        (f(), f(), f(), f(), f(), f(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(event, name, key, version, sequencer, etag, meta, extra)| {
                let field = |k: &str, v: Option<String>| v.map(|v| format!(r#""{k}":{v},"#)).unwrap_or_default();
                format!(
                    r#"{{{}"s3":{{"bucket":{{{}"x":0}},"object":{{{}{}{}{}{}"size":1}}}},{}"y":[]}}"#,
                    field("eventName", event),
                    field("name", name),
                    field("key", key),
                    field("versionId", version),
                    field("sequencer", sequencer),
                    field("eTag", etag),
                    field("userMetadata", meta),
                    field("extra", extra),
                )
            })
    }

    /// Bodies: one to three records (generated or free-form values) under `Records`, with
    /// other top-level keys.
    pub(super) fn body() -> impl Strategy<Value = String> {
        let rec = prop_oneof![3 => record(), 1 => value()];
        (
            proptest::collection::vec(rec, 1..4),
            proptest::option::of(value()),
        )
            .prop_map(|(recs, other)| match other {
                Some(v) => format!(r#"{{"EventName":{v},"Records":[{}]}}"#, recs.join(",")),
                None => format!(r#"{{"Records":[{}]}}"#, recs.join(",")),
            })
    }

    /// Byte edits: the JSON syntax and UTF-8 edges a mutation can hit.
    fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        let bytes = b"\"\\{}[],:0-.eE+ntfu \t\x01\xc3\xa9a".to_vec();
        proptest::collection::vec((any::<usize>(), 0u8..3, select(bytes)), 1..4)
    }

    fn apply(mut body: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, kind, b) in edits {
            let at = at % (body.len() + 1);
            match kind {
                0 => body.insert(at, b),
                1 if at < body.len() => {
                    body.remove(at);
                }
                _ if at < body.len() => body[at] = b,
                _ => body.push(b),
            }
        }
        body
    }

    proptest! {
        /// Generated bodies: where the scanner answers, serde answers the same.
        #[test]
        fn the_scanner_agrees_with_serde_on_generated_bodies(body in body()) {
            scanner_agrees(body.as_bytes());
        }

        /// Generated bodies and fixtures, mutated a byte at a time: the syntax errors, stray
        /// escapes, broken UTF-8 and odd numbers near the fields the scanner reads.
        #[test]
        fn the_scanner_agrees_with_serde_on_mutated_bodies(
            body in body(),
            fixture in 0usize..64,
            edits in edits(),
        ) {
            scanner_agrees(&apply(body.into_bytes(), &edits));
            let (_, f) = &FIXTURES[fixture % FIXTURES.len()];
            scanner_agrees(&apply(f.clone(), &edits));
        }
    }
}

/// The generated bodies reach both sides: the scanner reads a good share of them, and serde
/// gets a good share (so the property above compares something on each side).
#[test]
fn generated_bodies_reach_the_scanner_and_serde() {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = generated::body();
    let (mut hits, mut misses) = (0, 0);
    for _ in 0..400 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        match scanner_agrees(body.as_bytes()) {
            true => hits += 1,
            false => misses += 1,
        }
    }
    assert!(hits >= 40 && misses >= 40, "scanner {hits}, serde {misses}");
}
