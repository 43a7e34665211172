//! The conformance layer: where the moto server accepts a call that AWS refuses, or answers
//! differently, the proxy answers as AWS documents. One function per documented behaviour;
//! `refuse` runs before a call is forwarded, `amend` on moto's answer.
//!
//! What a rule needs to know of moto's state it asks moto with plain requests (`Moto`), or
//! remembers from the calls it saw (`World`, one per process: every proxy of a test binary
//! sees the same moto server).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};

mod aps;
mod bedrock;
mod elb;
mod instances;
mod waf;

pub use aps::{APS_SETTLING, WORKSPACE_SETTLING};
pub use elb::RULES_PER_LOAD_BALANCER;
pub use instances::INSTANCE_PENDING;

/// How long an Amazon-provided IPv6 block stays `associating` after `CreateVpc`.
pub const IPV6_ASSOCIATING: Duration = Duration::from_secs(3);
/// How long ECS takes to see a target group's new load balancer.
pub const TARGET_GROUP_PROPAGATION: Duration = Duration::from_secs(2);
/// How long a deleted ECS service stays `DRAINING` (its tasks stopping), during which a
/// `CreateService` of the same name is refused.
pub const SERVICE_DRAINING: Duration = Duration::from_secs(4);
/// How long AWS WAF takes to know a new web ACL or load balancer (AssociateWebACL meanwhile
/// answers `WAFUnavailableEntityException`).
pub const WAF_PROPAGATION: Duration = Duration::from_secs(2);

/// One call as the proxy saw it.
pub struct Call<'a> {
    /// `service:Action`, as `Proxy::take_calls` reports it.
    pub call: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Call<'_> {
    fn is(&self, call: &str) -> bool {
        self.call == call
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(self.body).ok()
    }

    /// The values of a query-protocol parameter (`VpcId`, or `Subnets.member.N` for `Subnets.member.`).
    fn form(&self, key: &str) -> Vec<String> {
        let text = std::str::from_utf8(self.body).unwrap_or_default();
        text.split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| if key.ends_with('.') { k.starts_with(key) } else { *k == key })
            .map(|(_, v)| decode(v))
            .collect()
    }
}

/// What the rules remember of the calls they saw.
#[derive(Default)]
struct World {
    /// IPv6 association id → (VPC id, when `CreateVpc` answered).
    ipv6_created: HashMap<String, (String, Instant)>,
    /// Target group ARN → when a load balancer was first seen forwarding to it.
    target_group_seen: HashMap<String, Instant>,
    /// Service ARN → the deployment settings `CreateService`/`UpdateService` sent.
    service_settings: HashMap<String, serde_json::Map<String, Value>>,
    /// When each web ACL and load balancer was created, and whether an association was refused.
    waf_new: HashMap<String, (Instant, bool)>,
    /// Resources an `AssociateWebACL` was accepted for, until a `DisassociateWebACL`.
    waf_associated: std::collections::BTreeSet<String>,
    /// Subnet → its VPC, for a `CreateNatGateway` being forwarded while that VPC has no internet
    /// gateway attached.
    nat_unattached: HashMap<String, String>,
    /// NAT gateway id → its VPC: created with no internet gateway attached, hence `failed`.
    nat_failed: HashMap<String, String>,
    /// (cluster, service name) → when `DeleteService` answered (`DRAINING` for a while), and
    /// whether a `CreateService` of the name was refused since.
    service_deleted: HashMap<(String, String), (Instant, bool)>,
    /// Instance id → when `RunInstances` launched it (`pending` for a while).
    instances_launched: HashMap<String, Instant>,
}

fn world() -> std::sync::MutexGuard<'static, World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(Mutex::default).lock().unwrap()
}

/// Marks the proxy's own reads: `scripts/moto_server.py` lets them past IAM when it enforces it
/// (they are the harness's, not aira's), for [`HARNESS_READS`] only. The proxy strips it from
/// the requests it forwards, so no client can claim it.
pub(crate) const HARNESS_READ: &str = "x-aira-harness-read";

