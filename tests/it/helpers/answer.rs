//! What the gateway answered a webhook POST, the assertions tests make on it, and readers for
//! the `/metrics` text. The assertions are `#[track_caller]` and print the whole answer, so a
//! failure points at the test line with what the gateway said.

use serde_json::Value;

/// The answer to one webhook POST: status, `Retry-After` and the JSON body (`Null` when none).
#[derive(Debug, Clone)]
pub struct Posted {
    pub status: u16,
    pub retry_after: Option<String>,
    pub answer: Value,
}

impl Posted {
    /// Reads status, `Retry-After` and the JSON body of `resp`.
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let answer = resp.json().await.unwrap_or(Value::Null);
        Self {
            status,
            retry_after,
            answer,
        }
    }

    /// The verdicts of the answer, in record order.
    pub fn verdicts(&self) -> Vec<String> {
        verdicts(&self.answer)
    }

    /// The dedup key of the first record.
    pub fn key(&self) -> String {
        self.answer["results"][0]["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The reason of the first record (empty when there is none).
    pub fn reason(&self) -> &str {
        self.answer["results"][0]["reason"]
            .as_str()
            .unwrap_or_default()
    }

    /// Asserts the status.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.answer);
        self
    }

    /// Asserts the verdicts, in record order (whatever the status).
    #[track_caller]
    pub fn assert_verdicts(&self, want: &[&str]) -> &Self {
        assert_eq!(self.verdicts(), want, "{}", self.answer);
        self
    }

    /// Asserts the status and the verdicts.
    #[track_caller]
    pub fn assert(&self, status: u16, want: &[&str]) -> &Self {
        assert_eq!(
            (self.status, self.verdicts()),
            (status, want.iter().map(|v| v.to_string()).collect()),
            "{}",
            self.answer
        );
        self
    }

    /// Asserts the first record's reason.
    #[track_caller]
    pub fn assert_reason(&self, reason: &str) -> &Self {
        assert_eq!(self.reason(), reason, "{}", self.answer);
        self
    }
}

/// The verdicts of an answer, in record order.
pub fn verdicts(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["verdict"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The `error` string of an error answer, checked to be short.
#[track_caller]
pub fn error_reason(answer: &Value) -> String {
    let reason = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` in {answer}"));
    assert!(
        !reason.is_empty() && reason.len() < 200,
        "reason should be short: {reason}"
    );
    reason.to_string()
}

/// The value of the unlabelled sample `name` (as exposed, e.g. `..._total`) in a metrics text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of the samples `name{labels...}` (labels matched as a subset); 0 when absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
