//! Time, said one way everywhere: now, RFC 3339 dates, seconds, the duration flags.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: u64) -> String {
    aira_engine::time::rfc3339(secs)
}

/// Unix seconds as RFC 3339 (before 1970 as 1970), or `-` when unknown.
pub fn rfc3339_or_dash(secs: Option<i64>) -> String {
    secs.map_or_else(|| "-".into(), |s| rfc3339(s.max(0) as u64))
}

/// Unix milliseconds (as SQS and CloudWatch Logs report them) as RFC 3339, or `-`.
pub fn millis_rfc3339(millis: Option<i64>) -> String {
    rfc3339_or_dash(millis.map(|ms| ms / 1000))
}

/// A duration as seconds with one decimal: `12.3s`.
pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Milliseconds (as the apply report counts them) as seconds with one decimal.
pub fn millis_as_seconds(ms: u128) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The duration flags (`--since 10m`, `--ttl 48h`): the stack file's duration syntax.
pub fn parse_duration(s: &str) -> Result<aira_engine::stack::model::Duration, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_or_dash(None), "-");
        assert_eq!(rfc3339_or_dash(Some(-5)), "1970-01-01T00:00:00Z");
        assert_eq!(millis_rfc3339(Some(86_400_999)), "1970-01-02T00:00:00Z");
        assert_eq!(seconds(Duration::from_millis(1260)), "1.3s");
        assert_eq!(millis_as_seconds(1_500), "1.5s");
        assert_eq!(parse_duration("2m").unwrap().secs(), 120);
    }
}
