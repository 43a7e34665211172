//! A stack in a VPC it does not own: used and never touched, and checked before any change —
//! that it exists, its DNS attributes, endpoints that would refuse the stack's own, and that its
//! private subnets' routes and endpoints carry what the services need.

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, VpcEndpointType};

use crate::harness::{aira, ec2, endpoint, inventory, unique_stack, Workdir};

/// A VPC `10.N.0.0/16` with four /24 subnets over two zones (two public, then two private).
async fn vpc_with_subnets(ec2: &aws_sdk_ec2::Client, n: u8) -> (String, Vec<String>) {
    let vpc = ec2.create_vpc().cidr_block(format!("10.{n}.0.0/16")).send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1a", "us-east-1b"].iter().enumerate() {
        let out = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.{n}.{i}.0/24"))
            .availability_zone(*zone)
            .send()
            .await
            .unwrap();
        subnets.push(out.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    (vpc, subnets)
}

#[tokio::test]
async fn existing_vpc_is_used_and_never_touched() {
    let ec2 = ec2();
    let (vpc, subnets) = vpc_with_subnets(&ec2, 77).await;
    let stack = unique_stack("exist");
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  existing:\n    vpc_id: {vpc}\n    public_subnets: [{}, {}]\n    private_subnets: [{}, {}]\n  endpoints: [sqs, s3]\n",
        subnets[0], subnets[1], subnets[2], subnets[3]
    );
    let work = Workdir::new();
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();

    // The private DNS of the stack's interface endpoint needs both DNS attributes, and a private
    // DNS name another endpoint of the VPC holds already: both refused at once, before any change.
    let dns = |on: bool| {
        let ec2 = ec2.clone();
        let vpc = vpc.clone();
        async move {
            let flag = aws_sdk_ec2::types::AttributeBooleanValue::builder().value(on).build();
            ec2.modify_vpc_attribute().vpc_id(&vpc).enable_dns_hostnames(flag).send().await.unwrap();
        }
    };
    dns(false).await;
    let theirs = ec2
        .create_vpc_endpoint()
        .vpc_id(&vpc)
        .service_name("com.amazonaws.us-east-1.sqs")
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
        .subnet_ids(&subnets[2])
        .private_dns_enabled(true)
        .send()
        .await
        .unwrap();
    let theirs = theirs.vpc_endpoint().unwrap().vpc_endpoint_id().unwrap().to_string();
    let refused = aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await;
    refused.assert_code(1);
    assert!(refused.stderr.contains(&format!("VPC {vpc} has enableDnsHostnames off")), "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("--vpc-id {vpc} --enable-dns-hostnames")), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("already has {theirs}, an interface endpoint for the same service with private DNS"))
            && refused.stderr.contains("drop `sqs` from network.endpoints"),
        "{}",
        refused.stderr
    );
    assert!(inventory(&stack).await.is_empty(), "nothing was created");
    ec2.delete_vpc_endpoints().vpc_endpoint_ids(&theirs).send().await.unwrap();
    dns(true).await;

    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let inv = inventory(&stack).await;
    let kinds: std::collections::BTreeSet<&str> = inv.keys().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["queue", "security-group", "vpc-endpoint"].into_iter().collect(), "{inv:?}");
    let endpoints = ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("tag:aira:stack").values(&stack).build())
        .send()
        .await
        .unwrap();
    assert!(endpoints.vpc_endpoints().iter().all(|e| e.vpc_id() == Some(vpc.as_str())));
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    assert!(inventory(&stack).await.is_empty());
    // What aira did not create is still there.
    let out = ec2.describe_subnets().set_subnet_ids(Some(subnets.clone())).send().await.unwrap();
    assert_eq!(out.subnets().len(), 4);
    assert_eq!(ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap().vpcs().len(), 1);

    // A VPC that does not exist is a pre-flight user error, before any change.
    let missing = work.write("missing.yaml", &yaml.replace(&vpc, "vpc-0000000000000000f"));
    let run = aira(work.dir.path(), &["up", missing.to_str().unwrap(), "--endpoint-url", &endpoint()]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("vpc-0000000000000000f does not exist"), "{}", run.stderr);
}

