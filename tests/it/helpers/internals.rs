//! The crate internals the tests reach past the HTTP and CLI surface for (the verdict set, the
//! shadow rule, the key deriver and its record type, the fuzz checker), imported here only, so
//! that a type moving inside `src/` is one edit in this file. Tests import this module by name
//! (`crate::helpers::internals`), not through the glob.

use std::borrow::Cow;

use dedup_gateway::pipeline::parse::{Marking, Record, VersionSource};
pub use dedup_gateway::pipeline::{
    Verdict, check::check_body, key::KeyDeriver, policy::Class, shadow::would_drop,
};

/// A put record of `in/photo.jpg` at version `v1`, as the parser makes it: input for the key
/// deriver.
pub fn put_record() -> Record<'static> {
    Record {
        event_name: Cow::Borrowed("s3:ObjectCreated:Put"),
        bucket: Cow::Borrowed("in"),
        key: "photo.jpg".into(),
        version: Cow::Borrowed("v1"),
        version_source: VersionSource::VersionId,
        version_id: None,
        etag: None,
        marking: Marking::Clean,
    }
}

/// The verdict named `name`, as the answers and metrics spell it.
pub fn verdict_named(name: &str) -> Verdict {
    *Verdict::ALL
        .iter()
        .find(|v| v.as_str() == name)
        .expect(name)
}
