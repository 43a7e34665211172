//! The queue pair and the network.

use super::*;

pub(super) fn queues(stack: &Stack) -> Vec<Desired> {
    let name = &stack.stack.0;
    let q = &stack.queue;
    let queue_name = |id: &str| if q.fifo { format!("{name}-{id}.fifo") } else { format!("{name}-{id}") };
    let mut resources = Vec::new();
    let mut props = json!({
        "name": queue_name(QUEUE),
        "fifo": q.fifo,
        "visibility_timeout": q.visibility_timeout.secs(),
        "retention": q.retention.secs(),
        "receive_wait": q.receive_wait.secs(),
    });
    if let Some(dl) = &q.dead_letter {
        resources.push(Desired::new(
            DEAD_LETTER_QUEUE,
            Kind::SqsQueue,
            json!({
                "name": queue_name(DEAD_LETTER_QUEUE),
                "fifo": q.fifo,
                // Dead letters are only inspected and redriven: SQS's default, independent of the queue's.
                "visibility_timeout": 30,
                "retention": dl.retention.secs(),
                "receive_wait": q.receive_wait.secs(),
            }),
        ));
        props["redrive"] =
            json!({ "dead_letter_arn": reference(DEAD_LETTER_QUEUE, "arn"), "max_receives": dl.max_receives });
    }
    resources.push(Desired::new(QUEUE, Kind::SqsQueue, props));
    resources
}

/// Zone suffix of subnet ids: `public-a`, `private-b`.
pub(super) fn letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