/// Every action the proxy reads moto's state with; `scripts/moto_server.py` lets these, and
/// nothing else, past IAM with [`HARNESS_READ`].
pub const HARNESS_READS: &[&str] = &[
    "DescribeLoadBalancers",
    "DescribeTargetGroups",
    "DescribeSubnets",
    "DescribeInternetGateways",
    "DescribeRouteTables",
    "DescribeListeners",
    "DescribeRules",
    "GetWebACLForResource",
    "ListWebACLs",
    "DescribeWorkspace",
];

/// Plain requests to the moto server, to read the state a rule decides on.
pub struct Moto<'a> {
    pub upstream: &'a str,
    pub client: &'a Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// The authorization of a harness read: moto's parser wants a credential scope (the region and
/// service of the call being judged); the read is let past IAM by `HARNESS_READ`.
fn harness_auth(call: &Call<'_>, service: &str) -> String {
    let region = scope_part(call.headers, 2).unwrap_or_else(|| "us-east-1".into());
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

impl Moto<'_> {
    /// A GET of a REST-protocol `path` of `service`: whether it answered 200, and its body.
    async fn rest_get(&self, call: &Call<'_>, service: &str, path: &str) -> (bool, String) {
        let auth = harness_auth(call, service);
        let req = Request::get(format!("{}{path}", self.upstream))
            .header("authorization", auth)
            .header(HARNESS_READ, "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        match self.client.request(req).await {
            Ok(resp) => {
                let ok = resp.status() == 200;
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                (ok, String::from_utf8_lossy(&body).into_owned())
            }
            Err(_) => (false, String::new()),
        }
    }

    /// A JSON 1.1 protocol call (`AWSWAF_20190729.GetWebACLForResource`) to `service`, in the
    /// region of the call being judged: its status and answer.
    async fn json(&self, call: &Call<'_>, service: &str, target: &str, body: &Value) -> (u16, Value) {
        let auth = harness_auth(call, service);
        let req = Request::post(format!("{}/", self.upstream))
            .header("authorization", auth)
            .header(HARNESS_READ, "1")
            .header("x-amz-target", target)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        match self.client.request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                (status, serde_json::from_slice(&bytes).unwrap_or_default())
            }
            Err(_) => (502, Value::Null),
        }
    }

    /// Whether moto's ELB has the load balancer `arn`.
    async fn load_balancer_exists(&self, call: &Call<'_>, arn: &str) -> bool {
        let form = format!("Action=DescribeLoadBalancers&Version=2015-12-01&LoadBalancerArns.member.1={}", encode(arn));
        self.query(call, "elasticloadbalancing", &form).await.contains("<LoadBalancerArn>")
    }

    /// A query-protocol call to `service`, in the region of the call being judged.
    async fn query(&self, call: &Call<'_>, service: &str, form: &str) -> String {
        // moto picks the service and region from the credential scope and checks no signature.
        let auth = harness_auth(call, service);
        let req = Request::post(format!("{}/", self.upstream))
            .header("authorization", auth)
            .header(HARNESS_READ, "1")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_string())))
            .unwrap();
        match self.client.request(req).await {
            Ok(resp) => {
                String::from_utf8_lossy(&resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
                    .into_owned()
            }
            Err(_) => String::new(),
        }
    }
}

