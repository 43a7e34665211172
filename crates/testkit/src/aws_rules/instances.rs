//! EC2 instances as AWS has them right after a launch: `pending` for a while (moto makes them
//! `running` at once), during which an Elastic IP cannot be associated with them.
//! (EC2 User Guide, "Instance state changes": pending → running; EC2 API Reference, error codes:
//! `IncorrectInstanceState`, "The instance is not in a valid state for this operation" — AWS
//! words it "The pending-instance-creation instance to which 'eni-…' is attached is not in a
//! valid state for this operation".)

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::{between, ec2_error, world, Call};

/// How long a launched instance stays `pending`.
pub const INSTANCE_PENDING: Duration = Duration::from_secs(3);

/// Notes the instances `RunInstances` launched; shows those still within [`INSTANCE_PENDING`]
/// as `pending` in its answer and in `DescribeInstances`.
pub(super) fn pending(call: &Call<'_>, body: Bytes) -> Bytes {
    let mut text = String::from_utf8_lossy(&body).into_owned();
    let mut w = world();
    // Past the while, an instance is as moto has it: nothing to remember.
    w.instances_launched.retain(|_, at| at.elapsed() < INSTANCE_PENDING);
    if call.is("ec2:RunInstances") {
        let mut rest = text.as_str();
        while let Some(id) = between(rest, "<instanceId>", "</instanceId>") {
            let at = rest.find("</instanceId>").expect("found") + 1;
            rest = &rest[at..];
            w.instances_launched.insert(id, Instant::now());
        }
    }
    for id in w.instances_launched.keys() {
        let Some(i) = text.find(&format!("<instanceId>{id}</instanceId>")) else { continue };
        let running = "<code>16</code><name>running</name>";
        if let Some(j) = text[i..].find("<instanceState>").and_then(|j| text[i + j..].find(running).map(|k| i + j + k))
        {
            text.replace_range(j..j + running.len(), "<code>0</code><name>pending</name>");
        }
    }
    Bytes::from(text)
}

/// `AssociateAddress` naming an instance that is still `pending` is refused.
pub(super) fn associate_while_pending(call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let id = call.form("InstanceId").pop()?;
    let at = *world().instances_launched.get(&id)?;
    (at.elapsed() < INSTANCE_PENDING).then(|| {
        ec2_error(
            "IncorrectInstanceState",
            &format!("The pending-instance-creation instance {id} is not in a valid state for this operation."),
        )
    })
}
