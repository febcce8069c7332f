//! Event-name patterns (`policy.forward`): a leaf of its own because both the configuration (which
//! refuses a bad pattern at start) and the policy (which matches with it) read it, and neither
//! should import the other for it.

/// A wildcard event-name pattern (`*` matches any run of characters, including none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// No `*`: matching is plain equality. Every default pattern is literal, and the glob's
    /// byte-by-byte walk over nine of them was most of the policy's time (BENCHMARKS.md).
    literal: bool,
}

impl Pattern {
    pub fn new(p: &str) -> Result<Self, String> {
        if p.is_empty() {
            return Err("an event pattern must not be empty".into());
        }
        if !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("event pattern `{p}` has non-printable characters"));
        }
        Ok(Self {
            text: p.to_owned(),
            literal: !p.contains('*'),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        if self.literal {
            return self.text == name;
        }
        glob(self.text.as_bytes(), name.as_bytes())
    }
}

/// Iterative wildcard match with one backtrack point: linear in practice, no recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_minio_wildcards() {
        let p = Pattern::new("s3:ObjectCreated:*").unwrap();
        assert!(p.matches("s3:ObjectCreated:Put"));
        assert!(p.matches("s3:ObjectCreated:"));
        assert!(!p.matches("s3:ObjectRemoved:Delete"));
        assert!(Pattern::new("*").unwrap().matches("anything"));
        assert!(
            Pattern::new("s3:*:Put")
                .unwrap()
                .matches("s3:ObjectCreated:Put")
        );
        assert!(
            !Pattern::new("s3:*:Put")
                .unwrap()
                .matches("s3:ObjectCreated:Post")
        );
        assert!(Pattern::new("a*b*c").unwrap().matches("aXXbYYbZc"));
        // A pattern without `*` takes the equality shortcut; it answers as the glob does.
        let lit = Pattern::new("s3:ObjectCreated:Put").unwrap();
        for name in [
            "s3:ObjectCreated:Put",
            "s3:ObjectCreated:Pu",
            "s3:ObjectCreated:Putt",
            "S3:ObjectCreated:Put",
            "",
        ] {
            assert_eq!(
                lit.matches(name),
                glob(lit.text.as_bytes(), name.as_bytes())
            );
        }
        assert!(lit.matches("s3:ObjectCreated:Put"));
    }
}
