//! The VPC as moto holds it, enforced on every connection a task makes or takes. Read through
//! the SDK (every 2 s, and on demand) and written apart from aira's reachability check
//! (`stack::reach`, `aws::ec2::egress`), so that the deployed run shows what the network aira
//! built carries, whatever aira believes it carries:
//! - out of a task: an AWS service through the VPC's interface endpoint for it (private DNS on,
//!   its groups admitting TCP 443 from the task) or its gateway endpoint (in the task subnet's
//!   route table), else, as anything on the internet, through the subnet's default route to an
//!   available NAT gateway whose own subnet routes to an attached internet gateway (or straight to
//!   the internet gateway for a task with a public address); the task's groups must let the
//!   traffic out. The credentials endpoint (169.254.170.2) is Fargate's and always there.
//! - into a task: a port its groups admit from the connecting side's groups or subnets.
//!
//! A refused connection is closed at once and counted ([`Network::refused`]); a flow the VPC no
//! longer carries (its NAT gateway deleted) is cut when the next read shows it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{IpPermission, NatGatewayState, RouteState};
use ipnet::Ipv4Net;

const ANYWHERE: Ipv4Net = Ipv4Net::new_assert(std::net::Ipv4Addr::UNSPECIFIED, 0);

/// Where a connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// An AWS service of the region by its endpoint prefix (`sqs`, `dynamodb`, `ecr.api`, …).
    Aws(&'static str),
    /// A host on the internet over HTTPS: the model (its stand-in listens on loopback).
    Internet,
    /// Fargate's credentials and metadata endpoint.
    Agent,
}

/// A task's network interface: its subnet and security groups.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    pub subnet: String,
    pub groups: Vec<String>,
    pub public_ip: bool,
}

/// Who opens a connection into a task: its groups and subnets (a load balancer has several).
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub groups: Vec<String>,
    pub subnets: Vec<String>,
}

impl From<&Placement> for Source {
    fn from(p: &Placement) -> Source {
        Source { groups: p.groups.clone(), subnets: vec![p.subnet.clone()] }
    }
}

#[derive(Default)]
struct Vpc {
    /// Subnet id → (VPC, CIDR).
    subnets: BTreeMap<String, (String, Ipv4Net)>,
    tables: Vec<aws_sdk_ec2::types::RouteTable>,
    nats: Vec<aws_sdk_ec2::types::NatGateway>,
    /// Internet gateway id → the VPCs it is attached to.
    igws: BTreeMap<String, Vec<String>>,
    endpoints: Vec<aws_sdk_ec2::types::VpcEndpoint>,
    groups: BTreeMap<String, aws_sdk_ec2::types::SecurityGroup>,
}

struct Flow {
    from: Placement,
    to: Dest,
    cut: tokio::task::AbortHandle,
}

pub struct Network {
    ec2: aws_sdk_ec2::Client,
    region: String,
    vpc: Mutex<Arc<Vpc>>,
    refused: Mutex<Vec<(Dest, String)>>,
    flows: Mutex<Vec<Flow>>,
}

