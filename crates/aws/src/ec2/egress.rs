//! What carries traffic out of an existing VPC's private subnets, read before any change: each
//! subnet's route table (explicitly associated, else the VPC's main table) and its default route,
//! the VPC's gateway endpoints in those tables and its interface endpoints with private DNS, with
//! the security groups that let the tasks in or not. The engine's reachability check then runs
//! on what was read, as it runs on the network aira plans for a new VPC.
//!
//! AWS's rules followed (VPC User Guide): a task without a public IP (aira starts none with one)
//! reaches the internet only through a NAT device, or beyond the VPC through a transit gateway or
//! Cloud WAN; a route to an internet gateway carries nothing for it ("Enable internet access for a
//! VPC using an internet gateway": an instance needs a public address), and a peering connection
//! carries nothing past the peer ("VPC peering limitations": no edge-to-edge routing). A gateway
//! endpoint serves only the route tables it is in; an interface endpoint's private DNS name
//! serves the whole VPC, behind the endpoint's security groups (PrivateLink guide, "Access an
//! AWS service using an interface VPC endpoint").

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{IpPermission, RouteTable, SecurityGroup, VpcEndpoint};
use ipnet::Ipv4Net;

use aira_engine::provider::TAG_STACK;
use aira_engine::stack::model::Endpoint;
use aira_engine::stack::reach::Egress;
use aira_engine::stack::Stack;

/// A private subnet of the existing VPC: its id and IPv4 block.
pub struct Private {
    pub id: String,
    pub cidr: Option<Ipv4Net>,
}

/// The route table a subnet uses: the one associated with it, else the VPC's main table.
pub fn table_of<'a>(tables: &'a [RouteTable], subnet: &str) -> Option<&'a RouteTable> {
    let explicit = tables.iter().find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(subnet)));
    explicit.or_else(|| tables.iter().find(|t| t.associations().iter().any(|a| a.main() == Some(true))))
}

/// The egress every private subnet has. `groups` are the security groups of the VPC's
/// interface endpoints.
pub fn egress(
    stack: &Stack,
    region: &str,
    private: &[Private],
    tables: &[RouteTable],
    endpoints: &[VpcEndpoint],
    groups: &[SecurityGroup],
) -> Egress {
    // The stack's own endpoints: aira adds them, the gateway ones to these very tables.
    let mut egress = Egress {
        endpoints: stack.endpoints().into_iter().map(|e| (e, Egress::ours(e))).collect(),
        ..Egress::default()
    };
    let rtb_of = |s: &Private| table_of(tables, &s.id).and_then(|t| t.route_table_id()).unwrap_or("none");

    // The default route of each subnet: the path when every subnet has one, else the tables
    // that lack one, each with why.
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut lacking: BTreeMap<String, (Vec<&str>, String)> = BTreeMap::new();
    for s in private {
        let rtb = rtb_of(s);
        match default_route(table_of(tables, &s.id)) {
            Ok(path) => {
                out.insert(format!("{path} (default route in {rtb})"));
            }
            Err(why) => lacking.entry(rtb.to_string()).or_insert_with(|| (Vec::new(), why)).0.push(&s.id),
        }
    }
    if lacking.is_empty() {
        egress.internet = Some(out.into_iter().collect::<Vec<_>>().join("; "));
    } else {
        let tables: Vec<String> = lacking
            .iter()
            .map(|(rtb, (subnets, why))| format!("route table {rtb} (subnet {}: {why})", subnets.join(", ")))
            .collect();
        egress.internet_fix = Some(format!("a default route 0.0.0.0/0 to a NAT gateway in {}", tables.join(" and ")));
    }

    // The VPC's own endpoints, not the stack's.
    let ours: BTreeMap<String, Endpoint> =
        Endpoint::ALL.iter().map(|e| (format!("com.amazonaws.{region}.{}", e.name()), *e)).collect();
    for e in endpoints {
        let theirs = e.tags().iter().all(|t| t.key() != Some(TAG_STACK) || t.value() != Some(&stack.stack.0));
        let available = e.state().is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"));
        let Some(endpoint) = e.service_name().and_then(|n| ours.get(n)).filter(|_| theirs && available) else {
            continue;
        };
        if egress.endpoints.contains_key(endpoint) {
            continue;
        }
        let id = e.vpc_endpoint_id().unwrap_or_default();
        if endpoint.is_gateway() {
            let everywhere = private.iter().all(|s| e.route_table_ids().iter().any(|t| t == rtb_of(s)));
            if everywhere {
                egress.endpoints.insert(*endpoint, format!("gateway endpoint {id} in the private route tables"));
            }
            continue;
        }
        if e.private_dns_enabled() != Some(true) {
            continue;
        }
        let ids: Vec<&str> = e.groups().iter().filter_map(|g| g.group_id()).collect();
        let rules = groups.iter().filter(|g| g.group_id().is_some_and(|id| ids.contains(&id)));
        let cidrs: Vec<Ipv4Net> = private.iter().filter_map(|s| s.cidr).collect();
        let admits = |cidr: &Ipv4Net| rules.clone().flat_map(|g| g.ip_permissions()).any(|p| admits_https(p, cidr));
        if !cidrs.is_empty() && cidrs.iter().all(admits) {
            egress.endpoints.insert(*endpoint, format!("interface endpoint {id} (private DNS)"));
        } else {
            let blocks: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
            egress.blocked.insert(
                *endpoint,
                format!(
                    "let the security group(s) {} of {id}, the VPC's endpoint for it, accept TCP 443 from the private subnets ({})",
                    ids.join(", "),
                    blocks.join(", ")
                ),
            );
        }
    }
    egress
}

