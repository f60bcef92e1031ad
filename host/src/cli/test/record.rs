//! What a handler did with one event — its outcome, what it published, what it logged, the
//! publishes the host refused — as compared, shown in diffs and written to the expectation
//! file (one JSON object per line).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::super::Failure;
use super::text;

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

/// The expectation file: its lines, each matched by ID to at most one event.
///
/// Lines are read as JSON only when needed: a line that is byte for byte the line the
/// event's result makes (as `--update` wrote it) matches without being read; any other
/// line is read as a [`Record`] and compared as one, so a line that says the same in other
/// words (spacing, key order) matches too. Every line not matched byte for byte is read,
/// so a line that is not a record is still an error (see [`Expectations::error`]).
pub(super) struct Expectations {
    path: PathBuf,
    text: String,
    lines: Vec<Line>,
    /// Where the first line not yet matched may be (expectations usually follow the
    /// events, so the next event's usually is the first one left).
    cursor: usize,
    /// The lines not yet matched of each ID, in order; built at the first event whose
    /// expectation is not at the cursor.
    by_id: Option<HashMap<String, VecDeque<usize>>>,
    /// The first bad line found: its number and the error.
    bad: Option<(usize, Failure)>,
}

struct Line {
    /// Where the line is in the text.
    range: Range<usize>,
    /// Its line number, from 1.
    number: usize,
    /// Where its ID is in the text, when it was taken from the text; otherwise the ID is
    /// the record's, and a line that is not a record has none (it matches nothing).
    id: Option<Range<usize>>,
    /// The line read as a record, once it was.
    record: Option<Box<Record>>,
    /// Matched to an event.
    taken: bool,
}

impl Line {
    /// The line's ID; `text` is the expectation file.
    fn id<'a>(&'a self, text: &'a str) -> Option<&'a str> {
        match (&self.id, &self.record) {
            (Some(range), _) => text.get(range.clone()),
            (None, Some(record)) => Some(&record.id),
            (None, None) => None,
        }
    }
}

/// An expectation matched to an event: its line number, and the record when the line is
/// not the event's line byte for byte.
pub(super) enum Matched {
    /// The line is the event's result, as `--update` writes it.
    Same,
    /// The line read as a record, and its line number.
    Read(Record, usize),
    /// The line is not a record (see [`Expectations::error`]).
    Bad,
}

impl Expectations {
    /// Reads an expectation file: a missing or unreadable file is bad usage.
    pub(super) fn read(path: &Path) -> Result<Expectations, Failure> {
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
        let mut expectations = Expectations {
            path: path.to_path_buf(),
            text: String::new(),
            lines: Vec::new(),
            cursor: 0,
            by_id: None,
            bad: None,
        };
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // `line` (and its ID) are parts of `text`.
            let offset = |part: &str| part.as_ptr() as usize - text.as_ptr() as usize;
            let start = offset(line);
            let mut entry = Line {
                range: start..start + line.len(),
                number: index + 1,
                id: text::line_id(line).map(|id| offset(id)..offset(id) + id.len()),
                record: None,
                taken: false,
            };
            if entry.id.is_none() {
                match expectations.parse(line, entry.number) {
                    Some(record) => entry.record = Some(Box::new(record)),
                    None => entry.taken = true,
                }
            }
            expectations.lines.push(entry);
        }
        expectations.text = text;
        Ok(expectations)
    }

    /// The expectation file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `line` as a record; `None` for a line that is not one (kept as the error when it
    /// is the first such line).
    fn parse(&mut self, line: &str, number: usize) -> Option<Record> {
        match serde_json::from_str::<Record>(line) {
            Ok(record) => Some(record),
            Err(e) => {
                if self.bad.as_ref().is_none_or(|(first, _)| number < *first) {
                    self.bad = Some((
                        number,
                        Failure::Usage(format!(
                            "{}:{number}: expected a record such as {{\"id\": \"1-0\", \"outcome\": \"ack\", \"publishes\": [], \"logs\": []}}: {e}",
                            self.path.display(),
                        )),
                    ));
                }
                None
            }
        }
    }

    /// The first line not yet matched whose ID is `id`, compared with `actual` (the
    /// event's line); `None` when there is none.
    pub(super) fn take(&mut self, id: &str, actual: &[u8]) -> Option<Matched> {
        let index = self.find(id)?;
        self.lines[index].taken = true;
        let line = &self.lines[index];
        let number = line.number;
        if let Some(record) = &line.record {
            return Some(Matched::Read(Record::clone(record), number));
        }
        let range = line.range.clone();
        if self.text.as_bytes()[range.clone()] == *actual {
            return Some(Matched::Same);
        }
        let text = std::mem::take(&mut self.text);
        let read = self.parse(&text[range], number);
        self.text = text;
        Some(read.map_or(Matched::Bad, |record| Matched::Read(record, number)))
    }

    fn find(&mut self, id: &str) -> Option<usize> {
        while self.lines.get(self.cursor).is_some_and(|line| line.taken) {
            self.cursor += 1;
        }
        if self
            .lines
            .get(self.cursor)
            .is_some_and(|line| line.id(&self.text) == Some(id))
        {
            return Some(self.cursor);
        }
        let (lines, text) = (&self.lines, &self.text);
        let by_id = self.by_id.get_or_insert_with(|| {
            let mut by_id: HashMap<String, VecDeque<usize>> = HashMap::new();
            for (index, line) in lines.iter().enumerate() {
                if let (false, Some(id)) = (line.taken, line.id(text)) {
                    by_id.entry(id.to_string()).or_default().push_back(index);
                }
            }
            by_id
        });
        let left = by_id.get_mut(id)?;
        while let Some(index) = left.pop_front() {
            if !lines[index].taken {
                return Some(index);
            }
        }
        None
    }

    /// The lines no event matched, in order, read as records, with their line numbers.
    pub(super) fn left(&mut self) -> Vec<(Record, usize)> {
        let mut left = Vec::new();
        for index in 0..self.lines.len() {
            let line = &mut self.lines[index];
            if line.taken {
                continue;
            }
            line.taken = true;
            let number = line.number;
            if let Some(record) = line.record.take() {
                left.push((*record, number));
                continue;
            }
            let range = line.range.clone();
            let text = std::mem::take(&mut self.text);
            if let Some(record) = self.parse(&text[range], number) {
                left.push((record, number));
            }
            self.text = text;
        }
        left
    }

    /// The first line of the file that is not a record, among those read so far: after
    /// [`left`](Self::left), of the whole file.
    pub(super) fn error(&mut self) -> Option<Failure> {
        self.bad.take().map(|(_, failure)| failure)
    }
}

/// Writes `lines` (expectation lines, each ending in a newline) to `path` through a
/// temporary file renamed into place.
pub(super) fn write_expectations(path: &Path, lines: &[u8]) -> Result<(), Failure> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, lines)
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
