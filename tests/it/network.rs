//! The network layer against the moto server: what is created and how secure it is, runs
//! killed part-way and re-run, an existing VPC, throttling. Checked by reading EC2 back.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;

use crate::harness::{aira, ec2, endpoint, inventory, small_stack, spawn_aira, unique_stack, Workdir};
use crate::proxy::{is_mutating, Faults, Proxy};

fn canonical(stack: &str) -> String {
    crate::canonical::network_and_queues(stack)
}

fn tag_filter(stack: &str) -> Filter {
    Filter::builder().name("tag:aira:stack").values(stack).build()
}

/// What the canonical stack's network and queues amount to, one of each.
fn expected_inventory() -> BTreeMap<(String, String), usize> {
    let mut ids: Vec<(&str, String)> = vec![("vpc", "vpc".into()), ("igw", "igw".into())];
    for s in ["public-a", "public-b", "private-a", "private-b"] {
        ids.push(("subnet", s.into()));
    }
    ids.extend([("route-table", "public-routes".into()), ("route-table", "private-routes".into())]);
    ids.extend(["lb-sg", "services-sg", "endpoints-sg"].map(|g| ("security-group", g.to_string())));
    for e in ["sqs", "ecr-api", "ecr-dkr", "logs", "secretsmanager", "s3", "dynamodb"] {
        ids.push(("vpc-endpoint", format!("endpoint-{e}")));
    }
    ids.extend([("queue", "queue".into()), ("queue", "dlq".into())]);
    ids.into_iter().map(|(k, i)| ((k.to_string(), i), 1)).collect()
}

