//! Reading the events file: JSON lines in the format `beehive tail --json` and
//! `beehive record` print ([`event_from_json`]).

use std::path::Path;

use super::super::Failure;
use crate::event::Event;
use crate::event::json::event_from_json;

/// One event of the events file, with the line it came from.
pub(super) struct Input {
    /// The event as a consumer would receive it.
    pub(super) event: Event,
    /// Its line in the events file, from 1.
    pub(super) line: usize,
}

/// Reads `path`: one event per line as [`event_from_json`] reads it (`stream` required;
/// `id`, `body` — lossless JSON, absent for none —, `meta` and `deliveries` optional);
/// blank lines are skipped. A line that is not such an event is bad usage, named
/// `file:line`.
pub(super) fn read_events(path: &Path) -> Result<Vec<Input>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the events file {}: {e}",
            path.display()
        ))
    })?;
    let mut inputs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event = parse_line(line)
            .map_err(|why| Failure::Usage(format!("{}:{number}: {why}", path.display())))?;
        inputs.push(Input {
            event,
            line: number,
        });
    }
    Ok(inputs)
}

fn parse_line(line: &str) -> Result<Event, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON value: {e}"))?;
    event_from_json(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_json_line_is_an_event() {
        let event = parse_line(
            r#"{"id":"1700000000000-3","stream":"colors","body":{"color":"red"},"meta":{"version":"1"},"deliveries":2}"#,
        )
        .unwrap();
        assert_eq!(event.id(), "1700000000000-3");
        assert_eq!(event.stream(), "colors");
        assert_eq!(event.tag("version"), "1");
        assert_eq!(event.deliveries(), 2);
        assert_eq!(
            event.body_json().unwrap().unwrap(),
            serde_json::json!({"color": "red"})
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, why) in [
            ("{", "not a JSON value"),
            (r#"{"id":"1-0"}"#, "stream"),
            (r#"{"stream":"s","meta":{"k":1}}"#, "meta.k"),
        ] {
            let error = parse_line(line).err().unwrap();
            assert!(error.contains(why), "{line}: {error}");
        }
    }
}
