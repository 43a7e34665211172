//! The edge kinds (load balancer, target group, listeners, certificate, alias records) driven
//! through the `Provider` trait against moto, read back with the SDK; and the pre-flight's
//! delegation check with a DNS responder on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use aira::aws::{sdk_config, AwsProvider, Connection};
use aira::engine::graph::{Kind, LogicalId};
use aira::engine::provider::{Observed, Provider, Resolved, Scope, Silent};
use aws_sdk_elasticloadbalancingv2::types::{ActionTypeEnum, RedirectActionStatusCodeEnum, TargetTypeEnum};
use aws_sdk_route53::types::RrType;
use serde_json::{json, Value};

use crate::harness::{aira_env, ec2, endpoint, unique_stack, Workdir};

fn elb() -> aws_sdk_elasticloadbalancingv2::Client {
    aws_sdk_elasticloadbalancingv2::Client::new(&crate::harness::sdk_config())
}

fn r53() -> aws_sdk_route53::Client {
    aws_sdk_route53::Client::new(&crate::harness::sdk_config())
}

fn acm() -> aws_sdk_acm::Client {
    aws_sdk_acm::Client::new(&crate::harness::sdk_config())
}

async fn provider() -> AwsProvider {
    let conn = Connection { region: Some("us-east-1".into()), profile: None, endpoint_url: Some(endpoint()) };
    AwsProvider::new(&sdk_config(&conn).await)
}

fn scope(stack: &str) -> Scope {
    Scope::new(stack, BTreeMap::new(), Duration::from_secs(120))
}

fn res(id: &str, kind: Kind, props: Value) -> Resolved {
    Resolved { id: LogicalId::from(id), kind, props }
}

/// A public hosted zone of its own; (id without prefix, name without trailing dot).
async fn hosted_zone(name: &str) -> String {
    let out = r53().create_hosted_zone().name(name).caller_reference(name).send().await.unwrap();
    out.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string()
}

async fn name_servers(zone: &str) -> Vec<String> {
    let out = r53().get_hosted_zone().id(zone).send().await.unwrap();
    out.delegation_set().unwrap().name_servers().to_vec()
}