#[tokio::test]
async fn network_is_complete_private_and_converged() {
    let stack = unique_stack("net");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &canonical(&stack));
    let file = file.to_str().unwrap();
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let up = aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await;
    up.assert_code(0);
    assert_eq!(inventory(&stack).await, expected_inventory());
    // The VPC's IPv6 block is `associating` for a while after CreateVpc (the proxy answers as AWS
    // does): the public subnets waited for it, said so, and were never refused for their range.
    assert!(up.stderr.contains("associating, waiting for associated"), "{}", up.stderr);
    let subnets: Vec<_> = proxy.take_requests().into_iter().filter(|r| r.call == "ec2:CreateSubnet").collect();
    assert_eq!(subnets.len(), 4, "{subnets:?}");
    assert!(subnets.iter().all(|r| r.status == 200), "{subnets:?}");
    assert_eq!(subnets.iter().filter(|r| r.body.contains("Ipv6CidrBlock=")).count(), 2, "{subnets:?}");

    let ec2 = ec2();
    let vpc = ec2.describe_vpcs().filters(tag_filter(&stack)).send().await.unwrap().vpcs()[0].clone();
    let vpc_id = vpc.vpc_id().unwrap();
    assert_eq!(vpc.cidr_block(), Some("10.40.0.0/16"));
    for attr in [
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
    ] {
        let out = ec2.describe_vpc_attribute().vpc_id(vpc_id).attribute(attr.clone()).send().await.unwrap();
        let on = out.enable_dns_support().or(out.enable_dns_hostnames()).and_then(|v| v.value());
        assert_eq!(on, Some(true), "{attr:?}");
    }

    // Subnets of the tasks have no route to the internet gateway (and no NAT).
    let subnets = ec2.describe_subnets().filters(tag_filter(&stack)).send().await.unwrap();
    let id_of = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter().find(|t| t.key() == Some("aira:id")).and_then(|t| t.value()).unwrap().to_string()
    };

    // IPv6: the VPC has an Amazon-provided /56, each public subnet a /64 of it (the load
    // balancer's dualstack subnets); the private subnets have none.
    let v6: ipnet::Ipv6Net = vpc.ipv6_cidr_block_association_set()[0].ipv6_cidr_block().unwrap().parse().unwrap();
    assert_eq!(v6.prefix_len(), 56);
    for sn in subnets.subnets() {
        let blocks: Vec<&str> =
            sn.ipv6_cidr_block_association_set().iter().filter_map(|a| a.ipv6_cidr_block()).collect();
        if id_of(sn.tags()).starts_with("public") {
            let net: ipnet::Ipv6Net = blocks[0].parse().unwrap();
            assert!(net.prefix_len() == 64 && v6.contains(&net), "{net} in {v6}");
        } else {
            assert!(blocks.is_empty(), "private subnet with IPv6: {blocks:?}");
        }
    }
    let f = Filter::builder().name("tag:aira:id").values("public-routes").build();
    let public_routes = ec2.describe_route_tables().filters(tag_filter(&stack)).filters(f).send().await.unwrap();
    let igw_v6 = public_routes.route_tables()[0].routes().iter().any(|r| {
        r.destination_ipv6_cidr_block() == Some("::/0") && r.gateway_id().is_some_and(|g| g.starts_with("igw-"))
    });
    assert!(igw_v6, "the public subnets route ::/0 to the internet gateway");
    let private: Vec<String> = subnets
        .subnets()
        .iter()
        .filter(|s| id_of(s.tags()).starts_with("private"))
        .map(|s| s.subnet_id().unwrap().to_string())
        .collect();
    assert_eq!(private.len(), 2);
    let zones: std::collections::BTreeSet<_> =
        subnets.subnets().iter().map(|s| s.availability_zone().unwrap()).collect();
    assert_eq!(zones.len(), 2, "two zones");
    for sn in &private {
        let f = Filter::builder().name("association.subnet-id").values(sn).build();
        let tables = ec2.describe_route_tables().filters(f).send().await.unwrap();
        let table = &tables.route_tables()[0];
        assert_eq!(id_of(table.tags()), "private-routes");
        for r in table.routes() {
            assert!(
                !r.gateway_id().unwrap_or("").starts_with("igw-"),
                "private subnet {sn} routes to an internet gateway: {r:?}"
            );
            assert!(r.nat_gateway_id().is_none(), "no NAT by default");
        }
    }

    // Security groups: only the load balancer's is open to the internet.
    let groups = ec2.describe_security_groups().filters(tag_filter(&stack)).send().await.unwrap();
    let by_id: BTreeMap<String, &aws_sdk_ec2::types::SecurityGroup> =
        groups.security_groups().iter().map(|g| (id_of(g.tags()), g)).collect();
    for (name, g) in &by_id {
        for p in g.ip_permissions() {
            let open = p.ip_ranges().iter().any(|r| r.cidr_ip() == Some("0.0.0.0/0"))
                || p.ipv6_ranges().iter().any(|r| r.cidr_ipv6() == Some("::/0"));
            if *name == "lb-sg" {
                assert!(matches!(p.from_port(), Some(80 | 443)), "lb-sg opens only 80 and 443: {p:?}");
            } else {
                assert!(!open, "{name} allows ingress from 0.0.0.0/0: {p:?}");
            }
        }
    }
    // No service in this stack, so no port is open to the services (the full-stack test checks
    // that the api's port opens to the load balancer's group only).
    let services = &by_id["services-sg"];
    assert!(services.ip_permissions().is_empty(), "{:?}", services.ip_permissions());
    let endpoint_rule = &by_id["endpoints-sg"].ip_permissions()[0];
    assert_eq!(endpoint_rule.from_port(), Some(443));
    assert_eq!(endpoint_rule.user_id_group_pairs()[0].group_id(), services.group_id());

    // Endpoints: interface ones with private DNS in the private subnets, gateway ones on the private route table.
    let endpoints = ec2.describe_vpc_endpoints().filters(tag_filter(&stack)).send().await.unwrap();
    for e in endpoints.vpc_endpoints() {
        let service = e.service_name().unwrap();
        if service.ends_with(".s3") || service.ends_with(".dynamodb") {
            assert_eq!(e.route_table_ids().len(), 1, "{service}");
        } else {
            assert_eq!(e.private_dns_enabled(), Some(true), "{service}");
            let mut sn: Vec<String> = e.subnet_ids().to_vec();
            sn.sort();
            let mut want = private.clone();
            want.sort();
            assert_eq!(sn, want, "{service} in the private subnets");
        }
    }

    // Converged: a second run makes no mutating call.
    proxy.take_calls();
    let again = aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await;
    again.assert_code(0);
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);
    // Only the stack lock's own item is written (taken and released).
    let mutating: Vec<String> =
        proxy.take_calls().into_iter().filter(|c| is_mutating(c) && !c.starts_with("dynamodb:")).collect();
    assert!(mutating.is_empty(), "{mutating:?}");

    // Down leaves nothing tagged with the stack.
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &proxy.url]).await.assert_code(0);
    assert!(inventory(&stack).await.is_empty(), "{:?}", inventory(&stack).await);
}

