//! `network.nat: instance` against moto, read back with the EC2 SDK: what aira launched and how,
//! the route through the instance's interface, its replacement when it stops or is terminated,
//! a run killed right after the launch, and `down`.

use aws_sdk_ec2::types::{Filter, Instance};
use base64::Engine;

use crate::harness::{aira, ec2, endpoint, inventory, spawn_aira, unique_stack, Workdir};
use crate::proxy::{Faults, Proxy};

fn tagged(stack: &str, key: &str, value: &str) -> [Filter; 2] {
    [
        Filter::builder().name("tag:aira:stack").values(stack).build(),
        Filter::builder().name(format!("tag:{key}")).values(value).build(),
    ]
}

/// The stack's instances that are not terminated, read through the SDK.
async fn live_instances(stack: &str) -> Vec<Instance> {
    let [f, _] = tagged(stack, "aira:id", "nat-a");
    let out = ec2().describe_instances().filters(f).send().await.unwrap();
    let all = out.reservations().iter().flat_map(|r| r.instances().iter().cloned());
    all.filter(|i| {
        !matches!(i.state().and_then(|s| s.name()).map(|n| n.as_str()), Some("terminated" | "shutting-down"))
    })
    .collect()
}

/// The id of the stack's security group `id`, read through the SDK.
async fn group_id(stack: &str, id: &str) -> String {
    let out = ec2().describe_security_groups().set_filters(Some(tagged(stack, "aira:id", id).to_vec())).send().await;
    out.unwrap().security_groups()[0].group_id().unwrap().to_string()
}

/// Checks, through the SDK, that the one live NAT instance is set up and routed: its type, subnet,
/// group, source/destination check, address and the private table's default route to its
/// interface. Returns its id.
async fn assert_routed(stack: &str) -> String {
    let ec2 = ec2();
    let live = live_instances(stack).await;
    assert_eq!(live.len(), 1, "one NAT instance: {live:#?}");
    let i = &live[0];
    let id = i.instance_id().unwrap().to_string();
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t4g.nano"));
    assert_eq!(i.source_dest_check(), Some(false), "source/destination check off");
    let public = ec2.describe_subnets().set_filters(Some(tagged(stack, "aira:id", "public-a").to_vec())).send().await;
    assert_eq!(i.subnet_id(), public.unwrap().subnets()[0].subnet_id(), "in the first zone's public subnet");
    // Its groups are its interface's (moto leaves the instance's own list empty when the
    // groups come with the interface; AWS lists them both places).
    let eni = i.network_interfaces()[0].network_interface_id().unwrap();
    let interface = ec2.describe_network_interfaces().network_interface_ids(eni).send().await.unwrap();
    let groups: Vec<&str> = interface.network_interfaces()[0].groups().iter().filter_map(|g| g.group_id()).collect();
    assert_eq!(groups, [group_id(stack, "nat-sg").await.as_str()]);
    let eip = ec2.describe_addresses().set_filters(Some(tagged(stack, "aira:id", "nat-ip-a").to_vec())).send().await;
    assert_eq!(eip.unwrap().addresses()[0].instance_id(), Some(id.as_str()), "the Elastic IP is on it");
    let tables = ec2.describe_route_tables().set_filters(Some(tagged(stack, "aira:id", "private-routes").to_vec()));
    let tables = tables.send().await.unwrap();
    let default = tables.route_tables()[0].routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
    assert_eq!(default.and_then(|r| r.network_interface_id()), Some(eni), "{default:?}");
    id
}

