//! Form decoding of `s3.object.key`: MinIO sends the key `url.QueryEscape`d, and the identity
//! and the split bodies need the key as stored, so the decoding is strict (a bad escape is the
//! record's `invalid`, never a guess).

use super::RecordError;

/// Decodes one form-urlencoded component strictly: `+` is a space, `%XX` a byte, anything else
/// after `%` is an error (MinIO's `url.QueryEscape` never produces one), and the result must be UTF-8.
pub fn decode_form_component(s: &str) -> Result<String, RecordError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_val(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_val(*b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(RecordError::BadEscape),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| RecordError::NotUtf8)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_follows_query_escape() {
        assert_eq!(
            decode_form_component("input%2Fmy+photos%2Fse%C3%B1al+%C3%BC%2B%C3%9F+2025.jpg")
                .unwrap(),
            "input/my photos/señal ü+ß 2025.jpg"
        );
        assert_eq!(decode_form_component("a%2bb").unwrap(), "a+b");
        assert_eq!(decode_form_component("plain").unwrap(), "plain");
        assert_eq!(
            decode_form_component("bad%2").unwrap_err(),
            RecordError::BadEscape
        );
        assert_eq!(
            decode_form_component("bad%zz").unwrap_err(),
            RecordError::BadEscape
        );
        assert_eq!(
            decode_form_component("%FF").unwrap_err(),
            RecordError::NotUtf8
        );
    }
}