/// Kills `aira up` at several points, each right after AWS carried out a mutating call whose
/// answer never arrived, and checks that the re-run converges with no duplicate and that
/// `down` then removes everything.
#[tokio::test]
async fn killed_runs_converge_without_duplicates() {
    // Mutating call 1 is the stack lock's PutItem; the rest are the resources' calls.
    let points = [2u64, 3, 5, 8, 12, 17, 23, 31];
    let work = Workdir::new();
    let mut stacks = Vec::new();
    for point in points {
        let stack = unique_stack(&format!("kill{point}"));
        let file = work.write(&format!("{stack}.yaml"), &canonical(&stack));
        let file = file.to_str().unwrap().to_string();
        let proxy = Proxy::start(&endpoint(), Faults { hang_after_mutations: Some(point), ..Faults::default() }).await;
        let mut child = spawn_aira(work.dir.path(), &["up", &file, "--endpoint-url", &proxy.url]);
        tokio::select! {
            _ = proxy.hung.notified() => {}
            status = child.wait() => panic!("aira up ended ({status:?}) before mutating call {point}"),
        }
        child.kill().await.unwrap(); // SIGKILL
        let partial = inventory(&stack).await;
        assert!(partial.values().all(|n| *n == 1), "kill point {point}: duplicates already: {partial:?}");
        stacks.push((point, stack, file));
    }
    for (point, stack, file) in &stacks {
        // The killed run's lock is still there: removing it is the documented recovery.
        let rerun = aira(work.dir.path(), &["up", file, "--force-unlock", "--endpoint-url", &endpoint()]).await;
        rerun.assert_code(0);
        assert_eq!(
            inventory(stack).await,
            expected_inventory(),
            "kill point {point}: re-run must give exactly one of each"
        );
        let plan = aira(work.dir.path(), &["plan", file, "--detailed-exitcode", "--endpoint-url", &endpoint()]).await;
        plan.assert_code(0);
    }
    // Down after partial runs too: kill a fresh run early, then tear down.
    let stack = unique_stack("killdown");
    let file = work.write("killdown.yaml", &canonical(&stack));
    let file = file.to_str().unwrap();
    let proxy = Proxy::start(&endpoint(), Faults { hang_after_mutations: Some(9), ..Faults::default() }).await;
    let mut child = spawn_aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]);
    proxy.hung.notified().await;
    child.kill().await.unwrap();
    assert!(!inventory(&stack).await.is_empty());
    stacks.push((0, stack, file.to_string()));
    for (point, stack, file) in &stacks {
        aira(work.dir.path(), &["down", file, "--yes", "--force-unlock", "--endpoint-url", &endpoint()])
            .await
            .assert_code(0);
        assert!(inventory(stack).await.is_empty(), "kill point {point}: down left {:?}", inventory(stack).await);
    }
}

#[tokio::test]
async fn a_killed_down_is_finished_by_the_next_down() {
    let stack = unique_stack("killd");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &canonical(&stack));
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let proxy = Proxy::start(&endpoint(), Faults { hang_after_mutations: Some(5), ..Faults::default() }).await;
    let mut child = spawn_aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &proxy.url]);
    tokio::select! {
        _ = proxy.hung.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("down never made 5 mutating calls"),
    }
    child.kill().await.unwrap();
    aira(work.dir.path(), &["down", file, "--yes", "--force-unlock", "--endpoint-url", &endpoint()])
        .await
        .assert_code(0);
    assert!(inventory(&stack).await.is_empty());
}

#[tokio::test]
async fn up_and_down_converge_under_throttling_and_latency() {
    let stack = unique_stack("thrnet");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &canonical(&stack));
    let file = file.to_str().unwrap();
    let proxy =
        Proxy::start(&endpoint(), Faults { throttle: 0.1, latency: Duration::from_millis(20), ..Faults::default() })
            .await;
    aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await.assert_code(0);
    assert_eq!(inventory(&stack).await, expected_inventory());
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &proxy.url]).await.assert_code(0);
    assert!(inventory(&stack).await.is_empty());
    assert!(proxy.faults_injected.load(std::sync::atomic::Ordering::SeqCst) >= 5);
}