#[tokio::test]
async fn a_nat_instance_routes_the_private_subnets_and_is_replaced_when_it_stops_or_goes() {
    let stack = unique_stack("natinst");
    let work = Workdir::new();
    let yaml = format!("stack: {stack}\nregion: us-east-1\nnetwork:\n  nat: instance\n  endpoints: [s3]\n");
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();

    // The plan prices it: the instance with its volume, and its address.
    let plan = aira(work.dir.path(), &["plan", file, "--output", "json", "--endpoint-url", &endpoint()]).await;
    let lines = plan.json()["cost"]["lines"].clone();
    let line = |id: &str| lines.as_array().unwrap().iter().find(|l| l["id"] == id).cloned().unwrap_or_default();
    assert_eq!(line("nat-a")["monthly"], 3.71, "{lines}");
    assert_eq!(line("nat-ip-a")["monthly"], 3.65, "{lines}");

    // Through a proxy of its own, to read what aira sent; it shows the new instance `pending`
    // for a while and refuses to associate an address with it meanwhile, as AWS does.
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let up = aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await;
    up.assert_code(0);
    assert!(up.stderr.contains("pending, waiting until running"), "{}", up.stderr);
    let sent = proxy.take_requests();
    let launch: Vec<_> = sent.iter().filter(|r| r.call == "ec2:RunInstances").collect();
    assert_eq!(launch.len(), 1, "one launch");
    for param in [
        "ImageId=resolve%3Assm%3A%2Faws%2Fservice%2Fami-amazon-linux-latest%2Fal2023-ami-kernel-default-arm64",
        "InstanceType=t4g.nano",
        "MetadataOptions.HttpTokens=required",
        "CreditSpecification.CpuCredits=standard",
        "NetworkInterface.1.AssociatePublicIpAddress=true",
        "ClientToken=",
    ] {
        assert!(launch[0].body.contains(param), "RunInstances lacks {param}: {}", launch[0].body);
    }
    let associations: Vec<_> = sent.iter().filter(|r| r.call == "ec2:AssociateAddress").collect();
    assert!(associations.iter().all(|r| r.status == 200), "associated only once running: {associations:?}");
    let first = assert_routed(&stack).await;

    // Its first boot sets it up as a NAT: forwarding on, the traffic masqueraded.
    let attr = ec2()
        .describe_instance_attribute()
        .instance_id(&first)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let data = attr.user_data().and_then(|d| d.value()).unwrap();
    let script = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
    for line in ["dnf install -y iptables-services", "net.ipv4.ip_forward=1", "-j MASQUERADE", "service iptables save"]
    {
        assert!(script.contains(line), "{script}");
    }
    // Its group lets in the services and nothing else.
    let g = ec2().describe_security_groups().group_ids(group_id(&stack, "nat-sg").await).send().await.unwrap();
    let rules = g.security_groups()[0].ip_permissions();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].ip_protocol(), Some("-1"));
    assert!(rules[0].ip_ranges().is_empty());
    let from = rules[0].user_id_group_pairs().iter().filter_map(|p| p.group_id()).collect::<Vec<_>>();
    assert_eq!(from, [group_id(&stack, "services-sg").await.as_str()]);
    aira(work.dir.path(), &["plan", file, "--detailed-exitcode", "--endpoint-url", &endpoint()]).await.assert_code(0);

    // Stopped (a failed host, or by hand): the plan says so and the next `up` replaces it; the
    // address and the route move to the new one, and the old one is terminated.
    ec2().stop_instances().instance_ids(&first).send().await.unwrap();
    let plan = aira(work.dir.path(), &["plan", file, "--endpoint-url", &endpoint()]).await;
    plan.assert_code(0);
    assert!(plan.stdout.contains(&format!("NAT instance {first} is stopped")), "{}", plan.stdout);
    aira(work.dir.path(), &["up", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    let second = assert_routed(&stack).await;
    assert_ne!(second, first, "a new instance");

    // Terminated out of band: the next `up` launches another.
    ec2().terminate_instances().instance_ids(&second).send().await.unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let third = assert_routed(&stack).await;
    assert!(![&first, &second].contains(&&third));
    aira(work.dir.path(), &["plan", file, "--detailed-exitcode", "--endpoint-url", &endpoint()]).await.assert_code(0);

    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    assert!(live_instances(&stack).await.is_empty());
    assert!(inventory(&stack).await.is_empty(), "{:?}", inventory(&stack).await);
}

/// `aira up` killed right after EC2 launched the instance, before its answer arrived (so before
/// the source/destination check and the address): the next run adopts that instance by its
/// tags, finishes it, and launches no second one.
#[tokio::test]
async fn a_run_killed_after_the_launch_converges_on_the_one_instance() {
    let stack = unique_stack("natkill");
    let work = Workdir::new();
    let yaml = format!("stack: {stack}\nregion: us-east-1\nnetwork:\n  nat: instance\n  endpoints: [s3]\n");
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    let proxy = Proxy::start(&endpoint(), Faults { hang_on: Some("RunInstances"), ..Faults::default() }).await;
    let mut child = spawn_aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]);
    tokio::select! {
        _ = proxy.hung.notified() => {}
        status = child.wait() => panic!("aira up ended ({status:?}) before launching"),
    }
    child.kill().await.unwrap();
    let launched = live_instances(&stack).await;
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].source_dest_check(), Some(true), "killed before the check was turned off");
    let rerun = aira(work.dir.path(), &["up", file, "--force-unlock", "--endpoint-url", &endpoint()]).await;
    rerun.assert_code(0);
    let id = assert_routed(&stack).await;
    assert_eq!(Some(id.as_str()), launched[0].instance_id(), "the instance the killed run launched, finished");
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    assert!(inventory(&stack).await.is_empty(), "{:?}", inventory(&stack).await);
}
