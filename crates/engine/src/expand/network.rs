//! The queue pair and the network.

use super::*;

pub(super) fn queues(stack: &Stack) -> Vec<Desired> {
    let name = &stack.stack.0;
    let q = &stack.queue;
    let queue_name = |id: &str| if q.fifo { format!("{name}-{id}.fifo") } else { format!("{name}-{id}") };
    let mut resources = Vec::new();
    let mut queue = kind::SqsQueue {
        name: queue_name(QUEUE),
        fifo: q.fifo,
        visibility_timeout: q.visibility_timeout.secs(),
        retention: q.retention.secs(),
        receive_wait: q.receive_wait.secs(),
        redrive: None,
    };
    if let Some(dl) = &q.dead_letter {
        let dead_letters = kind::SqsQueue {
            name: queue_name(DEAD_LETTER_QUEUE),
            // Dead letters are only inspected and redriven: SQS's default, independent of the queue's.
            visibility_timeout: 30,
            retention: dl.retention.secs(),
            ..queue.clone()
        };
        resources.push(Desired::of(DEAD_LETTER_QUEUE, &dead_letters));
        queue.redrive = Some(kind::QueueRedrive {
            dead_letter_arn: Val::to(DEAD_LETTER_QUEUE, "arn"),
            max_receives: dl.max_receives,
        });
    }
    resources.push(Desired::of(QUEUE, &queue));
    resources
}

/// Zone suffix of subnet ids: `public-a`, `private-b`.
pub(super) fn letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

/// Ids of the network: given by an existing VPC, or references to what aira creates.
type Ids = Vec<Val<String>>;

pub(super) fn network(stack: &Stack, facts: &Facts) -> Result<(Vec<Desired>, Placement), ExpandError> {
    let mut out = Vec::new();
    // Where the groups and endpoints go: ids aira creates (references) or ids of an existing VPC.
    let (vpc, public_subnets, private_subnets, private_route_tables) = match &stack.network.existing {
        Some(existing) => {
            let ids = |ids: &[String]| ids.iter().map(|id| Val::from(id.as_str())).collect::<Ids>();
            (
                Val::from(existing.vpc_id.as_str()),
                ids(&existing.public_subnets),
                ids(&existing.private_subnets),
                ids(&facts.existing_private_route_tables),
            )
        }
        None => new_network(stack, facts, &mut out)?,
    };
    groups(stack, &vpc, &mut out);
    endpoints(stack, facts, &vpc, &private_subnets, &private_route_tables, &mut out);
    // What the tasks' traffic and the load balancer's need in place before they start: AWS does
    // not wait for them, and a task started before its endpoints or routes fails with
    // `ResourceInitializationError` (the circuit breaker may then fail the deployment).
    let ids = |keep: &dyn Fn(&Desired) -> bool| out.iter().filter(|d| keep(d)).map(|d| d.id.clone()).collect();
    let task_paths = ids(&|d| d.kind == Kind::VpcEndpoint || d.id.0.starts_with("private-routes"));
    let lb_paths = ids(&|d| d.id.0 == "igw" || d.id.0 == "public-routes");
    Ok((out, Placement { vpc, public_subnets, private_subnets, task_paths, lb_paths }))
}

