//! The crate internals the tests reach past the HTTP and CLI surface for (the verdict set, the
//! shadow rule, the key deriver and its record type, the fuzz checker), imported here only, so
//! that a type moving inside `src/` is one edit in this file. Tests import this module by name
//! (`crate::helpers::internals`), not through the glob.

pub use dedup_gateway::pipeline::{
    Verdict,
    check::check_body,
    key::KeyDeriver,
    parse::{Marking, Record, VersionSource},
    policy::Class,
    shadow::would_drop,
};

/// The verdict named `name`, as the answers and metrics spell it.
pub fn verdict_named(name: &str) -> Verdict {
    *Verdict::ALL
        .iter()
        .find(|v| v.as_str() == name)
        .expect(name)
}