/// The zone's record sets other than its own NS and SOA: (name, type).
async fn records(zone: &str) -> Vec<(String, String)> {
    let out = r53().list_resource_record_sets().hosted_zone_id(zone).send().await.unwrap();
    out.resource_record_sets()
        .iter()
        .filter(|s| !matches!(s.r#type(), RrType::Ns | RrType::Soa))
        .map(|s| (s.name().to_string(), s.r#type().as_str().to_string()))
        .collect()
}

/// The observed resource of one logical id; exactly one must exist.
fn one<'a>(all: &'a [Observed], id: &str) -> &'a Observed {
    let found: Vec<&Observed> = all.iter().filter(|o| o.id.0 == id).collect();
    assert_eq!(found.len(), 1, "one `{id}` expected, observed: {all:#?}");
    found[0]
}

/// Records what operations say they wait for.
#[derive(Default)]
struct Said(std::sync::Mutex<Vec<String>>);

impl aira::engine::provider::Progress for Said {
    fn waiting(&self, id: &LogicalId, what: &str) {
        self.0.lock().unwrap().push(format!("{id}: {what}"));
    }
}

struct Network {
    vpc: String,
    subnets: Vec<String>,
    groups: Vec<String>,
}

async fn network() -> Network {
    let ec2 = ec2();
    let vpc = ec2.create_vpc().cidr_block("10.77.0.0/16").send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c"].iter().enumerate() {
        let sn = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.77.{i}.0/24"))
            .availability_zone(*zone)
            .send()
            .await
            .unwrap();
        subnets.push(sn.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let mut groups = Vec::new();
    for name in ["edge-lb-a", "edge-lb-b"] {
        let g = ec2.create_security_group().vpc_id(&vpc).group_name(name).description(name).send().await.unwrap();
        groups.push(g.group_id().unwrap().to_string());
    }
    Network { vpc, subnets, groups }
}

/// What `expand` asks for the public service `api` of a stack with a domain, references resolved
/// with the outputs `created` holds.
fn target_group(stack: &str, net: &Network, path: &str, delay: u64) -> Resolved {
    res(
        "tg-api",
        Kind::TargetGroup,
        json!({
            "name": format!("{stack}-api"),
            "protocol": "HTTP",
            "port": 8080,
            "target_type": "ip",
            "vpc": net.vpc,
            "health_check": { "path": path, "interval": 10, "timeout": 5, "healthy": 2, "unhealthy": 3, "matcher": "200" },
            "deregistration_delay": delay,
        }),
    )
}

fn load_balancer(stack: &str, subnets: &[String], group: &str, zone: &str) -> Resolved {
    res(
        "lb",
        Kind::LoadBalancer,
        json!({
            "name": stack, "scheme": "internet-facing", "ip_address_type": "ipv4", "subnets": subnets, "security_groups": [group], "dns_zone": zone,
        }),
    )
}

fn out(o: &Observed, key: &str) -> String {
    o.outputs[key].as_str().unwrap_or_else(|| panic!("output {key} of {}: {:?}", o.id, o.outputs)).to_string()
}

/// Sorted lists of the load balancer's set-valued properties, as the plan compares them.
fn normal(mut v: Value) -> Value {
    for key in ["subnets", "security_groups"] {
        if let Some(a) = v.get_mut(key).and_then(Value::as_array_mut) {
            a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
        }
    }
    v
}

#[tokio::test]
async fn edge_kinds_create_observe_update_delete() {
    let stack = unique_stack("edge");
    let zone_name = format!("{stack}.example.com");
    let domain = format!("chat.{zone_name}");
    let zone = hosted_zone(&zone_name).await;
    let net = network().await;
    let p = provider().await;
    let scope = scope(&stack);
    let quiet = Silent;

    // Create, in the graph's order.
    let cert = res(
        "certificate",
        Kind::Certificate,
        json!({ "domain": domain, "wildcard": true, "validation": "DNS", "zone_id": zone }),
    );
    let said = Said::default();
    let cert_o = p.create(&scope, &cert, &said).await.unwrap();
    // moto issues after MOTO_ACM_VALIDATION_WAIT=2 seconds: the wait said what it waits for.
    let said = said.0.lock().unwrap().join("\n");
    assert!(said.contains(&format!("ACM validating {domain}: CNAME _")), "{said}");
    assert!(said.contains(&format!("acm-validations.aws. written in zone {zone}")), "{said}");
    assert_eq!(cert_o.props, cert.props);
    assert_eq!(cert_o.outputs["status"], "ISSUED");
    // It covers the previews' names too, validated through the one record of the domain.
    let detail = acm().describe_certificate().certificate_arn(out(&cert_o, "arn")).send().await.unwrap();
    let mut names = detail.certificate().unwrap().subject_alternative_names().to_vec();
    names.sort();
    assert_eq!(names, vec![format!("*.{domain}"), domain.clone()]);
    let cnames = records(&zone).await.into_iter().filter(|(_, ty)| ty == "CNAME").count();
    assert_eq!(cnames, 1, "{:?}", records(&zone).await);
    let tg = target_group(&stack, &net, "/healthz", 15);
    let tg_o = p.create(&scope, &tg, &quiet).await.unwrap();
    let lb = load_balancer(&stack, &net.subnets[..2], &net.groups[0], &zone);
    let lb_o = p.create(&scope, &lb, &quiet).await.unwrap();
    let http = res(
        "listener-http",
        Kind::Listener,
        json!({
            "load_balancer": out(&lb_o, "arn"), "port": 80, "protocol": "HTTP",
            "default_action": { "type": "redirect", "protocol": "HTTPS", "port": "443", "status": "HTTP_301" },
        }),
    );
    let https = res(
        "listener-https",
        Kind::Listener,
        json!({
            "load_balancer": out(&lb_o, "arn"), "port": 443, "protocol": "HTTPS",
            "ssl_policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "certificate": out(&cert_o, "arn"),
            "default_action": { "type": "forward", "target_group": out(&tg_o, "arn") },
        }),
    );
    let http_o = p.create(&scope, &http, &quiet).await.unwrap();
    let https_o = p.create(&scope, &https, &quiet).await.unwrap();
    assert_eq!((&http_o.props, &https_o.props), (&http.props, &https.props), "read back after the create");
    let record = |id: &str, ty: &str| {
        res(
            id,
            Kind::DnsRecord,
            json!({
                "zone_id": zone, "name": format!("{domain}."), "type": ty,
                "alias": { "dns_name": out(&lb_o, "dns_name"), "zone_id": out(&lb_o, "zone_id") },
            }),
        )
    };
    let (a, aaaa) = (record("dns-a", "A"), record("dns-aaaa", "AAAA"));
    p.create(&scope, &a, &quiet).await.unwrap();
    p.create(&scope, &aaaa, &quiet).await.unwrap();

    // Outputs other resources and CloudWatch need.
    assert!(out(&lb_o, "arn_suffix").starts_with(&format!("app/{stack}/")), "{:?}", lb_o.outputs);
    assert!(out(&tg_o, "arn_suffix").starts_with(&format!("targetgroup/{stack}-api/")), "{:?}", tg_o.outputs);
    assert!(!out(&lb_o, "zone_id").is_empty());

    // What AWS holds.
    let elb = elb();
    let listeners = elb.describe_listeners().load_balancer_arn(out(&lb_o, "arn")).send().await.unwrap();
    let by_port = |port: i32| listeners.listeners().iter().find(|l| l.port() == Some(port)).unwrap().clone();
    let l80 = by_port(80);
    let redirect = l80.default_actions()[0].redirect_config().unwrap();
    assert_eq!(l80.default_actions()[0].r#type(), Some(&ActionTypeEnum::Redirect));
    assert_eq!(redirect.protocol(), Some("HTTPS"));
    assert_eq!(redirect.status_code(), Some(&RedirectActionStatusCodeEnum::Http301));
    let l443 = by_port(443);
    assert_eq!(l443.ssl_policy(), Some("ELBSecurityPolicy-TLS13-1-2-2021-06"));
    assert_eq!(l443.certificates()[0].certificate_arn(), Some(out(&cert_o, "arn").as_str()));
    let tgs = elb.describe_target_groups().target_group_arns(out(&tg_o, "arn")).send().await.unwrap();
    assert_eq!(tgs.target_groups()[0].target_type(), Some(&TargetTypeEnum::Ip));
    assert_eq!(tgs.target_groups()[0].health_check_path(), Some("/healthz"));
    let mut held = records(&zone).await;
    held.sort();
    let validation: Vec<_> = held.iter().filter(|(_, t)| t == "CNAME").collect();
    assert_eq!(validation.len(), 1, "one validation CNAME expected in the zone: {held:?}");
    assert!(held.contains(&(format!("{domain}."), "A".into())), "{held:?}");
    assert!(held.contains(&(format!("{domain}."), "AAAA".into())), "{held:?}");

    // Observe equals the desired properties: no change planned right after the creation.
    let all = p.observe(&scope).await.unwrap();
    assert_eq!(normal(one(&all, "lb").props.clone()), normal(lb.props.clone()));
    assert_eq!(one(&all, "tg-api").props, tg.props);
    assert_eq!(one(&all, "listener-http").props, http.props);
    assert_eq!(one(&all, "listener-https").props, https.props);
    assert_eq!(one(&all, "certificate").props, cert.props);
    assert_eq!(one(&all, "dns-a").props, a.props);
    assert_eq!(one(&all, "dns-aaaa").props, aaaa.props);
    assert!(one(&all, "dns-a").depends_on.contains(&LogicalId::from("lb")));
    assert!(one(&all, "listener-https").depends_on.contains(&LogicalId::from("certificate")));
    assert!(one(&all, "listener-https").depends_on.contains(&LogicalId::from("tg-api")));

    // Update in place: health check and delay, subnets and security group, listener port.
    let tg2 = target_group(&stack, &net, "/ready", 30);
    let tg2_o = p.update(&scope, &tg2, one(&all, "tg-api"), &quiet).await.unwrap();
    assert_eq!(tg2_o.props, tg2.props);
    assert_eq!(tg2_o.physical_id, tg_o.physical_id);
    let lb2 = load_balancer(&stack, &net.subnets[1..], &net.groups[1], &zone);
    let lb2_o = p.update(&scope, &lb2, one(&all, "lb"), &quiet).await.unwrap();
    assert_eq!(normal(lb2_o.props.clone()), normal(lb2.props.clone()));
    let mut http2 = http.clone();
    http2.props["port"] = json!(8080);
    p.update(&scope, &http2, one(&all, "listener-http"), &quiet).await.unwrap();
    let all = p.observe(&scope).await.unwrap();
    assert_eq!(one(&all, "tg-api").props, tg2.props);
    assert_eq!(normal(one(&all, "lb").props.clone()), normal(lb2.props.clone()));
    assert_eq!(one(&all, "listener-http").props, http2.props);
    let tgs = elb.describe_target_groups().target_group_arns(out(&tg_o, "arn")).send().await.unwrap();
    assert_eq!(tgs.target_groups()[0].health_check_path(), Some("/ready"));
    let attrs = elb.describe_target_group_attributes().target_group_arn(out(&tg_o, "arn")).send().await.unwrap();
    let delay = attrs.attributes().iter().find(|a| a.key() == Some("deregistration_delay.timeout_seconds"));
    assert_eq!(delay.and_then(|a| a.value()), Some("30"));

    // Delete dependents first, as the engine does; then nothing of the stack is left.
    for id in ["dns-a", "dns-aaaa", "listener-http", "listener-https", "certificate", "tg-api", "lb"] {
        p.delete(&scope, one(&all, id), &quiet).await.unwrap();
    }
    // Deleting again is success.
    p.delete(&scope, one(&all, "dns-a"), &quiet).await.unwrap();
    p.delete(&scope, one(&all, "lb"), &quiet).await.unwrap();
    assert_eq!(p.observe(&scope).await.unwrap().iter().filter(|o| o.kind != Kind::SqsQueue).count(), 0);
    assert_eq!(records(&zone).await, Vec::<(String, String)>::new(), "validation and alias records are gone");
    assert!(r53().get_hosted_zone().id(&zone).send().await.is_ok(), "the hosted zone stays");
    let lbs = elb.describe_load_balancers().names(&stack).send().await;
    assert!(lbs.map(|o| o.load_balancers().is_empty()).unwrap_or(true));
    let certs = acm().describe_certificate().certificate_arn(out(&cert_o, "arn")).send().await;
    assert!(certs.is_err(), "the certificate is deleted");
}

/// `down` without the stack file finds the alias records through the load balancer's tag.
#[tokio::test]
async fn edge_records_found_through_the_load_balancer_tag() {
    let stack = unique_stack("edge-rec");
    let zone_name = format!("{stack}.example.com");
    let zone = hosted_zone(&zone_name).await;
    let net = network().await;
    let p = provider().await;
    let scope = scope(&stack);
    let lb = p.create(&scope, &load_balancer(&stack, &net.subnets[..2], &net.groups[0], &zone), &Silent).await.unwrap();
    // Another alias in the same zone, to another target: not ours.
    let foreign = res(
        "dns-a",
        Kind::DnsRecord,
        json!({ "zone_id": zone, "name": format!("other.{zone_name}."), "type": "A",
                "alias": { "dns_name": "other-123.us-east-1.elb.amazonaws.com", "zone_id": "Z35SXDOTRQ7X7K" } }),
    );
    p.create(&scope, &foreign, &Silent).await.unwrap();
    // Route 53 keeps the `dualstack.` form AWS consoles write.
    let ours = res(
        "dns-aaaa",
        Kind::DnsRecord,
        json!({ "zone_id": zone, "name": format!("www.{zone_name}."), "type": "AAAA",
                "alias": { "dns_name": format!("dualstack.{}", out(&lb, "dns_name").to_uppercase()), "zone_id": out(&lb, "zone_id") } }),
    );
    p.create(&scope, &ours, &Silent).await.unwrap();
    let all = p.observe(&scope).await.unwrap();
    let recs: Vec<&Observed> = all.iter().filter(|o| o.kind == Kind::DnsRecord).collect();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].props["name"], json!(format!("www.{zone_name}.")));
    assert_eq!(recs[0].props["alias"]["dns_name"], json!(out(&lb, "dns_name")), "reported in the desired form");
    // Deleting with the observed values removes the record as stored (dualstack form).
    p.delete(&scope, recs[0], &Silent).await.unwrap();
    let left = records(&zone).await;
    assert_eq!(left, vec![(format!("other.{zone_name}."), "A".to_string())]);
    p.delete(&scope, &lb, &Silent).await.unwrap();
}

// ---- pre-flight: the zone's delegation ---------------------------------------------------------

/// A DNS responder on loopback answering every NS question with `ns` (NXDOMAIN if empty).
async fn dns_responder(ns: Vec<String>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::{rdata::NS, Name, RData, Record, RecordType};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(q.op_code())
                .set_recursion_desired(q.recursion_desired())
                .set_recursion_available(true)
                .add_queries(q.queries().to_vec());
            if ns.is_empty() {
                r.set_response_code(ResponseCode::NXDomain);
            }
            for query in q.queries().iter().filter(|q| q.query_type() == RecordType::NS) {
                for n in &ns {
                    let rdata = RData::NS(NS(Name::from_ascii(n).unwrap()));
                    r.add_answer(Record::from_rdata(query.name().clone(), 300, rdata));
                }
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    (addr, task)
}

fn domain_stack(stack: &str, zone: &str) -> String {
    format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\ndomain:\n  zone: {zone}\n  name: chat.{zone}\n\
         services:\n  api: {{ role: api, cpu: 256, memory: 512, count: 1, port: 8080, public: true }}\n"
    )
}

/// An image in the account's ECR, which the tasks reach through the stack's endpoints.
const IMAGE: &str = "000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test]
async fn edge_preflight_refuses_an_undelegated_zone() {
    let stack = unique_stack("edge-ns");
    let zone_name = format!("{stack}.example.com");
    let zone = hosted_zone(&zone_name).await;
    let expected = name_servers(&zone).await;
    let (dns, _task) = dns_responder(vec!["ns1.registrar-parking.example.".into()]).await;
    let dns = dns.to_string();
    let wd = Workdir::new();
    wd.write("aira.yaml", &domain_stack(&stack, &zone_name));
    let env = [("AIRA_DNS_RESOLVER", dns.as_str())];

    let plan =
        aira_env(wd.dir.path(), &["plan", "aira.yaml", "--image", IMAGE, "--endpoint-url", &endpoint()], &env).await;
    plan.assert_code(1);
    assert!(plan.stderr.contains(&zone_name), "{}", plan.stderr);
    assert!(plan.stderr.contains("ns1.registrar-parking.example"), "{}", plan.stderr);
    for ns in &expected {
        assert!(plan.stderr.contains(ns.trim_end_matches('.')), "{ns} missing:\n{}", plan.stderr);
    }
    let up =
        aira_env(wd.dir.path(), &["up", "aira.yaml", "--yes", "--image", IMAGE, "--endpoint-url", &endpoint()], &env)
            .await;
    up.assert_code(1);
    assert!(up.stderr.contains("registrar"), "{}", up.stderr);
    assert!(crate::harness::inventory(&stack).await.is_empty(), "nothing was created");
}

/// A missing secret and a zone that public DNS does not delegate: one run of `up` reports both,
/// before it builds anything (no `--image`: the runtime's image is aira's to build) and before it
/// changes anything.
#[tokio::test]
async fn preflight_reports_every_finding_at_once_before_any_build() {
    let stack = unique_stack("edge-all");
    let zone_name = format!("{stack}.example.com");
    hosted_zone(&zone_name).await;
    let (dns, _task) = dns_responder(vec!["ns1.registrar-parking.example.".into()]).await;
    let dns = dns.to_string();
    let wd = Workdir::new();
    let llm =
        format!("llm:\n  base_url: https://llm.invalid/v1\n  model: m\n  api_key: {{ secret: {stack}/absent }}\n");
    let file = domain_stack(&stack, &zone_name).replace("endpoints: [", "nat: true\n  endpoints: [") + &llm;
    wd.write("aira.yaml", &file);
    let env = [("AIRA_DNS_RESOLVER", dns.as_str())];
    for verb in ["plan", "up"] {
        let run = aira_env(wd.dir.path(), &[verb, "aira.yaml", "--yes", "--endpoint-url", &endpoint()], &env).await;
        run.assert_code(1);
        assert!(run.stderr.contains(&format!("the secret `{stack}/absent` does not exist")), "{verb}: {}", run.stderr);
        assert!(run.stderr.contains("public DNS does not delegate"), "{verb}: {}", run.stderr);
        assert!(!run.stderr.contains("building aira-runtime"), "{verb} built the image: {}", run.stderr);
        assert!(!wd.dir.path().join(".aira").exists(), "{verb} built the image");
    }
    assert!(crate::harness::inventory(&stack).await.is_empty(), "nothing was created");
}

#[tokio::test]
async fn edge_preflight_passes_a_delegated_zone() {
    let stack = unique_stack("edge-ok");
    let zone_name = format!("{stack}.example.com");
    let zone = hosted_zone(&zone_name).await;
    // Public DNS answers in its own case and with trailing dots.
    let ns = name_servers(&zone).await.iter().map(|n| format!("{}.", n.trim_end_matches('.').to_uppercase())).collect();
    let (dns, _task) = dns_responder(ns).await;
    let dns = dns.to_string();
    let wd = Workdir::new();
    wd.write("aira.yaml", &domain_stack(&stack, &zone_name));
    let plan = aira_env(
        wd.dir.path(),
        &["plan", "aira.yaml", "--image", IMAGE, "--endpoint-url", &endpoint()],
        &[("AIRA_DNS_RESOLVER", dns.as_str())],
    )
    .await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("certificate"), "{}", plan.stdout);
    assert!(!plan.stderr.contains("could not check"), "{}", plan.stderr);
}

#[tokio::test]
async fn edge_preflight_goes_on_without_dns() {
    let stack = unique_stack("edge-nodns");
    let zone_name = format!("{stack}.example.com");
    hosted_zone(&zone_name).await;
    let wd = Workdir::new();
    wd.write("aira.yaml", &domain_stack(&stack, &zone_name));
    // The harness's default resolver: a loopback port where nothing answers.
    let plan =
        aira_env(wd.dir.path(), &["plan", "aira.yaml", "--image", IMAGE, "--endpoint-url", &endpoint()], &[]).await;
    plan.assert_code(0);
    assert!(plan.stderr.contains("could not check that public DNS delegates"), "{}", plan.stderr);
    assert!(plan.stdout.contains("certificate"), "{}", plan.stdout);
}

/// ACM gives two certificates of one domain the same validation record: deleting one keeps it.
#[tokio::test]
async fn edge_certificate_delete_keeps_a_shared_validation_record() {
    let stack = unique_stack("edge-cert");
    let zone_name = format!("{stack}.example.com");
    let zone = hosted_zone(&zone_name).await;
    let p = provider().await;
    let cert = res(
        "certificate",
        Kind::Certificate,
        json!({ "domain": format!("chat.{zone_name}"), "validation": "DNS", "zone_id": zone }),
    );
    let first = p.create(&scope(&stack), &cert, &Silent).await.unwrap();
    let second = p.create(&scope(&format!("{stack}-preview")), &cert, &Silent).await.unwrap();
    assert_ne!(first.physical_id, second.physical_id);
    let cnames = || async { records(&zone).await.into_iter().filter(|(_, t)| t == "CNAME").count() };
    assert_eq!(cnames().await, 1);
    // Each stack sees its own certificate only.
    let seen = p.observe(&scope(&stack)).await.unwrap();
    let seen: Vec<_> = seen.iter().filter(|o| o.kind == Kind::Certificate).map(|o| &o.physical_id).collect();
    assert_eq!(seen, vec![&first.physical_id]);
    p.delete(&scope(&stack), &first, &Silent).await.unwrap();
    assert_eq!(cnames().await, 1, "the other certificate still needs it");
    p.delete(&scope(&format!("{stack}-preview")), &second, &Silent).await.unwrap();
    assert_eq!(cnames().await, 0);
}

/// A rerun does not adopt a certificate that is not ISSUED (the proxy reports its status as ACM
/// would; moto issues every certificate on a timer): one left PENDING_VALIDATION by a run that
/// stopped before writing its validation record has its validation completed; a FAILED one is
/// replaced, the HTTPS listener moved to the new one, the old one deleted.
#[tokio::test]
async fn edge_rerun_completes_a_pending_certificate_and_replaces_a_failed_one() {
    use crate::proxy::{Faults, Proxy};
    let stack = unique_stack("edge-rep");
    let zone_name = format!("{stack}.example.com");
    let zone = hosted_zone(&zone_name).await;
    let wd = Workdir::new();
    wd.write("aira.yaml", &domain_stack(&stack, &zone_name));
    let rewrite = crate::rewrite::Rewrites::default();
    let proxy = Proxy::start(&endpoint(), Faults { rewrite: rewrite.clone(), ..Faults::default() }).await;
    let run = |args: &[&str]| {
        let args: Vec<String> =
            [args, &["--endpoint-url", &proxy.url]].concat().iter().map(|a| a.to_string()).collect();
        let dir = wd.dir.path().to_path_buf();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            aira_env(&dir, &args, &[]).await
        }
    };
    // The HTTPS listener's certificate, read with the ELBv2 SDK.
    let listener_certificate = || async {
        let elb = elb();
        let lbs = elb.describe_load_balancers().names(&stack).send().await.unwrap();
        let lb = lbs.load_balancers()[0].load_balancer_arn().unwrap().to_string();
        let ls = elb.describe_listeners().load_balancer_arn(lb).send().await.unwrap();
        let https = ls.listeners().iter().find(|l| l.port() == Some(443)).expect("an HTTPS listener");
        https.certificates()[0].certificate_arn().unwrap().to_string()
    };
    let cnames = || async {
        let out = r53().list_resource_record_sets().hosted_zone_id(&zone).send().await.unwrap();
        out.resource_record_sets().iter().filter(|s| s.r#type() == &RrType::Cname).cloned().collect::<Vec<_>>()
    };
    run(&["up", "aira.yaml", "--yes", "--image", IMAGE]).await.assert_code(0);
    let first = listener_certificate().await;

    // A run stopped during validation: the certificate is PENDING_VALIDATION, its record not written.
    rewrite.certificate_status(&first, "PENDING_VALIDATION");
    // moto lists a CNAME with no value, and Route 53 deletes a record only given its value: the
    // value is ACM's, read from the certificate.
    let issued = acm().describe_certificate().certificate_arn(&first).send().await.unwrap();
    let validation = &issued.certificate().unwrap().domain_validation_options()[0];
    let value = validation.resource_record().unwrap().value().to_string();
    for mut set in cnames().await {
        set.resource_records =
            Some(vec![aws_sdk_route53::types::ResourceRecord::builder().value(&value).build().unwrap()]);
        let change = aws_sdk_route53::types::Change::builder()
            .action(aws_sdk_route53::types::ChangeAction::Delete)
            .resource_record_set(set)
            .build()
            .unwrap();
        let batch = aws_sdk_route53::types::ChangeBatch::builder().changes(change).build().unwrap();
        r53().change_resource_record_sets().hosted_zone_id(&zone).change_batch(batch).send().await.unwrap();
    }
    let plan = run(&["plan", "aira.yaml", "--detailed-exitcode", "--image", IMAGE]).await;
    plan.assert_code(2);
    assert!(
        plan.stdout.contains(
            "certificate PENDING_VALIDATION: complete validation (write its validation CNAME again, wait until ISSUED)"
        ),
        "{}",
        plan.stdout
    );
    let up = run(&["up", "aira.yaml", "--yes", "--image", IMAGE]).await;
    up.assert_code(0);
    assert!(up.stderr.contains("updated acm.certificate certificate"), "{}", up.stderr);
    assert_eq!(cnames().await.len(), 1, "the validation record is written again");
    assert_eq!(listener_certificate().await, first, "the certificate is kept once issued");
    run(&["plan", "aira.yaml", "--detailed-exitcode", "--image", IMAGE]).await.assert_code(0);

    // A certificate that failed is replaced: the listener moves to a new one, the old one goes.
    rewrite.certificate_status(&first, "FAILED");
    let plan = run(&["plan", "aira.yaml", "--detailed-exitcode", "--image", IMAGE]).await;
    plan.assert_code(2);
    assert!(plan.stdout.contains("certificate FAILED: request a new one"), "{}", plan.stdout);
    run(&["up", "aira.yaml", "--yes", "--image", IMAGE]).await.assert_code(0);
    let second = listener_certificate().await;
    assert_ne!(second, first, "the listener is on a new certificate");
    let issued = acm().describe_certificate().certificate_arn(&second).send().await.unwrap();
    assert_eq!(issued.certificate().unwrap().status(), Some(&aws_sdk_acm::types::CertificateStatus::Issued));
    assert!(acm().describe_certificate().certificate_arn(&first).send().await.is_err(), "the failed one is deleted");
    run(&["plan", "aira.yaml", "--detailed-exitcode", "--image", IMAGE]).await.assert_code(0);

    run(&["down", "aira.yaml", "--yes"]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}
