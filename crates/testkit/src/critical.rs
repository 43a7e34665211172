//! The critical path of a run from the proxy's log alone, apart from aira's own report: a call
//! depends on the call whose answer first named an id (`vpc-…`, an ARN, a queue URL) that its
//! request names, and the path is the chain of such calls that took longest, from its first
//! call's start to its last call's answer as the proxy timed them (the waits between them, such
//! as polling a VPC until its IPv6 block is associated, included). Orderings aira keeps without
//! passing an id (a NAT gateway after the internet gateway's attachment) are not seen. aira's
//! lock (the `aira-locks` table) is bookkeeping, not the apply, and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::proxy::Sent;

/// The longest chain: its length and its calls in order.
#[derive(Debug, PartialEq)]
pub struct Chain {
    pub duration: Duration,
    pub calls: Vec<String>,
}

/// The ids a body names: EC2 ids (`subnet-0a1b2c3d4e5f6a7b8`), ARNs and URLs.
pub fn ids(body: &str) -> BTreeSet<String> {
    let decoded = percent_encoding::percent_decode_str(body).decode_utf8_lossy().replace("\\/", "/");
    let mut out = BTreeSet::new();
    for token in decoded.split(|c: char| c.is_whitespace() || "\"'<>&,{}[]()=".contains(c)) {
        let token = token.trim_end_matches(['.', ';', '\\']);
        let named = ["arn:", "http://", "https://"].iter().any(|p| token.starts_with(p));
        if named || is_ec2_id(token) {
            out.insert(token.to_string());
        }
    }
    out
}

/// `prefix-hex`, the prefix a word or two of letters (`vpc`, `rtbassoc`, `eipalloc`), at least 8
/// hex digits.
fn is_ec2_id(token: &str) -> bool {
    let Some((prefix, hex)) = token.rsplit_once('-') else { return false };
    !prefix.is_empty()
        && prefix.split('-').all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        && hex.len() >= 8
        && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && hex.chars().any(|c| c.is_ascii_digit())
}

/// Whether a call is aira's lock's rather than the stack's.
fn is_lock(s: &Sent) -> bool {
    s.body.contains("aira-locks")
}

/// The longest chain of dependent calls in `sent` (in any order), from the apply's first change
/// on: what existed before it (a preview's base, read by the pre-flight) is given, not made.
pub fn critical_path(sent: &[Sent]) -> Chain {
    let first = sent.iter().filter(|s| !is_lock(s) && crate::proxy::is_mutating(&s.call)).map(|s| s.started).min();
    let applied = |s: &&Sent| first.is_none_or(|f| s.started >= f);
    let mut calls: Vec<&Sent> = sent.iter().filter(|s| !is_lock(s)).filter(applied).collect();
    calls.sort_by_key(|s| s.started);
    let asked: Vec<BTreeSet<String>> = calls.iter().map(|c| ids(&c.body)).collect();
    // id → the call whose answer named it first (and whose request did not).
    let mut creator: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_answer: Vec<usize> = (0..calls.len()).collect();
    by_answer.sort_by_key(|&i| calls[i].answered);
    for &i in &by_answer {
        for id in ids(&calls[i].answer).into_iter().filter(|id| !asked[i].contains(id)) {
            creator.entry(id).or_insert(i);
        }
    }
    // The earliest start of a chain ending at each call; the call before it on that chain.
    let mut root: Vec<(SystemTime, Option<usize>)> = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let before = asked[i]
            .iter()
            .filter_map(|id| creator.get(id).copied())
            .filter(|&d| d < i && calls[d].answered <= call.started)
            .min_by_key(|&d| root[d].0);
        root.push(match before {
            Some(d) => (root[d].0, Some(d)),
            None => (call.started, None),
        });
    }
    let span = |i: usize| calls[i].answered.duration_since(root[i].0).unwrap_or_default();
    let Some(end) = (0..calls.len()).max_by_key(|&i| span(i)) else {
        return Chain { duration: Duration::ZERO, calls: Vec::new() };
    };
    let mut chain = vec![calls[end].call.clone()];
    let mut at = root[end].1;
    while let Some(i) = at {
        chain.push(calls[i].call.clone());
        at = root[i].1;
    }
    chain.reverse();
    Chain { duration: span(end), calls: chain }
}