#[tokio::test]
async fn too_many_zones_is_a_preflight_error() {
    let stack = unique_stack("zones");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &format!("stack: {stack}\nregion: us-west-1\nnetwork:\n  zones: 5\n"));
    let run = aira(work.dir.path(), &["up", file.to_str().unwrap(), "--endpoint-url", &endpoint()]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("network.zones: the stack asks for 5 availability zones"), "{}", run.stderr);
    assert!(inventory(&stack).await.is_empty());
}

/// China (Beijing) has a zone where Fargate does not run (`cnn1-az4`; the conforming proxy lists
/// it as AWS does): a stack with services that would need it is refused naming it. (Without the
/// table's row the zone would be taken, and the zone check pass.)
#[tokio::test]
async fn a_zone_without_fargate_is_left_out_in_the_china_partition_too() {
    let stack = unique_stack("cnzones");
    let work = Workdir::new();
    let yaml = format!(
        "stack: {stack}\nregion: cn-north-1\nnetwork:\n  zones: 3\n  endpoints: [s3]\n  nat: true\nservices:\n  worker: {{ role: worker, cpu: 256, memory: 512 }}\nmonitoring: false\n"
    );
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let three = work.write("three.yaml", &yaml);
    let run = aira(work.dir.path(), &["plan", three.to_str().unwrap(), "--endpoint-url", &proxy.url]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("cn-north-1 has 2 that offer Fargate"), "{}", run.stderr);
    assert!(run.stderr.contains("cn-north-1d lacks Fargate (zone ID cnn1-az4)"), "{}", run.stderr);
}

#[tokio::test]
async fn optional_nat_gateways_route_the_private_subnets() {
    let stack = unique_stack("nat");
    let work = Workdir::new();
    let yaml = format!("stack: {stack}\nregion: us-east-1\nnetwork:\n  nat: true\n  endpoints: [s3]\n");
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let inv = inventory(&stack).await;
    for id in ["nat-a", "nat-b"] {
        assert_eq!(inv.get(&("nat-gateway".to_string(), id.to_string())), Some(&1), "{inv:?}");
    }
    assert_eq!(inv.get(&("elastic-ip".to_string(), "nat-ip-a".to_string())), Some(&1), "{inv:?}");
    let ec2 = ec2();
    let tables = ec2.describe_route_tables().filters(tag_filter(&stack)).send().await.unwrap();
    let nat_routes =
        tables.route_tables().iter().flat_map(|t| t.routes()).filter(|r| r.nat_gateway_id().is_some()).count();
    assert_eq!(nat_routes, 2, "one default route per zone through that zone's NAT gateway");
    aira(work.dir.path(), &["plan", file, "--detailed-exitcode", "--endpoint-url", &endpoint()]).await.assert_code(0);
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    assert!(inventory(&stack).await.is_empty(), "{:?}", inventory(&stack).await);
}

#[tokio::test]
async fn down_waits_out_dependency_violations_and_says_so() {
    let stack = unique_stack("depv");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &small_stack(&stack));
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    // AWS answers DependencyViolation while network interfaces are still being released.
    let proxy = Proxy::start(
        &endpoint(),
        Faults { ec2_error: Some(("DeleteSubnet", "DependencyViolation", 3)), ..Faults::default() },
    )
    .await;
    let down = aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &proxy.url]).await;
    down.assert_code(0);
    assert!(down.stderr.contains("still in use"), "progress says what it waits for:\n{}", down.stderr);
    assert!(inventory(&stack).await.is_empty());
}

/// A NAT gateway still `deleting` holds its Elastic IP, and AWS refuses to release the address
/// meanwhile (`InvalidIPAddress.InUse`; moto releases it at once): `down` waits and says so.
#[tokio::test]
async fn down_waits_for_a_nat_gateway_to_let_go_of_its_address() {
    // A region of its own: the NAT gateways hold Elastic IPs.
    let region = "sa-east-1";
    let stack = unique_stack("eipheld");
    let work = Workdir::new();
    let yaml = format!("stack: {stack}\nregion: {region}\nnetwork:\n  nat: true\n  endpoints: [s3]\n");
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let proxy = Proxy::start(
        &endpoint(),
        Faults { ec2_error: Some(("ReleaseAddress", "InvalidIPAddress.InUse", 2)), ..Faults::default() },
    )
    .await;
    let down = aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &proxy.url]).await;
    down.assert_code(0);
    assert!(down.stderr.contains("the NAT gateway being deleted to let go of the address"), "{}", down.stderr);
    crate::harness::assert_nothing_left(&stack, region).await;
}