/// The VPC aira creates, its subnets, gateways and route tables. Returns where the rest goes:
/// the VPC, the public and the private subnets, the private route tables.
fn new_network(
    stack: &Stack,
    facts: &Facts,
    out: &mut Vec<Desired>,
) -> Result<(Val<String>, Ids, Ids, Ids), ExpandError> {
    let net = &stack.network;
    let zones = net.zones as usize;
    if facts.zones.len() < zones {
        return Err(ExpandError::TooFewZones {
            asked: zones,
            region: facts.region.clone(),
            available: facts.zones.clone(),
        });
    }
    let vpc = || Val::to("vpc", "id");
    let cidr = net.cidr.to_string();
    out.push(Desired::of("vpc", &kind::Vpc { cidr, dns_support: true, dns_hostnames: true, ipv6: net.ipv6 }));
    out.push(Desired::of("igw", &kind::InternetGateway { vpc: Some(vpc()) }));
    // Public subnets first, then private, each an equal slice of the VPC block.
    let bits = (2 * zones).next_power_of_two().trailing_zeros() as u8;
    let blocks: Vec<ipnet::Ipv4Net> = net
        .cidr
        .0
        .subnets(net.cidr.0.prefix_len() + bits)
        .map_err(|e| ExpandError::CidrTooSmall { cidr: net.cidr.to_string(), reason: e.to_string() })?
        .collect();
    let mut privates = Vec::new();
    let mut publics = Vec::new();
    for (i, zone) in facts.zones.iter().take(zones).enumerate() {
        for (tier, block, list) in [("public", blocks[i], &mut publics), ("private", blocks[zones + i], &mut privates)]
        {
            let id = format!("{tier}-{}", letter(i));
            // The i-th /64 of the VPC's /56: the load balancer's subnets.
            let ipv6_index = (net.ipv6 && tier == "public").then_some(i as u64);
            let subnet = kind::Subnet { vpc: vpc(), cidr: block.to_string(), zone: zone.clone(), ipv6_index };
            out.push(Desired::of(&id, &subnet));
            list.push(Val::to(&id, "id"));
        }
    }
    let to_igw = |destination: &str| kind::VpcRoute {
        destination: destination.into(),
        gateway: Some(Val::to("igw", "id")),
        nat_gateway: None,
        network_interface: None,
    };
    let mut routes = vec![to_igw("0.0.0.0/0")];
    if net.ipv6 {
        routes.push(to_igw("::/0"));
    }
    out.push(Desired::of("public-routes", &kind::RouteTable { vpc: vpc(), routes, subnets: publics.clone() }));
    let mut route_tables = Vec::new();
    // `true`: a NAT gateway per zone, so that one zone's failure leaves the others online, each
    // private subnet in a table of its own through its zone's; `one`: the first zone's, and one
    // table through it for every private subnet; `false`: one table with no route out (tasks
    // reach AWS through the endpoints only).
    let gateways = net.nat.gateways(privates.len());
    let per_zone = gateways > 0 && gateways == privates.len();
    let to_nat = |z: char| kind::VpcRoute {
        destination: "0.0.0.0/0".into(),
        gateway: None,
        nat_gateway: Some(Val::to(&format!("nat-{z}"), "id")),
        network_interface: None,
    };
    for (i, private) in privates.iter().enumerate().take(gateways) {
        let z = letter(i);
        out.push(Desired::of(&format!("nat-ip-{z}"), &kind::ElasticIp {}));
        let subnet = Val::to(&format!("public-{z}"), "id");
        let allocation = Some(Val::to(&format!("nat-ip-{z}"), "id"));
        let mut nat = Desired::of(&format!("nat-{z}"), &kind::NatGateway { subnet, allocation });
        // A public NAT gateway in a VPC with no internet gateway attached fails
        // (`Gateway.NotAttached`): the gateway's create attaches it, so the NAT waits for it.
        nat.depends_on.insert("igw".into());
        out.push(nat);
        if per_zone {
            let table = kind::RouteTable { vpc: vpc(), routes: vec![to_nat(z)], subnets: vec![private.clone()] };
            out.push(Desired::of(&format!("private-routes-{z}"), &table));
            route_tables.push(Val::to(&format!("private-routes-{z}"), "id"));
        }
    }
    if net.nat.instance() {
        nat_instance(stack, out);
    }
    if !per_zone {
        let routes = if gateways > 0 {
            vec![to_nat(letter(0))]
        } else if net.nat.instance() {
            vec![kind::VpcRoute {
                destination: "0.0.0.0/0".into(),
                gateway: None,
                nat_gateway: None,
                network_interface: Some(Val::to(NAT_INSTANCE, "eni")),
            }]
        } else {
            Vec::new()
        };
        let table = kind::RouteTable { vpc: vpc(), routes, subnets: privates.clone() };
        out.push(Desired::of("private-routes", &table));
        route_tables.push(Val::to("private-routes", "id"));
    }
    Ok((vpc(), publics, privates, route_tables))
}

/// `nat: instance`'s logical id: one for every zone, in the first zone's public subnet.
const NAT_INSTANCE: &str = "nat-a";

/// `nat: instance`: the instance, its Elastic IP (its public address stays when it is replaced)
/// and its group, which lets in whatever the services send and nothing from anywhere else.
fn nat_instance(stack: &Stack, out: &mut Vec<Desired>) {
    let name = &stack.stack.0;
    let ingress = vec![kind::IngressRule {
        protocol: "-1".into(),
        from: None,
        to: None,
        cidr: None,
        source: Some(Val::to("services-sg", "id")),
    }];
    let group = kind::SecurityGroup {
        vpc: Val::to("vpc", "id"),
        name: format!("{name}-nat"),
        description: format!("aira {name}: NAT instance, everything from the services"),
        ingress,
    };
    out.push(Desired::of("nat-sg", &group));
    out.push(Desired::of("nat-ip-a", &kind::ElasticIp {}));
    let instance = kind::NatInstance {
        subnet: Val::to("public-a", "id"),
        instance_type: crate::stack::model::NAT_INSTANCE_TYPE.into(),
        image: kind::NAT_IMAGE.into(),
        setup: kind::nat_setup_digest(),
        security_groups: vec![Val::to("nat-sg", "id")],
        allocation: Some(Val::to("nat-ip-a", "id")),
        source_dest_check: false,
    };
    let mut nat = Desired::of(NAT_INSTANCE, &instance);
    // Its first boot installs its set-up from the internet: the public subnet's route out first.
    nat.depends_on.extend(["igw".into(), "public-routes".into()]);
    out.push(nat);
}