/// From the first call that changes anything to the last answer: the apply as AWS saw it.
pub fn apply_span(sent: &[Sent]) -> Duration {
    let stack = || sent.iter().filter(|s| !is_lock(s));
    let first = stack().filter(|s| crate::proxy::is_mutating(&s.call)).map(|s| s.started).min();
    let last = stack().map(|s| s.answered).max();
    match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(call: &str, body: &str, answer: &str, from_ms: u64, to_ms: u64) -> Sent {
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        Sent {
            call: call.into(),
            body: body.into(),
            status: 200,
            answer: answer.into(),
            started: at(from_ms),
            answered: at(to_ms),
        }
    }

    #[test]
    fn ids_are_found_in_forms_json_and_xml() {
        let form = "Action=CreateSubnet&VpcId=vpc-0a1b2c3d4e5f6a7b8&CidrBlock=10.0.0.0%2F24";
        assert_eq!(ids(form), BTreeSet::from(["vpc-0a1b2c3d4e5f6a7b8".to_string()]));
        let xml = "<subnetId>subnet-12345678</subnetId><availabilityZone>us-east-1a</availabilityZone>";
        assert_eq!(ids(xml), BTreeSet::from(["subnet-12345678".to_string()]));
        let json =
            r#"{"QueueUrl":"http://localhost:5000/123456789012/q","Arn":"arn:aws:sqs:us-east-1:123456789012:q-dlq"}"#;
        assert_eq!(ids(json).len(), 2, "{:?}", ids(json));
        // Words and zones that look like ids are not.
        assert!(ids("us-east-1a dead-letter behavior-version-latest sg-0deadbeef").len() == 1);
        let encoded = "RedrivePolicy=%7B%22deadLetterTargetArn%22%3A%22arn%3Aaws%3Asqs%3Aus-east-1%3A1%3Adlq%22%7D";
        assert_eq!(ids(encoded), BTreeSet::from(["arn:aws:sqs:us-east-1:1:dlq".to_string()]));
    }

    #[test]
    fn the_path_follows_ids_not_time() {
        let log = [
            call("ec2:CreateVpc", "", "<vpcId>vpc-11111111</vpcId>", 0, 200),
            // Independent of the VPC, and long: a path of its own.
            call("sqs:CreateQueue", "QueueName=q", "<QueueUrl>http://h/1/q</QueueUrl>", 0, 300),
            call("ec2:CreateSubnet", "VpcId=vpc-11111111", "<subnetId>subnet-22222222</subnetId>", 250, 450),
            // Starts after the queue was made but names only the subnet; the wait before it counts.
            call("ec2:CreateRouteTable", "SubnetId=subnet-22222222", "<rtb>rtb-33333333</rtb>", 900, 1100),
            // Names the VPC, but started before it was answered: not a dependency.
            call("ec2:DescribeVpcs", "VpcId=vpc-11111111", "", 100, 150),
        ];
        let chain = critical_path(&log);
        assert_eq!(chain.duration, Duration::from_millis(1100));
        // A read before the first change (the pre-flight's) that names an id the chain passes on
        // is not part of it: that resource existed.
        let mut read_first = log.to_vec();
        read_first.push(call("ec2:DescribeVpcs", "", "<vpcId>vpc-11111111</vpcId>", 0, 0));
        read_first[0].started += Duration::from_millis(50);
        read_first[1].started += Duration::from_millis(50);
        let later = critical_path(&read_first);
        assert_eq!(later.calls, ["ec2:CreateVpc", "ec2:CreateSubnet", "ec2:CreateRouteTable"], "{later:?}");
        assert_eq!(chain.calls, ["ec2:CreateVpc", "ec2:CreateSubnet", "ec2:CreateRouteTable"]);
        assert_eq!(apply_span(&log), Duration::from_millis(1100));
        // aira's lock is not the apply.
        let mut locked = log.to_vec();
        locked.push(call("dynamodb:DeleteItem", r#"{"TableName":"aira-locks"}"#, "", 1200, 1300));
        assert_eq!(apply_span(&locked), Duration::from_millis(1100));
    }
}