/// The routes of an existing VPC decide what its tasks reach: no default route, or one to the
/// internet gateway (tasks have no public IP), leaves a model on the internet unreachable, named
/// with the route table and subnets; a NAT gateway's route carries it. An interface endpoint of
/// the VPC carries a service only when its security group lets the tasks in. Read back through
/// the plan's JSON, the EC2 state made here with the SDK.
#[tokio::test]
async fn an_existing_vpcs_routes_and_endpoints_decide_what_its_tasks_reach() {
    let ec2 = ec2();
    let (vpc, subnets) = vpc_with_subnets(&ec2, 78).await;
    let on = aws_sdk_ec2::types::AttributeBooleanValue::builder().value(true).build();
    ec2.modify_vpc_attribute().vpc_id(&vpc).enable_dns_hostnames(on).send().await.unwrap();
    let vpc_filter = Filter::builder().name("vpc-id").values(&vpc).build();
    let tables = ec2.describe_route_tables().filters(vpc_filter.clone()).send().await.unwrap();
    let main = tables.route_tables()[0].route_table_id().unwrap().to_string();
    // The VPC's own logs endpoint, behind a group that admits nothing yet.
    let group = ec2.create_security_group().vpc_id(&vpc).group_name("theirs").description("x").send().await.unwrap();
    let group = group.group_id().unwrap().to_string();
    let logs = ec2
        .create_vpc_endpoint()
        .vpc_id(&vpc)
        .service_name("com.amazonaws.us-east-1.logs")
        .vpc_endpoint_type(VpcEndpointType::Interface)
        .subnet_ids(&subnets[2])
        .security_group_ids(&group)
        .private_dns_enabled(true)
        .send()
        .await
        .unwrap();
    let logs = logs.vpc_endpoint().unwrap().vpc_endpoint_id().unwrap().to_string();

    let stack = unique_stack("exreach");
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  existing:\n    vpc_id: {vpc}\n    public_subnets: [{}, {}]\n    private_subnets: [{}, {}]\n  endpoints: [sqs, ecr.api, ecr.dkr, secretsmanager, s3, dynamodb]\nservices:\n  worker: {{ role: worker, cpu: 256, memory: 512 }}\nllm:\n  base_url: https://api.openai.com/v1\n  model: gpt-4o-mini\n",
        subnets[0], subnets[1], subnets[2], subnets[3]
    );
    let work = Workdir::new();
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    let url = endpoint();
    let args = ["plan", file, "--output", "json", "--endpoint-url", &url];
    let plan = || aira(work.dir.path(), &args);

    let refused = plan().await;
    refused.assert_code(1);
    let (a, b) = (&subnets[2], &subnets[3]);
    for expected in [
        format!("services.worker: cannot reach its model at api.openai.com: its private subnets have no route there; fix: a default route 0.0.0.0/0 to a NAT gateway in route table {main} (subnet {a}, {b}: no default route)"),
        format!("services.worker: cannot reach its logs (CloudWatch Logs) at logs.us-east-1.amazonaws.com: its private subnets have no route there; fix: let the security group(s) {group} of {logs}, the VPC's endpoint for it, accept TCP 443 from the private subnets (10.78.2.0/24, 10.78.3.0/24)"),
    ] {
        assert!(refused.stderr.contains(&expected), "expected {expected}\n in:\n{}", refused.stderr);
    }

    // A route to the internet gateway in subnet b's own table carries nothing for tasks
    // without a public IP; the endpoint's group now admits the VPC.
    let igw = ec2.create_internet_gateway().send().await.unwrap();
    let igw = igw.internet_gateway().unwrap().internet_gateway_id().unwrap().to_string();
    ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.unwrap();
    let own = ec2.create_route_table().vpc_id(&vpc).send().await.unwrap();
    let own = own.route_table().unwrap().route_table_id().unwrap().to_string();
    ec2.associate_route_table().route_table_id(&own).subnet_id(b).send().await.unwrap();
    ec2.create_route().route_table_id(&own).destination_cidr_block("0.0.0.0/0").gateway_id(&igw).send().await.unwrap();
    let https = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(IpRange::builder().cidr_ip("10.78.0.0/16").build())
        .build();
    ec2.authorize_security_group_ingress().group_id(&group).ip_permissions(https).send().await.unwrap();
    let refused = plan().await;
    refused.assert_code(1);
    // The tables in id order, each with its subnets and why.
    for expected in [
        "fix: a default route 0.0.0.0/0 to a NAT gateway in route table rtb-".to_string(),
        format!("route table {main} (subnet {a}: no default route)"),
        format!("route table {own} (subnet {b}: its default route goes to internet gateway {igw}, which carries nothing for tasks without a public IP)"),
    ] {
        assert!(refused.stderr.contains(&expected), "expected {expected}\n in:\n{}", refused.stderr);
    }
    assert!(!refused.stderr.contains("cannot reach its logs"), "{}", refused.stderr);

    // A NAT gateway in a public subnet, the default route of both tables: the model is reached.
    let address = ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.unwrap();
    let nat = ec2
        .create_nat_gateway()
        .subnet_id(&subnets[0])
        .allocation_id(address.allocation_id().unwrap())
        .send()
        .await
        .unwrap();
    let nat = nat.nat_gateway().unwrap().nat_gateway_id().unwrap().to_string();
    ec2.create_route()
        .route_table_id(&main)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat)
        .send()
        .await
        .unwrap();
    ec2.replace_route()
        .route_table_id(&own)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat)
        .send()
        .await
        .unwrap();
    let planned = plan().await;
    planned.assert_code(0);
    let routes = planned.json()["reachability"]["routes"].as_array().unwrap().clone();
    let path = |dependency: &str| {
        let route = routes.iter().find(|r| r["dependency"] == dependency).unwrap_or_else(|| panic!("{routes:?}"));
        route["path"].as_str().unwrap().to_string()
    };
    // One path a table, in text order.
    let mut paths =
        [format!("NAT gateway {nat} (default route in {main})"), format!("NAT gateway {nat} (default route in {own})")];
    paths.sort();
    assert_eq!(path("model"), paths.join("; "));
    assert_eq!(path("logs (CloudWatch Logs)"), format!("interface endpoint {logs} (private DNS)"));
    assert_eq!(path("queue (SQS)"), "interface endpoint `sqs` (private DNS)");
    assert!(inventory(&stack).await.is_empty(), "plan changed nothing");
}