/// Security groups: the internet reaches the load balancer, the load balancer reaches the
/// services' ports, the services reach the endpoints.
fn groups(stack: &Stack, vpc: &Val<String>, out: &mut Vec<Desired>) {
    let name = &stack.stack.0;
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = stack.services.values().filter(|s| s.role == Role::Api).filter_map(|s| s.port).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let tcp = |port: u16, cidr: Option<&str>, source: Option<&str>| kind::IngressRule {
        protocol: "tcp".into(),
        from: Some(port.into()),
        to: Some(port.into()),
        cidr: cidr.map(String::from),
        source: source.map(|group| Val::to(group, "id")),
    };
    let mut anywhere = vec!["0.0.0.0/0"];
    if dualstack(stack) {
        anywhere.push("::/0");
    }
    let group = |suffix: &str, description: String, ingress: Vec<kind::IngressRule>| kind::SecurityGroup {
        vpc: vpc.clone(),
        name: format!("{name}-{suffix}"),
        description: format!("aira {name}: {description}"),
        ingress,
    };
    let lb_ingress = [80, 443].iter().flat_map(|&port| anywhere.iter().map(move |&c| tcp(port, Some(c), None)));
    let lb = group("lb", "load balancer, HTTP and HTTPS from anywhere".into(), lb_ingress.collect());
    out.push(Desired::of("lb-sg", &lb));
    let from_lb = ports.iter().map(|&p| tcp(p, None, Some("lb-sg"))).collect();
    let services = group("services", "services, their ports from the load balancer only".into(), from_lb);
    out.push(Desired::of("services-sg", &services));
    if stack.endpoints().iter().any(|e| !e.is_gateway()) {
        let from_services = vec![tcp(443, None, Some("services-sg"))];
        let endpoints = group("endpoints", "VPC endpoints, HTTPS from the services".into(), from_services);
        out.push(Desired::of("endpoints-sg", &endpoints));
    }
}

/// `network.endpoints`, and `bedrock-runtime` for a model on Bedrock.
fn endpoints(
    stack: &Stack,
    facts: &Facts,
    vpc: &Val<String>,
    subnets: &Ids,
    route_tables: &Ids,
    out: &mut Vec<Desired>,
) {
    for e in &stack.endpoints() {
        let service = e.name();
        let id = format!("endpoint-{}", service.replace('.', "-"));
        let gateway = e.is_gateway();
        let endpoint = kind::VpcEndpoint {
            vpc: vpc.clone(),
            service: format!("com.amazonaws.{}.{service}", facts.region),
            r#type: if gateway { kind::VpcEndpointType::Gateway } else { kind::VpcEndpointType::Interface },
            route_tables: gateway.then(|| route_tables.clone()),
            subnets: (!gateway).then(|| subnets.clone()),
            security_groups: (!gateway).then(|| vec![Val::to("endpoints-sg", "id")]),
            private_dns: (!gateway).then_some(true),
        };
        out.push(Desired::of(&id, &endpoint));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{expand, service_id, Image};
    use crate::graph::Kind;
    use crate::provider::Facts;

    /// `nat: instance`: one instance in the first zone's public subnet with its address and its
    /// group (open to the services only), the one private route table's default route through
    /// its network interface, and no NAT gateway; the tasks start after that route.
    #[test]
    fn a_nat_instance_serves_every_zone_through_its_network_interface() {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let text = std::fs::read_to_string(path).unwrap().replace("nat: true", "nat: instance");
        let stack = crate::stack::parse("aira.yaml", &text).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        let g = expand(&stack, &Facts::offline(&stack), &image).unwrap();
        let of =
            |kind: Kind| -> Vec<&crate::graph::Desired> { g.resources.iter().filter(|r| r.kind == kind).collect() };
        assert!(of(Kind::NatGateway).is_empty());
        let (nat, ips) = (of(Kind::NatInstance), of(Kind::ElasticIp));
        assert_eq!((nat.len(), ips.len()), (1, 1), "one NAT instance and its address");
        let nat = nat[0];
        assert_eq!(nat.props["subnet"], json!({"$ref": "public-a.id"}));
        assert_eq!(nat.props["allocation"], json!({"$ref": "nat-ip-a.id"}));
        assert_eq!(nat.props["source_dest_check"], json!(false));
        assert_eq!(nat.props["instance_type"], json!("t4g.nano"));
        assert!(nat.props["image"]
            .as_str()
            .unwrap()
            .starts_with("resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-"));
        for before in ["igw", "public-routes"] {
            assert!(nat.depends_on.contains(&before.into()), "its first boot needs {before}");
        }
        let group = g.get(&"nat-sg".into()).expect("the NAT instance's group");
        assert_eq!(
            group.props["ingress"],
            json!([{"protocol": "-1", "from": null, "to": null, "source": {"$ref": "services-sg.id"}}])
        );
        let private: Vec<_> =
            of(Kind::RouteTable).into_iter().filter(|r| r.id.0.starts_with("private-routes")).collect();
        assert_eq!(private.len(), 1, "one private route table");
        assert_eq!(
            private[0].props["routes"],
            json!([{"destination": "0.0.0.0/0", "network_interface": {"$ref": "nat-a.eni"}}])
        );
        let worker = g.get(&service_id("worker").as_str().into()).unwrap();
        assert!(worker.depends_on.contains(&"private-routes".into()));
        g.topo_order().unwrap();
        let reach = crate::stack::reach::Egress::planned(&stack);
        assert_eq!(reach.internet.as_deref(), Some("the first zone's NAT instance (default route)"));
    }
}