#[tokio::test]
async fn down_lists_what_it_left_behind_and_why() {
    let stack = unique_stack("left");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &small_stack(&stack));
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    // A permission the caller lacks: not retried, reported.
    let proxy = Proxy::start(
        &endpoint(),
        Faults { ec2_error: Some(("DeleteSubnet", "UnauthorizedOperation", 0)), ..Faults::default() },
    )
    .await;
    let down = aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &proxy.url, "--output", "json"]).await;
    down.assert_code(2);
    let left = down.json()["left_behind"].as_array().unwrap().clone();
    let text: Vec<String> = left.iter().map(|l| format!("{} — {}", l["resource"], l["reason"])).collect();
    assert!(text.iter().any(|t| t.contains("ec2.subnet") && t.contains("UnauthorizedOperation")), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("ec2.vpc") && t.contains("waits on")), "{text:#?}");
    assert!(!text.iter().any(|t| t.contains("sqs.queue")), "the queues were deleted: {text:#?}");
    // Without the fault, the next down finishes the job.
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    assert!(inventory(&stack).await.is_empty());
}

#[tokio::test]
async fn elastic_ip_quota_is_a_preflight_error() {
    // A region of its own: the other tests' NAT gateways hold addresses in us-east-1.
    let region = "eu-north-1";
    let config = crate::harness::sdk_config().into_builder().region(aws_config::Region::new(region)).build();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    for _ in 0..4 {
        ec2.allocate_address().send().await.unwrap();
    }
    let stack = unique_stack("eip");
    let work = Workdir::new();
    let file = work
        .write("stack.yaml", &format!("stack: {stack}\nregion: {region}\nnetwork:\n  nat: true\n  endpoints: [s3]\n"));
    let run = aira(work.dir.path(), &["up", file.to_str().unwrap(), "--endpoint-url", &endpoint()]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("need 2 more Elastic IP(s)") && run.stderr.contains("of this region's 5 are in use"),
        "{}",
        run.stderr
    );
    let vpcs = ec2.describe_vpcs().filters(tag_filter(&stack)).send().await.unwrap();
    assert!(vpcs.vpcs().is_empty(), "nothing is created after a failed pre-flight");
}

/// The zones of the stack's subnets, read with the EC2 SDK.
async fn subnet_zones(stack: &str) -> Vec<String> {
    let filter = Filter::builder().name("tag:aira:stack").values(stack).build();
    let out = ec2().describe_subnets().filters(filter).send().await.unwrap();
    let mut zones: Vec<String> = out.subnets().iter().filter_map(|s| s.availability_zone().map(String::from)).collect();
    zones.sort();
    zones.dedup();
    zones
}