impl Network {
    /// Reads the VPC now and again every 2 s.
    pub async fn start(ec2: aws_sdk_ec2::Client, region: &str) -> Arc<Network> {
        let network = Arc::new(Network {
            ec2,
            region: region.into(),
            vpc: Mutex::new(Arc::default()),
            refused: Mutex::default(),
            flows: Mutex::default(),
        });
        network.refresh().await;
        let n = Arc::downgrade(&network);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Some(n) = n.upgrade() else { return };
                n.refresh().await;
            }
        });
        network
    }

    /// Reads the VPC again and cuts the flows it no longer carries.
    pub async fn refresh(&self) {
        let Ok(vpc) = self.read().await else { return };
        *self.vpc.lock().unwrap() = Arc::new(vpc);
        self.flows.lock().unwrap().retain(|f| {
            if f.cut.is_finished() {
                return false;
            }
            let Err(why) = self.egress(&f.from, &f.to) else { return true };
            f.cut.abort();
            self.refused.lock().unwrap().push((f.to.clone(), format!("cut: {why}")));
            false
        });
    }

    async fn read(&self) -> Result<Vpc, aws_sdk_ec2::Error> {
        let ec2 = &self.ec2;
        let subnets = ec2.describe_subnets().send().await?;
        let tables = ec2.describe_route_tables().send().await?;
        let nats = ec2.describe_nat_gateways().send().await?;
        let igws = ec2.describe_internet_gateways().send().await?;
        let endpoints = ec2.describe_vpc_endpoints().send().await?;
        let groups = ec2.describe_security_groups().send().await?;
        Ok(Vpc {
            subnets: subnets
                .subnets()
                .iter()
                .filter_map(|s| {
                    let cidr = s.cidr_block()?.parse().ok()?;
                    Some((s.subnet_id()?.to_string(), (s.vpc_id()?.to_string(), cidr)))
                })
                .collect(),
            tables: tables.route_tables().to_vec(),
            nats: nats.nat_gateways().to_vec(),
            igws: igws
                .internet_gateways()
                .iter()
                .map(|g| {
                    let vpcs = g.attachments().iter().filter_map(|a| a.vpc_id().map(String::from)).collect();
                    (g.internet_gateway_id().unwrap_or_default().to_string(), vpcs)
                })
                .collect(),
            endpoints: endpoints.vpc_endpoints().to_vec(),
            groups: groups
                .security_groups()
                .iter()
                .map(|g| (g.group_id().unwrap_or_default().to_string(), g.clone()))
                .collect(),
        })
    }

    fn snapshot(&self) -> Arc<Vpc> {
        self.vpc.lock().unwrap().clone()
    }

    /// How the VPC carries a connection from `from` to `to`, or why it does not.
    pub fn egress(&self, from: &Placement, to: &Dest) -> Result<String, String> {
        let vpc = self.snapshot();
        let Some((vpc_id, _)) = vpc.subnets.get(&from.subnet) else {
            return Err(format!("subnet {} is not in the VPC", from.subnet));
        };
        match to {
            Dest::Agent => Ok("Fargate's credentials endpoint".into()),
            Dest::Aws(service) => {
                let name = format!("com.amazonaws.{}.{service}", self.region);
                let ours = vpc.endpoints.iter().filter(|e| {
                    e.vpc_id() == Some(vpc_id.as_str())
                        && e.service_name() == Some(name.as_str())
                        // AWS answers `available` where the SDK's enum spells `Available`.
                        && e.state().is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"))
                });
                for e in ours {
                    let id = e.vpc_endpoint_id().unwrap_or_default();
                    match e.vpc_endpoint_type().map(|t| t.as_str().to_ascii_lowercase()).as_deref() {
                        Some("interface") if e.private_dns_enabled() == Some(true) => {
                            // Private DNS sends the service's name here: this endpoint or nothing.
                            let groups: Vec<String> =
                                e.groups().iter().filter_map(|g| g.group_id().map(String::from)).collect();
                            let at = Source { groups: groups.clone(), subnets: e.subnet_ids().to_vec() };
                            if !vpc.lets_out(from, 443, &at) {
                                return Err(format!("the task's groups let no TCP 443 out to {id}"));
                            }
                            if !vpc.admits(&groups, 443, &Source::from(from)) {
                                return Err(format!("the groups {groups:?} of {id} admit no TCP 443 from the task"));
                            }
                            return Ok(format!("interface endpoint {id}"));
                        }
                        Some("gateway") => {
                            let table = vpc.table_of(&from.subnet).and_then(|t| t.route_table_id());
                            if table.is_some_and(|t| e.route_table_ids().iter().any(|r| r == t))
                                && vpc.lets_out_to_prefix_list(from)
                            {
                                return Ok(format!("gateway endpoint {id}"));
                            }
                        }
                        _ => {}
                    }
                }
                vpc.internet(from, vpc_id).map_err(|why| format!("no endpoint for {service}, and {why}"))
            }
            Dest::Internet => vpc.internet(from, vpc_id),
        }
    }

    /// Whether a task at `to` takes a connection on `port` from `from`.
    pub fn ingress(&self, to: &Placement, port: u16, from: &Source) -> Result<(), String> {
        if self.snapshot().admits(&to.groups, port, from) {
            Ok(())
        } else {
            Err(format!("the groups {:?} admit no TCP {port} from {:?}", to.groups, from.groups))
        }
    }

    /// `egress`, counted when refused.
    pub fn connect(&self, from: &Placement, to: &Dest) -> Result<String, String> {
        self.egress(from, to).inspect_err(|why| self.refused.lock().unwrap().push((to.clone(), why.clone())))
    }

    /// Watches a flow that `connect` let through, to cut it when the VPC no longer carries it.
    pub fn watch(&self, from: &Placement, to: &Dest, flow: &tokio::task::JoinHandle<()>) {
        let f = Flow { from: from.clone(), to: to.clone(), cut: flow.abort_handle() };
        self.flows.lock().unwrap().push(f);
    }

    /// Connections refused (or cut) going to `to`, with the reasons.
    pub fn refused(&self, to: &Dest) -> Vec<String> {
        self.refused.lock().unwrap().iter().filter(|(d, _)| d == to).map(|(_, why)| why.clone()).collect()
    }
}

