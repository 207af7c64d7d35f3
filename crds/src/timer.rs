//! BGP timers as users write them: whole seconds in Go duration syntax, such as
//! `90s`, `1m30s` or `0s` (MetalLB's spelling, so manifests carry over).

use std::time::Duration;

/// The message tail for a timer that is not whole seconds, shared with the schema.
pub const TIMER_SYNTAX: &str = "is not a whole number of seconds: write it like 90s, 1m30s or 0s";

/// Why a timer string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' {TIMER_SYNTAX}")]
pub struct TimerError(pub String);

/// Parses `[Nh][Nm][Ns]` (or `0`) into a duration of whole seconds.
pub fn parse_timer(text: &str) -> Result<Duration, TimerError> {
    let err = || TimerError(text.to_string());
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    // Units must come in the order h, m, s, each at most once.
    for (unit, scale) in [('h', 3600u64), ('m', 60), ('s', 1)] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(unit) {
            let value: u64 = rest[..digits].parse().map_err(|_| err())?;
            total = value
                .checked_mul(scale)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(err)?;
            rest = &rest[digits + 1..];
        }
    }
    if !rest.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds back in the same syntax (`90s`).
pub fn format_timer(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// A timer in the NodeAnnouncement contract: a duration of whole seconds,
/// written as `90s`. Read once, by serde; the schema's rules are the parser's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer(pub Duration);

impl serde::Serialize for Timer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_timer(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Timer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Timer, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        parse_timer(&text)
            .map(Timer)
            .map_err(serde::de::Error::custom)
    }
}

impl From<Duration> for Timer {
    fn from(duration: Duration) -> Timer {
        Timer(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_in_go_syntax_parse() {
        let secs = |s: &str| parse_timer(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("1m30s"), Ok(90));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("2m"), Ok(120));
        assert_eq!(secs("0s"), Ok(0));
        assert_eq!(secs("0"), Ok(0));
    }

    #[test]
    fn a_timer_reads_and_writes_as_seconds() {
        let timer: Timer = serde_json::from_value(serde_json::json!("1m30s")).unwrap();
        assert_eq!(timer, Timer(Duration::from_secs(90)));
        assert_eq!(
            serde_json::to_value(timer).unwrap(),
            serde_json::json!("90s")
        );
        let error = serde_json::from_value::<Timer>(serde_json::json!("500ms")).unwrap_err();
        assert!(
            error.to_string().contains("'500ms' is not a whole number"),
            "{error}"
        );
    }

    #[test]
    fn fractions_other_units_and_garbage_are_refused() {
        for bad in [
            "", "90", "1.5s", "500ms", "s", "1s1m", "-3s", "3 s", "1h1h", "3S",
        ] {
            let err = parse_timer(bad).expect_err(bad);
            assert!(
                err.to_string()
                    .starts_with(&format!("'{bad}' is not a whole number"))
            );
        }
    }
}