#[tokio::test]
async fn subnets_avoid_a_zone_without_an_endpoint_service_and_stay_where_they_are() {
    let stack = unique_stack("zones");
    let work = Workdir::new();
    let file = work.write("s.yaml", &format!("stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, s3]\n"));
    let file = file.to_str().unwrap();
    // AWS offers the sqs endpoint service in us-east-1b..f only, here.
    let faults = Faults { endpoint_service_without_zone: Some(("sqs", "us-east-1a")), ..Faults::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await.assert_code(0);
    assert_eq!(subnet_zones(&stack).await, ["us-east-1b", "us-east-1c"]);
    // Later us-east-1b no longer offers it: the subnets stay (a rerun never moves them).
    let faults = Faults { endpoint_service_without_zone: Some(("sqs", "us-east-1b")), ..Faults::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    let plan = aira(work.dir.path(), &["plan", file, "--detailed-exitcode", "--endpoint-url", &proxy.url]).await;
    plan.assert_code(0);
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
}

#[tokio::test]
async fn too_few_zones_offering_the_endpoints_is_refused_before_any_change() {
    let stack = unique_stack("zonesno");
    let work = Workdir::new();
    // us-east-1 has six zones in moto: all are needed.
    let yaml = format!("stack: {stack}\nregion: us-east-1\nnetwork:\n  zones: 6\n  endpoints: [sqs, logs, s3]\n");
    let file = work.write("s.yaml", &yaml);
    let faults = Faults { endpoint_service_without_zone: Some(("logs", "us-east-1d")), ..Faults::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    let up = aira(work.dir.path(), &["up", file.to_str().unwrap(), "--yes", "--endpoint-url", &proxy.url]).await;
    up.assert_code(1);
    assert!(
        up.stderr.contains("network.zones: the stack asks for 6 availability zones, but us-east-1 has 5 that offer"),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr.contains("us-east-1d lacks the logs endpoint"),
        "names the zone and what it lacks: {}",
        up.stderr
    );
    let changes: Vec<String> =
        proxy.take_calls().into_iter().filter(|c| is_mutating(c) && !c.starts_with("dynamodb:")).collect();
    assert!(changes.is_empty(), "changed: {changes:?}");
    assert!(inventory(&stack).await.is_empty());
}

/// The harness answers as AWS: a public NAT gateway created before an internet gateway is
/// attached to its VPC ends `failed` with `Gateway.NotAttached` (moto makes it available), and
/// one created after is available. (The engine orders every NAT gateway after the stack's
/// internet gateway, whose create attaches it: an engine test.)
#[tokio::test]
async fn a_nat_gateway_before_the_internet_gateway_is_attached_fails_as_on_aws() {
    use aws_sdk_ec2::types::NatGatewayState;
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let testing = aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    // A region of its own: the two addresses count against moto's 5 a region.
    let ec2 = aws_sdk_ec2::Client::new(&crate::harness::sdk_config_as(&proxy.url, "eu-north-1", testing));
    let vpc = ec2.create_vpc().cidr_block("10.77.0.0/16").send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.77.0.0/24").send().await.unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    let nat = |ec2: aws_sdk_ec2::Client, subnet: String| async move {
        let eip = ec2.allocate_address().send().await.unwrap().allocation_id().unwrap().to_string();
        let out = ec2.create_nat_gateway().subnet_id(subnet).allocation_id(eip).send().await.unwrap();
        let id = out.nat_gateway().unwrap().nat_gateway_id().unwrap().to_string();
        let read = ec2.describe_nat_gateways().nat_gateway_ids(&id).send().await.unwrap();
        read.nat_gateways()[0].clone()
    };
    let early = nat(ec2.clone(), subnet.clone()).await;
    assert_eq!(early.state(), Some(&NatGatewayState::Failed), "{early:?}");
    assert_eq!(early.failure_code(), Some("Gateway.NotAttached"));
    assert_eq!(early.failure_message(), Some(format!("Network {vpc} has no Internet gateway attached").as_str()));

    let igw = ec2.create_internet_gateway().send().await.unwrap();
    let igw = igw.internet_gateway().unwrap().internet_gateway_id().unwrap().to_string();
    ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.unwrap();
    let late = nat(ec2.clone(), subnet.clone()).await;
    assert_eq!(late.state(), Some(&NatGatewayState::Available), "{late:?}");
    assert_eq!(late.failure_code(), None);
}

/// A stack with a worker on Bedrock: its network gets the `bedrock-runtime` and (monitoring on)
/// `aps-workspaces` endpoints without listing them.
fn implied_endpoints_stack(stack: &str) -> String {
    format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\n\
         services:\n  worker: {{ role: worker, cpu: 256, memory: 512 }}\n\
         llm:\n  provider: bedrock\n  model: amazon.nova-lite-v1:0\n"
    )
}

/// The endpoints a stack implies choose its zones as those it lists do; a region without one of
/// those services at all is refused in the pre-flight, naming what in the stack asks for it.
#[tokio::test]
async fn implied_endpoints_choose_the_zones_and_a_region_without_one_is_refused() {
    let stack = unique_stack("implied");
    let work = Workdir::new();
    let file = work.write("s.yaml", &implied_endpoints_stack(&stack));
    let file = file.to_str().unwrap();
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/x@sha256:{}", "0".repeat(64));
    let plan_with = |faults: Faults| {
        let (file, image) = (file.to_string(), image.clone());
        let dir = work.dir.path().to_path_buf();
        async move {
            let proxy = Proxy::start(&endpoint(), faults).await;
            let args = ["plan", &file, "--image", &image, "--output", "json", "--endpoint-url", &proxy.url];
            (aira(&dir, &args).await, proxy)
        }
    };
    // The network alone, with the model's endpoint: us-east-1a lacks it, so the subnets avoid it.
    let worker = "services:\n  worker: { role: worker, cpu: 256, memory: 512 }\n";
    let network = work.write("n.yaml", &implied_endpoints_stack(&stack).replace(worker, ""));
    let network = network.to_str().unwrap();
    let faults = Faults { endpoint_service_without_zone: Some(("bedrock-runtime", "us-east-1a")), ..Faults::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    aira(work.dir.path(), &["up", network, "--endpoint-url", &proxy.url]).await.assert_code(0);
    assert_eq!(subnet_zones(&stack).await, ["us-east-1b", "us-east-1c"], "the implied endpoint decides the zones too");
    aira(work.dir.path(), &["down", network, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    for (service, finding) in [
        ("bedrock-runtime", "llm.provider: bedrock: us-east-1 has no `bedrock-runtime` endpoint service"),
        ("aps-workspaces", "monitoring: us-east-1 has no `aps-workspaces` endpoint service"),
    ] {
        let (plan, proxy) = plan_with(Faults { endpoint_service_absent: Some(service), ..Faults::default() }).await;
        plan.assert_code(1);
        assert!(plan.stderr.contains(finding), "{}", plan.stderr);
        let changes: Vec<String> = proxy.take_calls().into_iter().filter(|c| is_mutating(c)).collect();
        assert!(changes.is_empty(), "changed: {changes:?}");
    }
}

/// An id EC2 just gave, unknown to the next call for a moment (AWS: eventual consistency): the
/// call is retried, saying why, and the run goes on.
#[tokio::test]
async fn an_id_ec2_does_not_know_yet_is_waited_for() {
    let stack = unique_stack("fresh");
    let work = Workdir::new();
    let file = work.write("s.yaml", &small_stack(&stack));
    let file = file.to_str().unwrap();
    let faults = Faults { ec2_error: Some(("CreateSubnet", "InvalidVpcID.NotFound", 2)), ..Faults::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    let up = aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await;
    up.assert_code(0);
    assert_eq!(proxy.faults_injected.load(std::sync::atomic::Ordering::SeqCst), 2, "the fault was met");
    assert!(up.stderr.contains("waiting for EC2 to know an id it just gave"), "{}", up.stderr);
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
}

/// Turning IPv6 off on a live stack is refused by `plan` and `up` before any change (the apply
/// would have to take the block from the subnets before the VPC, the reverse of its order).
#[tokio::test]
async fn turning_ipv6_off_on_a_live_stack_is_refused_before_any_change() {
    let stack = unique_stack("v6off");
    let work = Workdir::new();
    let file = work.write("s.yaml", &small_stack(&stack));
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let off = work.write("off.yaml", &small_stack(&stack).replace("network:\n", "network:\n  ipv6: false\n"));
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    for verb in ["plan", "up"] {
        let run = aira(work.dir.path(), &[verb, off.to_str().unwrap(), "--yes", "--endpoint-url", &proxy.url]).await;
        run.assert_code(1);
        assert!(run.stderr.contains("turning it off on a live stack is not supported"), "{verb}: {}", run.stderr);
    }
    let changes: Vec<String> =
        proxy.take_calls().into_iter().filter(|c| is_mutating(c) && !c.starts_with("dynamodb:")).collect();
    assert!(changes.is_empty(), "changed: {changes:?}");
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
}

/// `nat: true` to `false`, to `one` and back: the private subnets move between route tables, each held
/// by one table at a time (AWS refuses a second association, `Resource.AlreadyAssociated`, which
/// the conforming proxy answers where moto hands back the old one), and the gateway endpoints
/// follow them. Read back with the EC2 SDK: each private subnet's own table, its default route,
/// and the endpoints' tables. Before the proxy answered as AWS does, turning NAT off left the
/// subnets on the VPC's main table, out of the gateway endpoints' reach (the deployed harness's
/// network found it).
#[tokio::test]
async fn changing_nat_moves_the_private_subnets_and_their_gateway_endpoints() {
    // A region of its own: the NAT gateways hold Elastic IPs.
    let region = "ap-northeast-2";
    let config = crate::harness::sdk_config().into_builder().region(aws_config::Region::new(region)).build();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let stack = unique_stack("natoff");
    let work = Workdir::new();
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let yaml =
        |nat: &str| format!("stack: {stack}\nregion: {region}\nnetwork:\n  nat: {nat}\n  endpoints: [s3, dynamodb]\n");
    // Each private subnet's own table (the route table holding it) and whether it routes out.
    let private_tables = || async {
        let subnets = ec2.describe_subnets().filters(tag_filter(&stack)).send().await.unwrap();
        let tables = ec2.describe_route_tables().filters(tag_filter(&stack)).send().await.unwrap();
        let endpoints = ec2.describe_vpc_endpoints().filters(tag_filter(&stack)).send().await.unwrap();
        let mut out = Vec::new();
        let private = |s: &&aws_sdk_ec2::types::Subnet| {
            s.tags().iter().any(|t| t.key() == Some("aira:id") && t.value().is_some_and(|v| v.starts_with("private-")))
        };
        for s in subnets.subnets().iter().filter(private) {
            let id = s.subnet_id().unwrap();
            let holding: Vec<_> = tables
                .route_tables()
                .iter()
                .filter(|t| t.associations().iter().any(|a| a.subnet_id() == Some(id)))
                .collect();
            assert_eq!(holding.len(), 1, "subnet {id} is held by one route table: {holding:#?}");
            let table = holding[0].route_table_id().unwrap().to_string();
            // The NAT gateway its default route goes to.
            let routes_out = holding[0]
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
                .and_then(|r| r.nat_gateway_id().map(String::from));
            for e in endpoints.vpc_endpoints() {
                assert!(
                    e.route_table_ids().contains(&table),
                    "{} does not reach subnet {id}'s table {table}",
                    e.service_name().unwrap_or_default()
                );
            }
            out.push((id.to_string(), table, routes_out));
        }
        assert_eq!(out.len(), 2, "two private subnets");
        out
    };
    let (dir, url) = (work.dir.path().to_path_buf(), proxy.url.clone());
    let up = |nat: &'static str| {
        let file = work.write("stack.yaml", &yaml(nat));
        let (dir, url) = (dir.clone(), url.clone());
        async move { aira(&dir, &["up", file.to_str().unwrap(), "--yes", "--endpoint-url", &url]).await }
    };
    // The NAT gateways that are available.
    let gateways = || async {
        let out = ec2.describe_nat_gateways().filter(tag_filter(&stack)).send().await.unwrap();
        let available = out.nat_gateways().iter().filter(|n| n.state().is_some_and(|s| s.as_str() == "available"));
        available.map(|n| n.nat_gateway_id().unwrap().to_string()).collect::<Vec<_>>()
    };
    up("true").await.assert_code(0);
    let per_zone = private_tables().await;
    assert_eq!(gateways().await.len(), 2, "a NAT gateway per zone");
    assert_ne!(per_zone[0].1, per_zone[1].1, "a table per zone");
    assert!(per_zone[0].2.is_some() && per_zone[0].2 != per_zone[1].2, "each to its zone's gateway: {per_zone:?}");
    up("false").await.assert_code(0);
    let without = private_tables().await;
    assert!(gateways().await.is_empty());
    assert!(without.iter().all(|(_, _, out)| out.is_none()), "{without:?}");
    assert_eq!(without[0].1, without[1].1, "one table for both, with no route out");
    up("one").await.assert_code(0);
    let one = private_tables().await;
    let nats = gateways().await;
    assert_eq!(nats.len(), 1, "one NAT gateway: {nats:?}");
    assert_eq!(one[0].1, one[1].1, "one table for both");
    assert!(one.iter().all(|(_, _, out)| out.as_ref() == Some(&nats[0])), "both through it: {one:?}");
    up("true").await.assert_code(0);
    let again = private_tables().await;
    assert_eq!(gateways().await.len(), 2);
    assert!(again[0].2.is_some() && again[0].2 != again[1].2, "{again:?}");
    let file = work.write("stack.yaml", &yaml("true"));
    aira(work.dir.path(), &["down", file.to_str().unwrap(), "--yes", "--endpoint-url", &proxy.url])
        .await
        .assert_code(0);
    crate::harness::assert_nothing_left(&stack, region).await;
}
