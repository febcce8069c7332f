//! The two listing documents, parsed whole with quick-xml's serde reader into one page.
//!
//! Strictness is the point: the root must be the expected element, a truncated page must say
//! where to continue, and every entry must carry a key and a parseable `LastModified`. Anything
//! else is an error, and the caller then uses nothing of the page. Keys are decoded only when the
//! server says it encoded them (`<EncodingType>url</EncodingType>`): AWS and MinIO do, with form
//! rules (`+` is a space); some S3-compatible servers ignore `encoding-type` and send raw keys.

use serde::Deserialize;

use crate::pipeline::parse::decode_form_component;

/// One listed object version or delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The decoded object name.
    pub key: String,
    /// `None` on an unversioned listing.
    pub version_id: Option<String>,
    /// Without quotes; empty for delete markers.
    pub etag: String,
    pub size: u64,
    pub last_modified: jiff::Timestamp,
    pub delete_marker: bool,
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Versions { key: String, version_id: String },
    Objects { token: String },
}

/// One complete listing page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub entries: Vec<Listed>,
    pub next: Option<Cursor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntry {
    key: Option<String>,
    version_id: Option<String>,
    #[serde(rename = "ETag")]
    etag: Option<String>,
    size: Option<u64>,
    last_modified: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVersions {
    is_truncated: Option<bool>,
    next_key_marker: Option<String>,
    next_version_id_marker: Option<String>,
    encoding_type: Option<String>,
    #[serde(default)]
    version: Vec<RawEntry>,
    #[serde(default)]
    delete_marker: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawObjects {
    is_truncated: Option<bool>,
    next_continuation_token: Option<String>,
    encoding_type: Option<String>,
    #[serde(default)]
    contents: Vec<RawEntry>,
}

/// The name of the document's root element (quick-xml's serde reader does not check it).
fn root_name(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        let start = rest.find('<')?;
        rest = &rest[start + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        return Some(&rest[..end]);
    }
}

fn expect_root(text: &str, want: &str) -> Result<(), String> {
    match root_name(text) {
        Some(r) if r == want => Ok(()),
        Some("Error") => Err("an S3 error document instead of a listing".into()),
        Some(r) => Err(format!("unexpected root element <{r}>, wanted <{want}>")),
        None => Err("no XML element".into()),
    }
}

fn entry(raw: RawEntry, url_encoded: bool, marker: bool) -> Result<Listed, String> {
    let key = raw
        .key
        .filter(|k| !k.is_empty())
        .ok_or("an entry without Key")?;
    let key = if url_encoded {
        decode_form_component(&key).map_err(|e| format!("undecodable key: {e}"))?
    } else {
        key
    };
    let lm = raw.last_modified.ok_or("an entry without LastModified")?;
    let last_modified = lm
        .parse::<jiff::Timestamp>()
        .map_err(|e| format!("bad LastModified {lm:?}: {e}"))?;
    let etag = raw.etag.unwrap_or_default().trim_matches('"').to_string();
    Ok(Listed {
        key,
        version_id: raw.version_id,
        etag,
        size: raw.size.unwrap_or(0),
        last_modified,
        delete_marker: marker,
    })
}

/// A `ListVersionsResult` page.
pub fn parse_versions(text: &str) -> Result<Page, String> {
    expect_root(text, "ListVersionsResult")?;
    let raw: RawVersions = quick_xml::de::from_str(text).map_err(|e| e.to_string())?;
    let enc = raw.encoding_type.as_deref() == Some("url");
    let mut entries = Vec::with_capacity(raw.version.len() + raw.delete_marker.len());
    for v in raw.version {
        entries.push(entry(v, enc, false)?);
    }
    for d in raw.delete_marker {
        entries.push(entry(d, enc, true)?);
    }
    let next = match raw.is_truncated {
        Some(true) => {
            let key = raw
                .next_key_marker
                .filter(|k| !k.is_empty())
                .ok_or("a truncated page without NextKeyMarker")?;
            let key = if enc {
                decode_form_component(&key).map_err(|e| format!("undecodable marker: {e}"))?
            } else {
                key
            };
            let version_id = raw.next_version_id_marker.unwrap_or_default();
            Some(Cursor::Versions { key, version_id })
        }
        Some(false) => None,
        None => return Err("no IsTruncated".into()),
    };
    Ok(Page { entries, next })
}

/// A `ListBucketResult` (ListObjectsV2) page.
pub fn parse_objects(text: &str) -> Result<Page, String> {
    expect_root(text, "ListBucketResult")?;
    let raw: RawObjects = quick_xml::de::from_str(text).map_err(|e| e.to_string())?;
    let enc = raw.encoding_type.as_deref() == Some("url");
    let entries = raw
        .contents
        .into_iter()
        .map(|c| entry(c, enc, false))
        .collect::<Result<Vec<_>, _>>()?;
    let next = match raw.is_truncated {
        Some(true) => Some(Cursor::Objects {
            token: raw
                .next_continuation_token
                .filter(|t| !t.is_empty())
                .ok_or("a truncated page without NextContinuationToken")?,
        }),
        Some(false) => None,
        None => return Err("no IsTruncated".into()),
    };
    Ok(Page { entries, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSIONS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>
<KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker><NextKeyMarker>in%2Fb+c</NextKeyMarker>
<NextVersionIdMarker>v2</NextVersionIdMarker><MaxKeys>2</MaxKeys><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated>
<Version><Key>in%2Fa%2Bb+c%25%C3%A9</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest>
<LastModified>2025-03-14T10:21:33.497Z</LastModified><ETag>&quot;9b2c&quot;</ETag><Size>48213</Size></Version>
<DeleteMarker><Key>in%2Fb+c</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest>
<LastModified>2025-03-14T10:22:00.000Z</LastModified></DeleteMarker>
</ListVersionsResult>"#;

    #[test]
    fn versions_page_decodes_keys_and_continues() {
        let p = parse_versions(VERSIONS).expect("parses");
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].key, "in/a+b c%é");
        assert_eq!(p.entries[0].etag, "9b2c");
        assert_eq!(p.entries[0].size, 48213);
        assert!(p.entries[1].delete_marker);
        assert_eq!(
            p.next,
            Some(Cursor::Versions {
                key: "in/b c".into(),
                version_id: "v2".into()
            })
        );
    }

    #[test]
    fn raw_keys_stay_raw_without_encoding_type() {
        let text = VERSIONS.replace("<EncodingType>url</EncodingType>", "");
        let p = parse_versions(&text).expect("parses");
        assert_eq!(p.entries[0].key, "in%2Fa%2Bb+c%25%C3%A9");
    }

    #[test]
    fn incomplete_or_foreign_documents_are_errors() {
        let cut = &VERSIONS[..VERSIONS.len() / 2];
        assert!(parse_versions(cut).is_err());
        let no_marker = VERSIONS.replace("<NextKeyMarker>in%2Fb+c</NextKeyMarker>", "");
        assert!(parse_versions(&no_marker).is_err());
        assert!(parse_versions("<Error><Code>AccessDenied</Code></Error>").is_err());
        assert!(parse_versions("garbage").is_err());
        let bad_time = VERSIONS.replace("2025-03-14T10:21:33.497Z", "yesterday");
        assert!(parse_versions(&bad_time).is_err());
        assert!(parse_objects(VERSIONS).is_err());
    }

    #[test]
    fn objects_page_parses() {
        let text = r#"<ListBucketResult><IsTruncated>false</IsTruncated><EncodingType>url</EncodingType>
<Contents><Key>a+b</Key><LastModified>2025-03-14T10:21:33.000Z</LastModified><ETag>"e1"</ETag><Size>3</Size></Contents>
</ListBucketResult>"#;
        let p = parse_objects(text).expect("parses");
        assert_eq!(p.entries[0].key, "a b");
        assert_eq!(p.entries[0].version_id, None);
        assert!(p.next.is_none());
    }
}
