//! What a handler did with one event — its outcome, what it published, what it logged, the
//! publishes the host refused — as compared, shown in diffs and written to the expectation
//! file (one JSON object per line).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::super::Failure;

/// One event's result, and one line of the expectation file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Record {
    /// The event's entry ID.
    pub(super) id: String,
    /// `ack`, `retry: <reason>`, `dead-letter: <reason>`, or
    /// `batch failed (<kind>): <message>` when the handler failed the event's batch.
    pub(super) outcome: String,
    /// What the handler published, in order (nothing when its batch failed: production
    /// publishes nothing of a failed batch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) publishes: Vec<Published>,
    /// What it logged: `<level>: <message>` through the host's log, `stdout: <text>` and
    /// `stderr: <text>` for its standard output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) logs: Vec<String>,
    /// Publishes the host refused (the guest saw an error): the stream named, when it was
    /// outside the allow-list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) refused: Vec<String>,
    /// With `--count` above 1: on the first event of each batch, how many events the batch
    /// had; that event carries the publishes, logs and refusals of the whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) batch: Option<usize>,
}

/// One published event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Published {
    /// The target stream.
    pub(super) stream: String,
    /// The body as JSON; absent for a metadata-only event (`null` is a MessagePack nil).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(super) body: Option<Value>,
    /// The metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) meta: BTreeMap<String, String>,
}

/// A field that is present is `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Record {
    /// The record as lines of text, for diffs: the outcome, then each publish, log line and
    /// refusal (messages of several lines continue on indented lines).
    pub(super) fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        push_text(&mut lines, "outcome ", &self.outcome);
        if let Some(n) = self.batch {
            lines.push(format!(
                "batch of {n} events (its publishes and logs are listed on its first event)"
            ));
        }
        for publish in &self.publishes {
            let mut line = format!("publish to {}", publish.stream);
            if let Some(body) = &publish.body {
                line.push_str(&format!(" body={body}"));
            }
            if !publish.meta.is_empty() {
                let meta = serde_json::to_string(&publish.meta).unwrap_or_default();
                line.push_str(&format!(" meta={meta}"));
            }
            lines.push(line);
        }
        for log in &self.logs {
            push_text(&mut lines, "log ", log);
        }
        for stream in &self.refused {
            lines.push(format!("refused publish to {stream}"));
        }
        lines
    }
}

fn push_text(lines: &mut Vec<String>, head: &str, text: &str) {
    let mut parts = text.lines();
    lines.push(format!("{head}{}", parts.next().unwrap_or("")));
    for part in parts {
        lines.push(format!("    {part}"));
    }
}

/// An expectation with the line it came from.
pub(super) struct Expected {
    pub(super) record: Record,
    pub(super) line: usize,
}

/// Reads an expectation file; a line that is not a record is bad usage, named `file:line`.
pub(super) fn read_expectations(path: &Path) -> Result<Vec<Expected>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::Usage(format!(
                "no expectation file {}: write it with --update (or name another with --expect)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Failure::Usage(format!(
                "cannot read the expectation file {}: {e}",
                path.display()
            )));
        }
    };
    let mut expected = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|e| {
            Failure::Usage(format!(
                "{}:{}: expected a record such as {{\"id\": \"1-0\", \"outcome\": \"ack\", \"publishes\": [], \"logs\": []}}: {e}",
                path.display(),
                index + 1
            ))
        })?;
        expected.push(Expected {
            record,
            line: index + 1,
        });
    }
    Ok(expected)
}

/// Writes `records` to `path`, one per line, through a temporary file renamed into place.
pub(super) fn write_expectations(path: &Path, records: &[Record]) -> Result<(), Failure> {
    let mut text = String::new();
    for record in records {
        text.push_str(&serde_json::to_string(record).expect("a record serializes"));
        text.push('\n');
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::Runtime(format!("cannot write {}: {e}", path.display()))
        })
}

/// One line of a diff.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DiffLine<'a> {
    /// In both.
    Same(&'a str),
    /// Expected, not seen.
    Expected(&'a str),
    /// Seen, not expected.
    Actual(&'a str),
}

/// A line diff of `expected` and `actual` (longest common subsequence; records are short).
pub(super) fn diff<'a>(expected: &'a [String], actual: &'a [String]) -> Vec<DiffLine<'a>> {
    let (n, m) = (expected.len(), actual.len());
    // common[i][j]: the LCS length of expected[i..] and actual[j..].
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if expected[i] == actual[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n.max(m));
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push(DiffLine::Same(&expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || common[i][j + 1] >= common[i + 1][j]) {
            out.push(DiffLine::Actual(&actual[j]));
            j += 1;
        } else {
            out.push(DiffLine::Expected(&expected[i]));
            i += 1;
        }
    }
    // Within a run of changes, show what was expected before what was seen.
    let mut k = 0;
    while k < out.len() {
        let start = k;
        while k < out.len() && !matches!(out[k], DiffLine::Same(_)) {
            k += 1;
        }
        out[start..k].sort_by_key(|line| matches!(line, DiffLine::Actual(_)));
        k = k.max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: &str) -> Record {
        Record {
            id: "1-0".into(),
            outcome: outcome.into(),
            publishes: vec![Published {
                stream: "out".into(),
                body: Some(serde_json::json!({"a": 1})),
                meta: BTreeMap::from([("k".to_string(), "v".to_string())]),
            }],
            logs: vec!["info: hello".into()],
            refused: Vec::new(),
            batch: None,
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut with_nil = record("ack");
        with_nil.publishes.push(Published {
            stream: "out".into(),
            body: Some(Value::Null),
            meta: BTreeMap::new(),
        });
        with_nil.publishes.push(Published {
            stream: "out".into(),
            body: None,
            meta: BTreeMap::from([("only".to_string(), "meta".to_string())]),
        });
        let line = serde_json::to_string(&with_nil).unwrap();
        assert!(
            line.starts_with(r#"{"id":"1-0","outcome":"ack","publishes":"#),
            "{line}"
        );
        assert!(
            !line.contains("refused") && !line.contains("batch"),
            "{line}"
        );
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back, with_nil);
    }

    #[test]
    fn a_typo_in_an_expectation_is_an_error() {
        assert!(
            serde_json::from_str::<Record>(r#"{"id":"1-0","outcome":"ack","publish":[]}"#).is_err()
        );
    }

    #[test]
    fn the_diff_shows_expected_then_actual() {
        let expected = record("ack").lines();
        let mut changed = record("dead-letter: bad\nsecond line");
        changed.logs.push("stdout: more".into());
        let actual = changed.lines();
        let shown: Vec<String> = diff(&expected, &actual)
            .iter()
            .map(|line| match line {
                DiffLine::Same(s) => format!("  {s}"),
                DiffLine::Expected(s) => format!("- {s}"),
                DiffLine::Actual(s) => format!("+ {s}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "- outcome ack",
                "+ outcome dead-letter: bad",
                "+     second line",
                r#"  publish to out body={"a":1} meta={"k":"v"}"#,
                "  log info: hello",
                "+ log stdout: more",
            ]
        );
    }
}