/// A refusal of the call as AWS would answer it, or `None` to forward it.
pub async fn refuse(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    if call.call.starts_with("dynamodb:") {
        if let Some(r) = dynamodb_unused_expression_keys(call) {
            return Some(r);
        }
    }
    if call.is("ec2:CreateSubnet") {
        return subnet_in_associating_ipv6_block(call);
    }
    if call.is("ec2:AssociateAddress") {
        return instances::associate_while_pending(call);
    }
    if call.is("ec2:AssociateRouteTable") {
        return subnet_already_associated(moto, call).await;
    }
    if call.is("elasticloadbalancing:CreateLoadBalancer") {
        return load_balancer_without_internet_gateway(moto, call).await;
    }
    if call.is("elasticloadbalancing:CreateRule") {
        return elb::too_many_rules(moto, call).await;
    }
    if call.is("ec2:CreateNatGateway") {
        nat_gateway_without_internet_gateway(moto, call).await;
        return None;
    }
    if call.is("ecs:CreateService") {
        if let Some(refused) = service_still_draining(call) {
            return Some(refused);
        }
        return service_with_unattached_target_group(moto, call).await;
    }
    if call.call.starts_with("aps:") {
        return aps::aps_rules(call);
    }
    if call.call.starts_with("wafv2:") {
        return waf::waf_rules(moto, call).await;
    }
    None
}

/// moto's answer to a forwarded call, as AWS would give it.
pub fn amend(call: &Call<'_>, status: u16, body: Bytes) -> Bytes {
    if status != 200 {
        return body;
    }
    match call.call {
        "ec2:CreateVpc" | "ec2:DescribeVpcs" => ipv6_block_associating(call, body),
        "ec2:DescribeAvailabilityZones" => zones_as_aws(call, body),
        "ec2:RunInstances" | "ec2:DescribeInstances" => instances::pending(call, body),
        "ec2:CreateNatGateway" | "ec2:DescribeNatGateways" => nat_gateway_failed(call, body),
        "ecs:CreateService" | "ecs:UpdateService" | "ecs:DescribeServices" => service_keeps_deployment(call, body),
        "ecs:DeleteService" => service_draining(call, body),
        "wafv2:CreateWebACL"
        | "wafv2:AssociateWebACL"
        | "wafv2:DisassociateWebACL"
        | "elasticloadbalancing:CreateLoadBalancer" => waf::waf_remember(call, body),
        c if c.starts_with("aps:") => aps::aps_amend(call, body),
        _ => body,
    }
}

/// DynamoDB refuses a request with an `ExpressionAttributeValues`/`ExpressionAttributeNames` key
/// that none of its expressions uses.
/// (DynamoDB Developer Guide, "Using expression attribute values": "Value provided in
/// ExpressionAttributeValues unused in expressions", `ValidationException`.)
fn dynamodb_unused_expression_keys(call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let body = call.json()?;
    // TransactWriteItems holds one request per item; the rule holds for each.
    let mut requests = vec![&body];
    for item in body["TransactItems"].as_array().into_iter().flatten() {
        requests.extend(["ConditionCheck", "Put", "Delete", "Update"].iter().filter_map(|k| item.get(*k)));
    }
    for req in requests {
        let expressions: Vec<&str> = [
            "ConditionExpression",
            "UpdateExpression",
            "KeyConditionExpression",
            "FilterExpression",
            "ProjectionExpression",
        ]
        .iter()
        .filter_map(|k| req[*k].as_str())
        .collect();
        for field in ["ExpressionAttributeValues", "ExpressionAttributeNames"] {
            let unused: Vec<&str> = req[field]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
                .map(String::as_str)
                .filter(|k| !expressions.iter().any(|e| uses(e, k)))
                .collect();
            if !unused.is_empty() {
                let message =
                    format!("Value provided in {field} unused in expressions: keys: {{{}}}", unused.join(", "));
                return Some(json_error(
                    "application/x-amz-json-1.0",
                    "com.amazonaws.dynamodb.v20120810#ValidationException",
                    &message,
                ));
            }
        }
    }
    None
}