pub(super) fn network(stack: &Stack, facts: &Facts) -> Result<(Vec<Desired>, Placement), String> {
    let net = &stack.network;
    let name = &stack.stack.0;
    let mut out = Vec::new();

    // Where the groups and endpoints go: ids aira creates (references) or ids of an existing VPC.
    let (vpc, public_subnets, private_subnets, private_route_tables): (Value, Vec<Value>, Vec<Value>, Vec<Value>) =
        match &net.existing {
            Some(existing) => (
                Value::from(existing.vpc_id.clone()),
                existing.public_subnets.iter().cloned().map(Value::from).collect(),
                existing.private_subnets.iter().cloned().map(Value::from).collect(),
                facts.existing_private_route_tables.iter().cloned().map(Value::from).collect(),
            ),
            None => {
                let zones = net.zones as usize;
                if facts.zones.len() < zones {
                    return Err(format!(
                        "network.zones: the stack asks for {zones} availability zones, but {} has {} available ({})",
                        facts.region,
                        facts.zones.len(),
                        facts.zones.join(", ")
                    ));
                }
                out.push(Desired::new(
                    "vpc",
                    Kind::Vpc,
                    json!({ "cidr": net.cidr.to_string(), "dns_support": true, "dns_hostnames": true, "ipv6": net.ipv6 }),
                ));
                out.push(Desired::of("igw", &kind::InternetGateway { vpc: Some(Val::to("vpc", "id")) }));
                // Public subnets first, then private, each an equal slice of the VPC block.
                let bits = (2 * zones).next_power_of_two().trailing_zeros() as u8;
                let blocks: Vec<ipnet::Ipv4Net> = net
                    .cidr
                    .0
                    .subnets(net.cidr.0.prefix_len() + bits)
                    .map_err(|e| format!("network.cidr: cannot split {} into subnets: {e}", net.cidr))?
                    .collect();
                let mut privates = Vec::new();
                let mut publics = Vec::new();
                for (i, zone) in facts.zones.iter().take(zones).enumerate() {
                    for (tier, block, list) in
                        [("public", blocks[i], &mut publics), ("private", blocks[zones + i], &mut privates)]
                    {
                        let id = format!("{tier}-{}", letter(i));
                        let mut props =
                            json!({ "vpc": reference("vpc", "id"), "cidr": block.to_string(), "zone": zone });
                        if net.ipv6 && tier == "public" {
                            // The i-th /64 of the VPC's /56: the load balancer's subnets.
                            props["ipv6_index"] = json!(i);
                        }
                        out.push(Desired::new(&id, Kind::Subnet, props));
                        list.push(reference(&id, "id"));
                    }
                }
                let mut routes = vec![json!({ "destination": "0.0.0.0/0", "gateway": reference("igw", "id") })];
                if net.ipv6 {
                    routes.push(json!({ "destination": "::/0", "gateway": reference("igw", "id") }));
                }
                out.push(Desired::new(
                    "public-routes",
                    Kind::RouteTable,
                    json!({ "vpc": reference("vpc", "id"), "routes": routes, "subnets": publics.clone() }),
                ));
                let mut route_tables = Vec::new();
                if net.nat {
                    // A NAT gateway per zone, so that one zone's failure leaves the others online.
                    for (i, private) in privates.iter().enumerate() {
                        let z = letter(i);
                        out.push(Desired::of(&format!("nat-ip-{z}"), &kind::ElasticIp {}));
                        let subnet = Val::to(&format!("public-{z}"), "id");
                        let allocation = Some(Val::to(&format!("nat-ip-{z}"), "id"));
                        out.push(Desired::of(&format!("nat-{z}"), &kind::NatGateway { subnet, allocation }));
                        out.push(Desired::new(
                        &format!("private-routes-{z}"),
                        Kind::RouteTable,
                        json!({
                            "vpc": reference("vpc", "id"),
                            "routes": [{ "destination": "0.0.0.0/0", "nat_gateway": reference(&format!("nat-{z}"), "id") }],
                            "subnets": [private],
                        }),
                    ));
                        route_tables.push(reference(&format!("private-routes-{z}"), "id"));
                    }
                } else {
                    // No route out: tasks reach AWS through the endpoints only.
                    out.push(Desired::new(
                        "private-routes",
                        Kind::RouteTable,
                        json!({ "vpc": reference("vpc", "id"), "routes": [], "subnets": privates.clone() }),
                    ));
                    route_tables.push(reference("private-routes", "id"));
                }
                (reference("vpc", "id"), publics, privates, route_tables)
            }
        };

    // Security groups: the internet reaches the load balancer, the load balancer reaches the
    // services' ports, the services reach the endpoints.
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = stack.services.values().filter(|s| s.role == Role::Api).filter_map(|s| s.port).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let mut anywhere = vec!["0.0.0.0/0"];
    if dualstack(stack) {
        anywhere.push("::/0");
    }
    let lb_ingress: Vec<Value> = [80, 443]
        .iter()
        .flat_map(|port| {
            anywhere.iter().map(move |c| json!({ "protocol": "tcp", "from": port, "to": port, "cidr": c }))
        })
        .collect();
    out.push(Desired::new(
        "lb-sg",
        Kind::SecurityGroup,
        json!({
            "vpc": vpc,
            "name": format!("{name}-lb"),
            "description": format!("aira {name}: load balancer, HTTP and HTTPS from anywhere"),
            "ingress": lb_ingress,
        }),
    ));
    out.push(Desired::new(
        "services-sg",
        Kind::SecurityGroup,
        json!({
            "vpc": vpc,
            "name": format!("{name}-services"),
            "description": format!("aira {name}: services, their ports from the load balancer only"),
            "ingress": ports.iter().map(|p| json!({ "protocol": "tcp", "from": p, "to": p, "source": reference("lb-sg", "id") })).collect::<Vec<_>>(),
        }),
    ));
    // `network.endpoints`, and `bedrock-runtime` for a model on Bedrock.
    let endpoints = stack.endpoints();
    let interface: Vec<Endpoint> = endpoints.iter().copied().filter(|e| !e.is_gateway()).collect();
    if !interface.is_empty() {
        out.push(Desired::new(
            "endpoints-sg",
            Kind::SecurityGroup,
            json!({
                "vpc": vpc,
                "name": format!("{name}-endpoints"),
                "description": format!("aira {name}: VPC endpoints, HTTPS from the services"),
                "ingress": [{ "protocol": "tcp", "from": 443, "to": 443, "source": reference("services-sg", "id") }],
            }),
        ));
    }
    for e in &endpoints {
        let service = e.name();
        let id = format!("endpoint-{}", service.replace('.', "-"));
        let props = if e.is_gateway() {
            json!({
                "vpc": vpc,
                "service": format!("com.amazonaws.{}.{service}", facts.region),
                "type": "Gateway",
                "route_tables": private_route_tables,
            })
        } else {
            json!({
                "vpc": vpc,
                "service": format!("com.amazonaws.{}.{service}", facts.region),
                "type": "Interface",
                "subnets": private_subnets,
                "security_groups": [reference("endpoints-sg", "id")],
                "private_dns": true,
            })
        };
        out.push(Desired::new(&id, Kind::VpcEndpoint, props));
    }
    // What the tasks' traffic and the load balancer's need in place before they start: AWS does
    // not wait for them, and a task started before its endpoints or routes fails with
    // `ResourceInitializationError` (the circuit breaker may then fail the deployment).
    let ids = |keep: &dyn Fn(&Desired) -> bool| out.iter().filter(|d| keep(d)).map(|d| d.id.clone()).collect();
    let task_paths = ids(&|d| d.kind == Kind::VpcEndpoint || d.id.0.starts_with("private-routes"));
    let lb_paths = ids(&|d| d.id.0 == "igw" || d.id.0 == "public-routes");
    Ok((out, Placement { vpc, public_subnets, private_subnets, task_paths, lb_paths }))
}