/// How a table's default route leaves the VPC for a task without a public IP, or why it does not.
fn default_route(table: Option<&RouteTable>) -> Result<String, String> {
    let Some(table) = table else { return Err("no route table".into()) };
    let Some(route) = table.routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0")) else {
        return Err("no default route".into());
    };
    if route.state().is_some_and(|s| s.as_str() == "blackhole") {
        return Err("its default route is a blackhole (its target is gone)".into());
    }
    let beyond = "what lies beyond it is not checked";
    if let Some(nat) = route.nat_gateway_id() {
        return Ok(format!("NAT gateway {nat}"));
    }
    if let Some(tgw) = route.transit_gateway_id() {
        return Ok(format!("transit gateway {tgw}, {beyond}"));
    }
    if let Some(arn) = route.core_network_arn() {
        return Ok(format!("Cloud WAN core network {arn}, {beyond}"));
    }
    if let Some(target) = route.network_interface_id().or(route.instance_id()) {
        return Ok(format!("NAT device {target}, {beyond}"));
    }
    if let Some(igw) = route.gateway_id().filter(|g| g.starts_with("igw-")) {
        return Err(format!(
            "its default route goes to internet gateway {igw}, which carries nothing for tasks without a public IP"
        ));
    }
    if let Some(pcx) = route.vpc_peering_connection_id() {
        return Err(format!(
            "its default route goes to peering connection {pcx}, which carries nothing past the peer VPC"
        ));
    }
    Err("its default route leads nowhere a task can use".into())
}