/// Whether `expr` uses the placeholder `key` (`:me`, `#n`) as a whole token.
fn uses(expr: &str, key: &str) -> bool {
    expr.match_indices(key)
        .any(|(i, _)| expr[i + key.len()..].chars().next().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')))
}

/// An Amazon-provided IPv6 block is `associating` for a while after `CreateVpc`; the VPC reports
/// it so (in `CreateVpc`'s answer and in `DescribeVpcs`) until it is `associated`.
/// (EC2 API Reference, `VpcCidrBlockState`: associating | associated | disassociating | …)
fn ipv6_block_associating(call: &Call<'_>, body: Bytes) -> Bytes {
    let mut text = String::from_utf8_lossy(&body).into_owned();
    let mut w = world();
    if call.is("ec2:CreateVpc") && call.form("AmazonProvidedIpv6CidrBlock").first().map(String::as_str) == Some("true")
    {
        let vpc = between(&text, "<vpcId>", "</vpcId>");
        let assoc = text
            .find("<ipv6CidrBlockAssociationSet>")
            .and_then(|i| between(&text[i..], "<associationId>", "</associationId>"));
        if let (Some(vpc), Some(assoc)) = (vpc, assoc) {
            w.ipv6_created.insert(assoc, (vpc, Instant::now()));
        }
    }
    for (assoc, (_, at)) in &w.ipv6_created {
        if at.elapsed() >= IPV6_ASSOCIATING {
            continue;
        }
        let Some(i) = text.find(&format!("<associationId>{assoc}</associationId>")) else { continue };
        let associated = "<ipv6CidrBlockState><state>associated</state>";
        if let Some(j) = text[i..].find(associated) {
            let at = i + j;
            text.replace_range(at..at + associated.len(), "<ipv6CidrBlockState><state>associating</state>");
        }
    }
    Bytes::from(text)
}

/// `CreateSubnet` with an IPv6 range of a VPC whose block is still `associating` is refused:
/// the range is not inside an associated block of the VPC yet.
/// (EC2 API Reference, `CreateSubnet`/error codes: `InvalidSubnet.Range`, "The IPv6 CIDR … is invalid".)
fn subnet_in_associating_ipv6_block(call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let cidr = call.form("Ipv6CidrBlock").pop()?;
    let vpc = call.form("VpcId").pop()?;
    let associating = world().ipv6_created.values().any(|(v, at)| *v == vpc && at.elapsed() < IPV6_ASSOCIATING);
    associating.then(|| ec2_error("InvalidSubnet.Range", &format!("The IPv6 CIDR '{cidr}' is invalid.")))
}

/// A subnet is associated with one route table at a time: `AssociateRouteTable` of a subnet that
/// another table (or this one) holds is refused, `Resource.AlreadyAssociated`, and the caller
/// replaces the association instead. moto answers with the existing association's id and leaves
/// the subnet where it was, so that deleting the old table later disassociates the subnet from
/// both. (EC2 API Reference, error codes: `Resource.AlreadyAssociated`, "you cannot associate a
/// subnet with a route table if the subnet is already associated with another route table";
/// VPC User Guide, "Subnet route tables".)
async fn subnet_already_associated(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let subnet = call.form("SubnetId").pop()?;
    let table = call.form("RouteTableId").pop().unwrap_or_default();
    let form = format!(
        "Action=DescribeRouteTables&Version=2016-11-15&Filter.1.Name=association.subnet-id&Filter.1.Value.1={subnet}"
    );
    let tables = moto.query(call, "ec2", &form).await;
    let holder = between(&tables, "<routeTableId>", "</routeTableId>")?;
    Some(ec2_error(
        "Resource.AlreadyAssociated",
        &format!("the specified association for route table {table} conflicts with an existing association (route table {holder} holds subnet {subnet})"),
    ))
}

/// The VPC of `subnet` when no internet gateway is attached to it.
async fn vpc_without_internet_gateway(moto: &Moto<'_>, call: &Call<'_>, subnet: &str) -> Option<String> {
    let subnets =
        moto.query(call, "ec2", &format!("Action=DescribeSubnets&Version=2016-11-15&SubnetId.1={subnet}")).await;
    let vpc = between(&subnets, "<vpcId>", "</vpcId>")?;
    let form = format!(
        "Action=DescribeInternetGateways&Version=2016-11-15&Filter.1.Name=attachment.vpc-id&Filter.1.Value.1={vpc}"
    );
    let gateways = moto.query(call, "ec2", &form).await;
    let attached = gateways.contains("<state>available</state>") || gateways.contains("<state>attached</state>");
    (!attached).then_some(vpc)
}

/// A public NAT gateway created in a VPC with no internet gateway attached is accepted, then
/// `failed` with `Gateway.NotAttached` (moto makes it `available`): noted here, applied to
/// moto's answers by [`nat_gateway_failed`].
/// (EC2 API Reference, `NatGateway`: failureCode `Gateway.NotAttached`, "Network vpc-xxxxxxxx has
/// no Internet gateway attached".)
async fn nat_gateway_without_internet_gateway(moto: &Moto<'_>, call: &Call<'_>) {
    if call.form("ConnectivityType").first().map(String::as_str) == Some("private") {
        return;
    }
    let Some(subnet) = call.form("SubnetId").pop() else { return };
    if let Some(vpc) = vpc_without_internet_gateway(moto, call, &subnet).await {
        world().nat_unattached.insert(subnet, vpc);
    }
}

/// moto's NAT gateways as AWS has them: those created with no internet gateway attached are
/// `failed`, with AWS's code and message.
fn nat_gateway_failed(call: &Call<'_>, body: Bytes) -> Bytes {
    let mut text = String::from_utf8_lossy(&body).into_owned();
    let mut w = world();
    if call.is("ec2:CreateNatGateway") {
        let subnet = call.form("SubnetId").pop().unwrap_or_default();
        if let (Some(vpc), Some(id)) =
            (w.nat_unattached.remove(&subnet), between(&text, "<natGatewayId>", "</natGatewayId>"))
        {
            w.nat_failed.insert(id, vpc);
        }
    }
    for (id, vpc) in &w.nat_failed {
        let Some(i) = text.find(&format!("<natGatewayId>{id}</natGatewayId>")) else { continue };
        let Some(start) = text[i..].find("<state>").map(|j| i + j) else { continue };
        let Some(end) = text[start..].find("</state>").map(|j| start + j + "</state>".len()) else { continue };
        let failed = format!(
            "<state>failed</state><failureCode>Gateway.NotAttached</failureCode><failureMessage>Network {vpc} has no Internet gateway attached</failureMessage>"
        );
        text.replace_range(start..end, &failed);
    }
    Bytes::from(text)
}

/// The zones AWS lists where moto lists fewer: China (Beijing) has three ("Getting Started with
/// Amazon Web Services in China", Availability Zones), moto two, and the third, `cnn1-az4`, is
/// one where Fargate does not run (ECS developer guide, "Supported Regions for Amazon ECS on
/// AWS Fargate"): the zone pre-flight's table is shown against it.
fn zones_as_aws(call: &Call<'_>, body: Bytes) -> Bytes {
    let text = String::from_utf8_lossy(&body);
    let region = scope_part(call.headers, 2).unwrap_or_default();
    let (Some(first), Some(end)) = (between(&text, "<item>", "</item>"), text.rfind("</item>")) else { return body };
    if region != "cn-north-1" || text.contains("cnn1-az4") || !first.contains("cnn1-az1") {
        return body;
    }
    let third = first.replace("cn-north-1a", "cn-north-1d").replace("cnn1-az1", "cnn1-az4");
    let at = end + "</item>".len();
    Bytes::from(format!("{}<item>{third}</item>{}", &text[..at], &text[at..]))
}

/// An internet-facing load balancer needs an internet gateway attached to its subnets' VPC.
/// (ELB User Guide, "Create an Application Load Balancer", prerequisites; API error
/// `InvalidSubnet`: "VPC vpc-… has no internet gateway".)
async fn load_balancer_without_internet_gateway(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    if call.form("Scheme").first().map(String::as_str) == Some("internal") {
        return None;
    }
    let subnet = call.form("Subnets.member.").into_iter().next()?;
    let vpc = vpc_without_internet_gateway(moto, call, &subnet).await?;
    Some(elb_error("InvalidSubnet", &format!("VPC {vpc} has no internet gateway")))
}

/// The (cluster, service) a `CreateService` or `DeleteService` names (the cluster by name or ARN).
fn cluster_service(call: &Call<'_>, key: &str) -> Option<(String, String)> {
    let body = call.json()?;
    let cluster = body["cluster"].as_str().unwrap_or("default");
    let cluster = cluster.rsplit('/').next().unwrap_or(cluster).to_string();
    let service = body[key].as_str()?;
    Some((cluster, service.rsplit('/').next().unwrap_or(service).to_string()))
}

/// A deleted service stays `DRAINING` while its tasks stop (moto removes it at once).
fn service_draining(call: &Call<'_>, body: Bytes) -> Bytes {
    if let Some(key) = cluster_service(call, "service") {
        let mut w = world();
        // Only a deletion still draining matters: the map holds those alone.
        w.service_deleted.retain(|_, (at, refused)| !*refused || at.elapsed() < SERVICE_DRAINING);
        w.service_deleted.insert(key, (Instant::now(), false));
    }
    body
}

/// ECS refuses to create a service whose name a `DRAINING` one still holds.
/// (An `InvalidParameterException`, "Unable to Start a service that is still Draining.", until
/// the old one is `INACTIVE`: ECS Developer Guide, "Deleting a service" — DRAINING, then INACTIVE.)
/// The first `CreateService` after the deletion is refused whatever the time, so that a busy
/// machine, where it comes late, still sees the refusal.
fn service_still_draining(call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let key = cluster_service(call, "serviceName")?;
    let mut w = world();
    let (deleted, refused) = w.service_deleted.get_mut(&key)?;
    let draining = !*refused || deleted.elapsed() < SERVICE_DRAINING;
    *refused |= draining;
    draining.then(|| {
        let message = "Unable to Start a service that is still Draining.";
        json_error("application/x-amz-json-1.1", "InvalidParameterException", message)
    })
}

/// ECS refuses a service whose target group no load balancer forwards to yet (a listener or
/// rule), and sees a new association a moment after ELB made it.
/// (ECS API Reference, `CreateService`: `InvalidParameterException`, "The target group with
/// targetGroupArn … does not have an associated load balancer.")
async fn service_with_unattached_target_group(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let body = call.json()?;
    for lb in body["loadBalancers"].as_array().into_iter().flatten() {
        let Some(tg) = lb["targetGroupArn"].as_str() else { continue };
        let form = format!("Action=DescribeTargetGroups&Version=2015-12-01&TargetGroupArns.member.1={}", encode(tg));
        let answer = moto.query(call, "elasticloadbalancing", &form).await;
        let has_lb = answer
            .find("<LoadBalancerArns>")
            .is_some_and(|i| answer[i..].split("</LoadBalancerArns>").next().unwrap_or("").contains("<member>"));
        let ready = has_lb && {
            let mut w = world();
            let seen = *w.target_group_seen.entry(tg.to_string()).or_insert_with(Instant::now);
            seen.elapsed() >= TARGET_GROUP_PROPAGATION
        };
        if !ready {
            let message =
                format!("The target group with targetGroupArn {tg} does not have an associated load balancer.");
            return Some(json_error("application/x-amz-json-1.1", "InvalidParameterException", &message));
        }
    }
    None
}

/// ECS returns a service's deployment configuration and health check grace period as they were
/// set (moto drops them): the proxy remembers what `CreateService`/`UpdateService` sent.
/// (ECS API Reference, `Service`: `deploymentConfiguration`, `healthCheckGracePeriodSeconds`.)
fn service_keeps_deployment(call: &Call<'_>, body: Bytes) -> Bytes {
    // DeleteWorkspace answers with no body.
    let mut answer = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let mut w = world();
    if !call.is("ecs:DescribeServices") {
        let sent = call.json().unwrap_or_default();
        if let Some(arn) = answer["service"]["serviceArn"].as_str() {
            let kept = w.service_settings.entry(arn.to_string()).or_default();
            for key in ["deploymentConfiguration", "healthCheckGracePeriodSeconds"] {
                if let Some(v) = sent.get(key) {
                    kept.insert(key.to_string(), v.clone());
                }
            }
        }
    }
    let services: Vec<&mut Value> = if answer.get("services").is_some() {
        answer["services"].as_array_mut().map(|all| all.iter_mut().collect()).unwrap_or_default()
    } else {
        answer.get_mut("service").into_iter().collect()
    };
    for s in services {
        let Some(kept) = s["serviceArn"].as_str().and_then(|arn| w.service_settings.get(arn)) else { continue };
        for (k, v) in kept.clone() {
            s[k] = v;
        }
    }
    Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
}

fn json_error(content_type: &str, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({ "__type": kind, "message": message });
    Response::builder()
        .status(400)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// An EC2 (query protocol) error answer.
pub fn ec2_error(code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>aira-proxy</RequestID></Response>"
    );
    Response::builder().status(400).header("content-type", "text/xml").body(Full::new(Bytes::from(body))).unwrap()
}

/// An ELBv2 (query protocol) error answer.
pub(crate) fn elb_error(code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>aira-proxy</RequestId></ErrorResponse>"
    );
    Response::builder().status(400).header("content-type", "text/xml").body(Full::new(Bytes::from(body))).unwrap()
}