impl Vpc {
    /// The route table of `subnet`: its own association, else its VPC's main table.
    fn table_of(&self, subnet: &str) -> Option<&aws_sdk_ec2::types::RouteTable> {
        let vpc = &self.subnets.get(subnet)?.0;
        let own = self.tables.iter().find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(subnet)));
        own.or_else(|| {
            self.tables
                .iter()
                .find(|t| t.vpc_id() == Some(vpc) && t.associations().iter().any(|a| a.main() == Some(true)))
        })
    }

    /// The target of `subnet`'s active default route.
    fn default_route(&self, subnet: &str) -> Option<String> {
        let table = self.table_of(subnet)?;
        let route = table.routes().iter().find(|r| {
            r.destination_cidr_block() == Some("0.0.0.0/0") && r.state().is_none_or(|s| *s == RouteState::Active)
        })?;
        route.nat_gateway_id().or(route.gateway_id()).map(String::from)
    }

    fn internet(&self, from: &Placement, vpc: &str) -> Result<String, String> {
        if !self.lets_out(from, 443, &Source::default()) {
            return Err("the task's groups let no TCP 443 out to the internet".into());
        }
        let attached = |igw: &str| self.igws.get(igw).is_some_and(|v| v.iter().any(|v| v == vpc));
        match self.default_route(&from.subnet) {
            None => Err(format!("subnet {} has no default route", from.subnet)),
            Some(igw) if igw.starts_with("igw-") && from.public_ip && attached(&igw) => {
                Ok(format!("internet gateway {igw}"))
            }
            Some(igw) if igw.starts_with("igw-") => Err(format!(
                "subnet {} routes to {igw}, which carries nothing for a task without a public address",
                from.subnet
            )),
            Some(nat) if nat.starts_with("nat-") => {
                let gateway = self.nats.iter().find(|n| n.nat_gateway_id() == Some(nat.as_str()));
                let Some(gateway) = gateway.filter(|n| n.state() == Some(&NatGatewayState::Available)) else {
                    return Err(format!(
                        "subnet {}'s default route goes to {nat}, which is not available",
                        from.subnet
                    ));
                };
                let out = gateway.subnet_id().and_then(|s| self.default_route(s));
                match out {
                    Some(igw) if igw.starts_with("igw-") && attached(&igw) => Ok(format!("NAT gateway {nat}, {igw}")),
                    _ => Err(format!("{nat}'s subnet has no route to an attached internet gateway")),
                }
            }
            Some(other) => {
                Err(format!("subnet {}'s default route goes to {other}, which the harness does not model", from.subnet))
            }
        }
    }

    fn cidrs(&self, subnets: &[String]) -> Vec<Ipv4Net> {
        subnets.iter().filter_map(|s| self.subnets.get(s).map(|(_, c)| *c)).collect()
    }

    /// Whether a rule of `groups`' (ingress) admits TCP `port` from `from`.
    fn admits(&self, groups: &[String], port: u16, from: &Source) -> bool {
        let cidrs = self.cidrs(&from.subnets);
        groups.iter().filter_map(|g| self.groups.get(g)).flat_map(|g| g.ip_permissions()).any(|p| {
            covers(p, port)
                && (p
                    .user_id_group_pairs()
                    .iter()
                    .any(|u| u.group_id().is_some_and(|g| from.groups.iter().any(|f| f.as_str() == g)))
                    || !cidrs.is_empty() && cidrs.iter().all(|c| in_ranges(p, c)))
        })
    }

    /// Whether the task's groups let TCP `port` out to `to` (no groups or subnets: anywhere).
    fn lets_out(&self, from: &Placement, port: u16, to: &Source) -> bool {
        let cidrs = if to.subnets.is_empty() { vec![ANYWHERE] } else { self.cidrs(&to.subnets) };
        self.egress_rules(from).any(|p| {
            covers(p, port)
                && (p
                    .user_id_group_pairs()
                    .iter()
                    .any(|u| u.group_id().is_some_and(|g| to.groups.iter().any(|t| t.as_str() == g)))
                    || cidrs.iter().any(|c| in_ranges(p, c)))
        })
    }

    /// A gateway endpoint's traffic goes to its service's prefix list (any, here) or anywhere.
    fn lets_out_to_prefix_list(&self, from: &Placement) -> bool {
        self.egress_rules(from).any(|p| covers(p, 443) && (!p.prefix_list_ids().is_empty() || in_ranges(p, &ANYWHERE)))
    }

    fn egress_rules<'a>(&'a self, from: &'a Placement) -> impl Iterator<Item = &'a IpPermission> + 'a {
        from.groups.iter().filter_map(|g| self.groups.get(g)).flat_map(|g| g.ip_permissions_egress())
    }
}

/// Whether the rule's protocol and ports take TCP `port`.
fn covers(p: &IpPermission, port: u16) -> bool {
    match p.ip_protocol() {
        Some("-1") | Some("all") => true,
        Some("tcp") | Some("6") => {
            let (from, to) = (p.from_port().unwrap_or(0), p.to_port().unwrap_or(65535));
            (from..=to).contains(&(port as i32))
        }
        _ => false,
    }
}

/// Whether one of the rule's IPv4 ranges holds all of `cidr`.
fn in_ranges(p: &IpPermission, cidr: &Ipv4Net) -> bool {
    p.ip_ranges().iter().filter_map(|r| r.cidr_ip()?.parse::<Ipv4Net>().ok()).any(|r| r.contains(cidr))
}