/// Whether an ingress rule admits TCP 443 from all of `cidr`.
fn admits_https(p: &IpPermission, cidr: &Ipv4Net) -> bool {
    let port = match p.ip_protocol() {
        Some("-1") => true,
        Some("tcp" | "6") => p.from_port().unwrap_or(0) <= 443 && 443 <= p.to_port().unwrap_or(65535),
        _ => false,
    };
    port && p.ip_ranges().iter().filter_map(|r| r.cidr_ip()?.parse::<Ipv4Net>().ok()).any(|r| r.contains(cidr))
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{IpRange, Route, RouteState, RouteTableAssociation, SecurityGroupIdentifier, State};

    use super::*;

    fn table(id: &str, subnet: Option<&str>, default: Option<Route>) -> RouteTable {
        let assoc = match subnet {
            Some(s) => RouteTableAssociation::builder().subnet_id(s).build(),
            None => RouteTableAssociation::builder().main(true).build(),
        };
        let local = Route::builder().destination_cidr_block("10.0.0.0/16").gateway_id("local").build();
        let routes = std::iter::once(local).chain(default).collect();
        RouteTable::builder().route_table_id(id).associations(assoc).set_routes(Some(routes)).build()
    }

    fn stack() -> Stack {
        let text = "stack: s\nregion: us-east-1\nnetwork:\n  existing: { vpc_id: vpc-1, public_subnets: [subnet-p], private_subnets: [subnet-a, subnet-b] }\n  endpoints: [s3]\n";
        aira_engine::stack::parse("s.yaml", text).unwrap().stack
    }

    fn private() -> Vec<Private> {
        ["subnet-a", "subnet-b"]
            .iter()
            .enumerate()
            .map(|(i, id)| Private { id: id.to_string(), cidr: Some(format!("10.0.{i}.0/24").parse().unwrap()) })
            .collect()
    }

    fn to(target: &str) -> Route {
        let r = Route::builder().destination_cidr_block("0.0.0.0/0").state(RouteState::Active);
        match target.split('-').next().unwrap() {
            "nat" => r.nat_gateway_id(target),
            "tgw" => r.transit_gateway_id(target),
            "pcx" => r.vpc_peering_connection_id(target),
            _ => r.gateway_id(target),
        }
        .build()
    }

    #[test]
    fn the_internet_is_reached_only_when_every_private_subnet_has_a_usable_default_route() {
        let s = stack();
        let run = |tables: Vec<RouteTable>| egress(&s, "us-east-1", &private(), &tables, &[], &[]);
        // The main table serves subnet-b, which has no explicit association.
        let e =
            run(vec![table("rtb-a", Some("subnet-a"), Some(to("nat-1"))), table("rtb-main", None, Some(to("tgw-1")))]);
        assert_eq!(
            e.internet.as_deref(),
            Some("NAT gateway nat-1 (default route in rtb-a); transit gateway tgw-1, what lies beyond it is not checked (default route in rtb-main)")
        );
        assert_eq!(e.internet_fix, None);
        for (target, why) in [
            ("igw-1", "internet gateway igw-1, which carries nothing for tasks without a public IP"),
            ("pcx-1", "peering connection pcx-1, which carries nothing past the peer VPC"),
        ] {
            let e = run(vec![
                table("rtb-a", Some("subnet-a"), Some(to("nat-1"))),
                table("rtb-main", None, Some(to(target))),
            ]);
            assert_eq!(e.internet, None);
            let fix = e.internet_fix.unwrap();
            assert!(
                fix.starts_with(
                    "a default route 0.0.0.0/0 to a NAT gateway in route table rtb-main (subnet subnet-b: "
                ),
                "{fix}"
            );
            assert!(fix.contains(why), "{fix}");
        }
        let e = run(vec![table("rtb-main", None, None)]);
        assert_eq!(
            e.internet_fix.as_deref(),
            Some("a default route 0.0.0.0/0 to a NAT gateway in route table rtb-main (subnet subnet-a, subnet-b: no default route)")
        );
        let hole = Route::builder()
            .destination_cidr_block("0.0.0.0/0")
            .nat_gateway_id("nat-gone")
            .state(RouteState::Blackhole);
        let hole = hole.build();
        assert!(run(vec![table("rtb-main", None, Some(hole))]).internet_fix.unwrap().contains("blackhole"));
    }

    fn endpoint(id: &str, service: &str, tables: &[&str], dns: bool, group: &str) -> VpcEndpoint {
        let mut b = VpcEndpoint::builder()
            .vpc_endpoint_id(id)
            .service_name(format!("com.amazonaws.us-east-1.{service}"))
            .state(State::Available)
            .private_dns_enabled(dns)
            .groups(SecurityGroupIdentifier::builder().group_id(group).build());
        for t in tables {
            b = b.route_table_ids(*t);
        }
        b.build()
    }

    fn group(id: &str, protocol: &str, ports: (i32, i32), cidr: &str) -> SecurityGroup {
        let p = IpPermission::builder()
            .ip_protocol(protocol)
            .from_port(ports.0)
            .to_port(ports.1)
            .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
            .build();
        SecurityGroup::builder().group_id(id).ip_permissions(p).build()
    }

    #[test]
    fn the_vpcs_endpoints_count_where_they_serve_every_private_subnet_and_admit_the_tasks() {
        let s = stack();
        let tables = vec![table("rtb-a", Some("subnet-a"), None), table("rtb-b", Some("subnet-b"), None)];
        let endpoints = [
            endpoint("vpce-ddb", "dynamodb", &["rtb-a", "rtb-b"], false, ""),
            endpoint("vpce-half", "s3", &["rtb-a"], false, ""),
            endpoint("vpce-logs", "logs", &[], true, "sg-open"),
            endpoint("vpce-sqs", "sqs", &[], true, "sg-narrow"),
            endpoint("vpce-nodns", "ecr.api", &[], false, "sg-open"),
        ];
        let groups =
            [group("sg-open", "tcp", (443, 443), "10.0.0.0/16"), group("sg-narrow", "tcp", (443, 443), "10.0.0.0/24")];
        let e = egress(&s, "us-east-1", &private(), &tables, &endpoints, &groups);
        let paths: Vec<String> = e.endpoints.iter().map(|(k, v)| format!("{}: {v}", k.name())).collect();
        assert_eq!(
            paths,
            [
                "logs: interface endpoint vpce-logs (private DNS)",
                // The stack's own, not the VPC's half-routed one.
                "s3: gateway endpoint `s3` in the private route tables",
                "dynamodb: gateway endpoint vpce-ddb in the private route tables",
            ]
        );
        assert_eq!(
            e.blocked.get(&Endpoint::Sqs).map(String::as_str),
            Some("let the security group(s) sg-narrow of vpce-sqs, the VPC's endpoint for it, accept TCP 443 from the private subnets (10.0.0.0/24, 10.0.1.0/24)")
        );
        assert!(!e.endpoints.contains_key(&Endpoint::EcrApi), "no private DNS: the tasks resolve the public name");
        // Any protocol counts; UDP does not.
        assert!(admits_https(
            &group("g", "-1", (0, 0), "0.0.0.0/0").ip_permissions()[0],
            &"10.0.0.0/24".parse().unwrap()
        ));
        assert!(!admits_https(
            &group("g", "udp", (443, 443), "0.0.0.0/0").ip_permissions()[0],
            &"10.0.0.0/24".parse().unwrap()
        ));
    }
}