/// A part of the signature's credential scope: `KEY/DATE/REGION/SERVICE/aws4_request`.
pub fn scope_part(headers: &HeaderMap, n: usize) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    auth.split("Credential=").nth(1)?.split('/').nth(n).map(String::from)
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_string())
}

/// Decodes a form value (`%2F`, `+`).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Calls of APIs moto lacks, answered by the proxy itself (also for a `moto_only` proxy: there
/// is no moto answer to keep). `None` for every other call.
pub async fn emulate(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    if call.call.starts_with("bedrock:") {
        return bedrock::bedrock_catalogue(call);
    }
    aps::aps_alert_manager(moto, call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_is_used_only_as_a_whole_token() {
        assert!(uses("holder = :me", ":me"));
        assert!(uses("expires_at < :now OR x = :me)", ":me"));
        assert!(!uses("holder = :me2", ":me"));
        assert!(!uses("holder = :m", ":me"));
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(decode("arn%3Aaws%3Ax%2Fy+z"), "arn:aws:x/y z");
        assert_eq!(decode(&encode("arn:aws:x/y")), "arn:aws:x/y");
    }
}

#[cfg(test)]
mod harness_reads {
    /// moto lets exactly the proxy's reads past IAM: the list here is the one in
    /// `scripts/moto_server.py`, and every read the rules make (`Action=…`, a WAF target, the
    /// workspace GET) is on it.
    #[test]
    fn moto_server_lets_exactly_the_proxys_reads_past_iam() {
        let py = include_str!("../../../../scripts/moto_server.py");
        let start = py.find("HARNESS_READS = {").expect("moto_server.py lists its harness reads");
        let end = start + py[start..].find('}').unwrap();
        let mut listed: Vec<&str> = py[start..end].split('"').skip(1).step_by(2).collect();
        listed.sort_unstable();
        let mut ours = super::HARNESS_READS.to_vec();
        ours.sort_unstable();
        assert_eq!(listed, ours);
        let sources = [include_str!("mod.rs"), include_str!("waf.rs"), include_str!("aps.rs")].concat();
        let mut made: Vec<&str> = sources
            .split("Action=")
            .skip(1)
            .chain(sources.split("AWSWAF_20190729.").skip(1))
            .map(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default())
            .filter(|a| !a.is_empty())
            .collect();
        made.push("DescribeWorkspace"); // `rest_get` of `/workspaces/{id}` (aps.rs)
        for action in made {
            assert!(super::HARNESS_READS.contains(&action), "the proxy reads with {action}, which moto refuses");
        }
    }
}
