//! What AWS holds of a stack, read through the SDK the way a user's audit would, written apart
//! from the provider (no `aira::aws` here): every kind aira manages is listed in the region, and
//! kept when it carries the tag `aira:stack=<stack>`; what AWS cannot tag (Route 53 records, SNS
//! subscriptions, Application Auto Scaling targets and policies, task definition families, the
//! lock item, Container Insights' log group) is found by the names aira gives it. After `down`
//! the inventory must be empty.
//!
//! The key is `(kind, aira:id)`, or `(kind, name)` for what has no tags; the value is how many.

use std::collections::BTreeMap;

use crate::harness::sdk_config_in;

pub type Inventory = BTreeMap<(String, String), usize>;

const STACK: &str = "aira:stack";
const ID: &str = "aira:id";

/// Tags as `(key, value)` pairs → the `aira:id` when `aira:stack` names the stack. The stack tag
/// is checked on the answer: some describe calls of moto ignore tag filters.
fn ours<'a>(stack: &str, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let tags: BTreeMap<&str, &str> = tags.into_iter().collect();
    (tags.get(STACK) == Some(&stack)).then(|| tags.get(ID).unwrap_or(&"?").to_string())
}

#[derive(Default)]
struct Found(std::sync::Mutex<Inventory>);

impl Found {
    fn add(&self, kind: &str, id: Option<String>) {
        if let Some(id) = id {
            *self.0.lock().unwrap().entry((kind.to_string(), id)).or_insert(0) += 1;
        }
    }
}

/// Every resource of `stack` in `region`.
pub async fn inventory_in(stack: &str, region: &str) -> Inventory {
    let config = sdk_config_in(region);
    let found = Found::default();
    let f = &found;
    // Each service is read at once: the tests call this after every `down`.
    let (lb_dns, ..) = tokio::join!(
        elb(&config, stack, f),
        ec2(&config, stack, f),
        sqs(&config, stack, f),
        dynamodb(&config, stack, f),
        logs(&config, stack, f),
        iam(&config, stack, f),
        ecr(&config, stack, f),
        sns(&config, stack, f),
        alarms(&config, stack, f),
        acm(&config, stack, f),
        ecs(&config, stack, f),
        scaling(&config, stack, f),
        prometheus(region, stack, f),
        web_acls(&config, stack, f),
    );
    route53(&config, stack, &lb_dns, f).await;
    found.0.into_inner().unwrap()
}

async fn ec2(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    use aws_sdk_ec2::types::{Filter, Tag};
    let ec2 = aws_sdk_ec2::Client::new(config);
    let f = || Filter::builder().name("tag:aira:stack").values(stack).build();
    let id = |tags: &[Tag]| ours(stack, tags.iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))));
    let gone = |state: Option<&str>| matches!(state.map(str::to_ascii_lowercase).as_deref(), Some("deleted"));
    for v in ec2.describe_vpcs().filters(f()).send().await.unwrap().vpcs() {
        found.add("vpc", id(v.tags()));
    }
    for s in ec2.describe_subnets().filters(f()).send().await.unwrap().subnets() {
        found.add("subnet", id(s.tags()));
    }
    for g in ec2.describe_internet_gateways().filters(f()).send().await.unwrap().internet_gateways() {
        found.add("igw", id(g.tags()));
    }
    let egress = ec2.describe_egress_only_internet_gateways().filters(f()).send().await.unwrap();
    for g in egress.egress_only_internet_gateways() {
        found.add("egress-only-igw", id(g.tags()));
    }
    for t in ec2.describe_route_tables().filters(f()).send().await.unwrap().route_tables() {
        found.add("route-table", id(t.tags()));
    }
    for g in ec2.describe_security_groups().filters(f()).send().await.unwrap().security_groups() {
        found.add("security-group", id(g.tags()));
    }
    for e in ec2.describe_vpc_endpoints().filters(f()).send().await.unwrap().vpc_endpoints() {
        if !gone(e.state().map(|s| s.as_str())) {
            found.add("vpc-endpoint", id(e.tags()));
        }
    }
    for n in ec2.describe_nat_gateways().filter(f()).send().await.unwrap().nat_gateways() {
        if !gone(n.state().map(|s| s.as_str())) {
            found.add("nat-gateway", id(n.tags()));
        }
    }
    for a in ec2.describe_addresses().filters(f()).send().await.unwrap().addresses() {
        found.add("elastic-ip", id(a.tags()));
    }
    for r in ec2.describe_instances().filters(f()).send().await.unwrap().reservations() {
        for i in r.instances() {
            let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
            if !matches!(state, Some("terminated" | "shutting-down")) {
                found.add("instance", id(i.tags()));
            }
        }
    }
}

async fn sqs(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let sqs = aws_sdk_sqs::Client::new(config);
    let mut pages = sqs.list_queues().max_results(1000).into_paginator().send();
    while let Some(page) = pages.next().await {
        for url in page.unwrap().queue_urls() {
            let Ok(tags) = sqs.list_queue_tags().queue_url(url).send().await else { continue };
            let tags = tags.tags.unwrap_or_default();
            found.add("queue", ours(stack, tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        }
    }
}

async fn dynamodb(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let mut pages = ddb.list_tables().into_paginator().send();
    while let Some(page) = pages.next().await {
        for name in page.unwrap().table_names() {
            let Some(arn) = ddb.describe_table().table_name(name).send().await.ok().and_then(|t| t.table?.table_arn)
            else {
                continue;
            };
            let Ok(tags) = ddb.list_tags_of_resource().resource_arn(arn).send().await else { continue };
            found.add("table", ours(stack, tags.tags().iter().map(|t| (t.key(), t.value()))));
        }
    }
    // The lock: one item per stack in a table every stack of the region shares.
    let lock = ddb.get_item().table_name("aira-locks").key("stack", AttributeValue::S(stack.into())).send().await;
    if lock.ok().and_then(|l| l.item).is_some() {
        found.add("lock", Some(stack.to_string()));
    }
}

async fn logs(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let logs = aws_sdk_cloudwatchlogs::Client::new(config);
    // Container Insights makes its own log group, untagged, named after the cluster (the stack).
    let insights = format!("/aws/ecs/containerinsights/{stack}/");
    let mut pages = logs.describe_log_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page.unwrap().log_groups() {
            let name = g.log_group_name().unwrap_or_default();
            if name.starts_with(&insights) {
                found.add("log-group", Some(name.to_string()));
                continue;
            }
            let Some(arn) = g.arn() else { continue };
            let arn = arn.trim_end_matches(":*");
            let Ok(tags) = logs.list_tags_for_resource().resource_arn(arn).send().await else { continue };
            let tags = tags.tags.unwrap_or_default();
            found.add("log-group", ours(stack, tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        }
    }
}

/// Roles tagged with the stack, or under its path `/aira/<stack>/` (IAM is global: the region
/// does not matter), with their inline and attached policies; managed policies under that path.
async fn iam(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let iam = aws_sdk_iam::Client::new(config);
    let path = format!("/aira/{stack}/");
    let mut pages = iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        for role in page.unwrap().roles() {
            let name = role.role_name();
            let Ok(tags) = iam.list_role_tags().role_name(name).send().await else { continue };
            let id = ours(stack, tags.tags().iter().map(|t| (t.key(), t.value())))
                .or_else(|| (role.path() == path).then(|| name.to_string()));
            let Some(id) = id else { continue };
            found.add("role", Some(id));
            for p in iam.list_role_policies().role_name(name).send().await.unwrap().policy_names() {
                found.add("role-policy", Some(format!("{name}/{p}")));
            }
            let attached = iam.list_attached_role_policies().role_name(name).send().await.unwrap();
            for p in attached.attached_policies() {
                found.add("role-attached-policy", Some(format!("{name}/{}", p.policy_name().unwrap_or("?"))));
            }
        }
    }
    let local = aws_sdk_iam::types::PolicyScopeType::Local;
    for p in iam.list_policies().scope(local).path_prefix(&path).send().await.unwrap().policies() {
        found.add("managed-policy", p.policy_name().map(str::to_string));
    }
}

async fn ecr(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let ecr = aws_sdk_ecr::Client::new(config);
    let mut pages = ecr.describe_repositories().into_paginator().send();
    while let Some(page) = pages.next().await {
        for r in page.unwrap().repositories() {
            let Some(arn) = r.repository_arn() else { continue };
            let Ok(tags) = ecr.list_tags_for_resource().resource_arn(arn).send().await else { continue };
            found.add("repository", ours(stack, tags.tags().iter().map(|t| (t.key(), t.value()))));
        }
    }
}

/// Topics by tag; subscriptions (no tags) by their topic: a tagged one, or one named
/// `<stack>-alerts`, since a subscription can outlive the topic's listing.
async fn sns(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let sns = aws_sdk_sns::Client::new(config);
    let mut topics = Vec::new();
    let mut pages = sns.list_topics().into_paginator().send();
    while let Some(page) = pages.next().await {
        for t in page.unwrap().topics() {
            let Some(arn) = t.topic_arn() else { continue };
            let Ok(tags) = sns.list_tags_for_resource().resource_arn(arn).send().await else { continue };
            let id = ours(stack, tags.tags().iter().map(|t| (t.key(), t.value())));
            if id.is_some() {
                topics.push(arn.to_string());
            }
            found.add("topic", id);
        }
    }
    let named = format!(":{stack}-alerts");
    let mut pages = sns.list_subscriptions().into_paginator().send();
    while let Some(page) = pages.next().await {
        for s in page.unwrap().subscriptions() {
            let topic = s.topic_arn().unwrap_or_default();
            if topics.iter().any(|t| t == topic) || topic.ends_with(&named) {
                let to = format!("{}:{}", s.protocol().unwrap_or("?"), s.endpoint().unwrap_or("?"));
                found.add("subscription", Some(to));
            }
        }
    }
}

async fn alarms(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let cw = aws_sdk_cloudwatch::Client::new(config);
    let mut pages = cw.describe_alarms().into_paginator().send();
    while let Some(page) = pages.next().await {
        for a in page.unwrap().metric_alarms() {
            let Some(arn) = a.alarm_arn() else { continue };
            let Ok(tags) = cw.list_tags_for_resource().resource_arn(arn).send().await else { continue };
            found.add(
                "alarm",
                ours(stack, tags.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))),
            );
        }
    }
}

async fn acm(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let acm = aws_sdk_acm::Client::new(config);
    let mut pages = acm.list_certificates().into_paginator().send();
    while let Some(page) = pages.next().await {
        for c in page.unwrap().certificate_summary_list() {
            let Some(arn) = c.certificate_arn() else { continue };
            let Ok(tags) = acm.list_tags_for_certificate().certificate_arn(arn).send().await else { continue };
            found.add("certificate", ours(stack, tags.tags().iter().map(|t| (t.key(), t.value().unwrap_or("")))));
        }
    }
}

/// AWS WAF web ACLs (REGIONAL) by tag: ListWebACLs has no tag filter, so every one is asked.
async fn web_acls(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    let waf = aws_sdk_wafv2::Client::new(config);
    let mut marker = None;
    loop {
        let req = waf.list_web_acls().scope(aws_sdk_wafv2::types::Scope::Regional).limit(100);
        let page = req.set_next_marker(marker).send().await.unwrap();
        for acl in page.web_acls() {
            let Some(arn) = acl.arn() else { continue };
            let Ok(tags) = waf.list_tags_for_resource().resource_arn(arn).send().await else { continue };
            let tags = tags.tag_info_for_resource().map(|t| t.tag_list()).unwrap_or_default();
            found.add("web-acl", ours(stack, tags.iter().map(|t| (t.key(), t.value()))));
        }
        marker = page.next_marker().map(String::from);
        if marker.is_none() || page.web_acls().is_empty() {
            break;
        }
    }
}

/// Load balancers, their listeners and target groups, by tag (`describe_tags`: 20 ARNs a call).
/// Returns the DNS names of the stack's load balancers, which its alias records point at.
/// The stack's load balancers, listeners, listener rules (a preview's are on its base's
/// listeners) and target groups; returns the DNS names its alias records point at, each with the
/// record name the load balancer gives its stack (none: any).
async fn elb(config: &aws_config::SdkConfig, stack: &str, found: &Found) -> Vec<(String, Option<String>)> {
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let tagged = |arns: Vec<String>| {
        let elb = elb.clone();
        async move {
            let mut out = BTreeMap::new();
            for chunk in arns.chunks(20) {
                let mut descriptions = Vec::new();
                match elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await {
                    Ok(t) => descriptions.extend(t.tag_descriptions().iter().cloned()),
                    // One of them was deleted meanwhile (by another test): ask one by one.
                    Err(_) => {
                        for arn in chunk {
                            if let Ok(t) = elb.describe_tags().resource_arns(arn).send().await {
                                descriptions.extend(t.tag_descriptions().iter().cloned());
                            }
                        }
                    }
                }
                for d in &descriptions {
                    let pairs = d.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
                    if let (Some(arn), Some(id)) = (d.resource_arn(), ours(stack, pairs)) {
                        out.insert(arn.to_string(), id);
                    }
                }
            }
            out
        }
    };
    let mut lbs = Vec::new();
    let mut pages = elb.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        lbs.extend(page.unwrap().load_balancers().iter().cloned());
    }
    let arns: Vec<String> = lbs.iter().filter_map(|l| l.load_balancer_arn().map(str::to_string)).collect();
    let mut all_tags: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for chunk in arns.chunks(20) {
        if let Ok(t) = elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await {
            for d in t.tag_descriptions() {
                let pairs = d.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())));
                all_tags.insert(d.resource_arn().unwrap_or_default().to_string(), pairs.collect());
            }
        }
    }
    let mut records = Vec::new();
    let (mut listener_arns, mut hosted_listeners) = (Vec::new(), Vec::new());
    for lb in &lbs {
        let arn = lb.load_balancer_arn().unwrap_or_default();
        let tags = all_tags.get(arn).cloned().unwrap_or_default();
        let owner = tags.get(STACK).map(String::as_str);
        // The record names it gives (`aira:dns-name`); without the tag, any alias to it.
        let public = tags.get("aira:dns-name").map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let listeners = || async {
            let out = elb.describe_listeners().load_balancer_arn(arn).send().await.unwrap();
            out.listeners().iter().filter_map(|l| l.listener_arn().map(str::to_string)).collect::<Vec<_>>()
        };
        if owner == Some(stack) || lb.load_balancer_name() == Some(stack) {
            // A listener lives on its load balancer: those of the stack's, tagged or not.
            let id = tags.get(ID).cloned().or_else(|| lb.load_balancer_name().map(str::to_string));
            found.add("load-balancer", id);
            records.extend(lb.dns_name().map(|d| (d.to_string(), public)));
            listener_arns.extend(listeners().await);
        } else if let Some(preview) = owner.and_then(|o| stack.strip_prefix(o)?.strip_prefix('-')) {
            // A preview's base's: its rules on the listeners, its records `PREVIEW.` the base's name.
            let name = public.map(|p| format!("{preview}.{p}"));
            records.extend(lb.dns_name().filter(|_| name.is_some()).map(|d| (d.to_string(), name)));
            hosted_listeners.extend(listeners().await);
        }
    }
    let ours_listeners = tagged(listener_arns.clone()).await;
    for arn in &listener_arns {
        found.add("listener", Some(ours_listeners.get(arn).cloned().unwrap_or_else(|| arn.clone())));
    }
    let mut rules = Vec::new();
    for listener in listener_arns.iter().chain(&hosted_listeners) {
        let out = elb.describe_rules().listener_arn(listener).page_size(400).send().await.unwrap();
        rules.extend(
            out.rules().iter().filter(|r| r.is_default() != Some(true)).filter_map(|r| r.rule_arn().map(String::from)),
        );
    }
    for id in tagged(rules).await.into_values() {
        found.add("listener-rule", Some(id));
    }
    let mut tgs = Vec::new();
    let mut pages = elb.describe_target_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        tgs.extend(page.unwrap().target_groups().iter().filter_map(|t| t.target_group_arn().map(str::to_string)));
    }
    for id in tagged(tgs).await.into_values() {
        found.add("target-group", Some(id));
    }
    records
}

/// The cluster (tagged, or named after the stack), its services that are not INACTIVE, and the
/// ACTIVE revisions of the task definition families `<stack>-…` (a family has no tags).
async fn ecs(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    use aws_sdk_ecs::types::{
        ClusterField, ServiceField, TaskDefinitionFamilyStatus, TaskDefinitionField, TaskDefinitionStatus,
    };
    let ecs = aws_sdk_ecs::Client::new(config);
    let mut arns = Vec::new();
    let mut pages = ecs.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        arns.extend(page.unwrap().cluster_arns().iter().cloned());
    }
    for chunk in arns.chunks(100) {
        let out = ecs.describe_clusters().set_clusters(Some(chunk.to_vec())).include(ClusterField::Tags).send().await;
        for c in out.unwrap().clusters() {
            if c.status() == Some("INACTIVE") {
                continue;
            }
            let pairs = || c.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            let id = ours(stack, pairs());
            let id = id.or_else(|| (c.cluster_name() == Some(stack)).then(|| stack.to_string()));
            // A preview's services run in its base's cluster.
            let owner = pairs().find(|(k, _)| *k == STACK).map(|(_, v)| v);
            let base = owner.is_some_and(|o| stack.strip_prefix(o).is_some_and(|rest| rest.starts_with('-')));
            if let Some(id) = &id {
                found.add("cluster", Some(id.clone()));
            } else if !base {
                continue;
            }
            let cluster = c.cluster_arn().unwrap_or_default();
            let services = ecs.list_services().cluster(cluster).send().await.unwrap();
            for chunk in services.service_arns().chunks(10) {
                let out = ecs
                    .describe_services()
                    .cluster(cluster)
                    .set_services(Some(chunk.to_vec()))
                    .include(ServiceField::Tags)
                    .send()
                    .await
                    .unwrap();
                for s in out.services().iter().filter(|s| s.status() != Some("INACTIVE")) {
                    let tags = || s.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
                    let untagged = !tags().any(|(k, _)| k == STACK);
                    // In its own cluster, an untagged service is the stack's too (by its name).
                    let by_name = (id.is_some() && untagged).then(|| s.service_name().map(str::to_string)).flatten();
                    found.add("service", ours(stack, tags()).or(by_name));
                }
            }
        }
    }
    let families = ecs
        .list_task_definition_families()
        .family_prefix(format!("{stack}-"))
        .status(TaskDefinitionFamilyStatus::Active)
        .send()
        .await
        .unwrap();
    for family in families.families() {
        let active = ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        // `<stack>-…` holds a preview's families too (`<stack>-<preview>-…`): their tags say whose.
        if let Some(first) = active.task_definition_arns().first() {
            let out = ecs.describe_task_definition().task_definition(first).include(TaskDefinitionField::Tags);
            let tags = out.send().await.map(|o| o.tags().to_vec()).unwrap_or_default();
            let owner = tags.iter().find(|t| t.key() == Some(STACK)).and_then(|t| t.value());
            if owner.is_some_and(|o| o != stack) {
                continue;
            }
        }
        for _ in active.task_definition_arns() {
            found.add("task-definition", Some(family.clone()));
        }
    }
}

/// Scalable targets and their policies have no aira tags: the stack's are those of services in
/// its cluster (`service/<stack>/…`).
async fn scaling(config: &aws_config::SdkConfig, stack: &str, found: &Found) {
    use aws_sdk_applicationautoscaling::types::ServiceNamespace;
    let aas = aws_sdk_applicationautoscaling::Client::new(config);
    let prefix = format!("service/{stack}/");
    let targets = aas.describe_scalable_targets().service_namespace(ServiceNamespace::Ecs).send().await.unwrap();
    for t in targets.scalable_targets().iter().filter(|t| t.resource_id().starts_with(&prefix)) {
        found.add("scalable-target", Some(t.resource_id().to_string()));
    }
    let policies = aas.describe_scaling_policies().service_namespace(ServiceNamespace::Ecs).send().await.unwrap();
    for p in policies.scaling_policies().iter().filter(|p| p.resource_id().starts_with(&prefix)) {
        found.add("scaling-policy", Some(format!("{}/{}", p.resource_id(), p.policy_name())));
    }
}

/// Records have no tags. The stack's are alias records whose target is one of its load
/// balancers (or any load balancer named after it, `<stack>-<n>.<region>.elb.amazonaws.com`,
/// once that is gone) and ACM validation CNAMEs under a name that holds the stack's own (the
/// tests' zones are `<stack>.example.com`).
async fn route53(config: &aws_config::SdkConfig, stack: &str, lb_dns: &[(String, Option<String>)], found: &Found) {
    // Through the harness proxy: moto's record values are CDATA, which the SDK reads as empty.
    let proxy = crate::proxy::Proxy::start(&crate::harness::endpoint(), Default::default()).await;
    let r53 = aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::config::Builder::from(config).endpoint_url(&proxy.url).build(),
    );
    let norm = |s: &str| s.trim_end_matches('.').trim_start_matches("dualstack.").to_ascii_lowercase();
    let lb_dns: Vec<(String, Option<String>)> = lb_dns.iter().map(|(d, n)| (norm(d), n.clone())).collect();
    let own_lb = format!("{}-", stack.to_ascii_lowercase());
    let label = stack.to_ascii_lowercase();
    let mut zones = Vec::new();
    let mut pages = r53.list_hosted_zones().into_paginator().send();
    while let Some(page) = pages.next().await {
        zones.extend(page.unwrap().hosted_zones().iter().map(|z| z.id().to_string()));
    }
    for zone in zones {
        // The tests' zones hold a few records: one page (the SDK has no paginator for this call).
        let Ok(page) = r53.list_resource_record_sets().hosted_zone_id(&zone).max_items(300).send().await else {
            continue; // deleted meanwhile
        };
        for set in page.resource_record_sets() {
            let name = set.name().to_ascii_lowercase();
            let ty = set.r#type().as_str();
            let alias = set.alias_target().map(|a| norm(a.dns_name()));
            let named = |want: &Option<String>| want.as_ref().is_none_or(|w| norm(&name) == *w);
            // To one of the stack's load balancers under the name it gives; to a load balancer
            // gone already, by the name aira gives it.
            let by_alias = alias.is_some_and(|a| match lb_dns.iter().find(|(dns, _)| *dns == a) {
                Some((_, want)) => named(want),
                None => a.starts_with(&own_lb),
            });
            let validation = ty == "CNAME"
                && set.resource_records().iter().any(|r| r.value().contains("acm-validations.aws"))
                && name.split('.').any(|l| l == label);
            if by_alias || validation {
                found.add("record", Some(format!("{name} {ty}")));
            }
        }
    }
}

/// Prometheus workspaces, their rule groups namespaces (both tagged) and alert manager
/// definitions (untagged: found in the stack's workspaces). Read through the conforming proxy,
/// which keeps the definitions moto lacks (tests/it/README.md).
async fn prometheus(region: &str, stack: &str, found: &Found) {
    let config = sdk_config_in(region);
    let amp = aws_sdk_amp::Client::from_conf(
        aws_sdk_amp::config::Builder::from(&config).endpoint_url(crate::harness::conforming()).build(),
    );
    let mut pages = amp.list_workspaces().into_paginator().send();
    while let Some(page) = pages.next().await {
        for w in page.unwrap().workspaces() {
            let id = ours(stack, w.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())));
            if id.is_none() {
                continue;
            }
            found.add("prometheus-workspace", id);
            let ws = w.workspace_id();
            let namespaces = amp.list_rule_groups_namespaces().workspace_id(ws).send().await.unwrap();
            for ns in namespaces.rule_groups_namespaces() {
                found.add("rule-groups", Some(ns.name().to_string()));
            }
            if amp.describe_alert_manager_definition().workspace_id(ws).send().await.is_ok() {
                found.add("alert-manager", Some(w.alias().unwrap_or("?").to_string()));
            }
        }
    }
}

/// The inventory can fail: one resource of each kind an SDK call can make alone, tagged with a
/// stack, is named by it; once they are deleted, nothing is.
#[tokio::test]
async fn inventory_names_what_is_left_of_a_stack() {
    let stack = crate::harness::unique_stack("inv");
    let region = "ca-central-1";
    let config = sdk_config_in(region);
    let id = |id: &'static str| [(STACK, stack.clone()), (ID, id.to_string())];

    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue = sqs
        .create_queue()
        .queue_name(format!("{stack}-q"))
        .set_tags(Some(id("queue").iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
    let queue = queue.send().await.unwrap().queue_url.unwrap();

    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let group = format!("/elsewhere/{stack}");
    let tags = id("logs-api").iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    logs.create_log_group().log_group_name(&group).set_tags(Some(tags)).send().await.unwrap();

    let sns = aws_sdk_sns::Client::new(&config);
    let sns_tags = |i| id(i).map(|(k, v)| aws_sdk_sns::types::Tag::builder().key(k).value(v).build().unwrap());
    let topic = sns.create_topic().name(format!("{stack}-alerts")).set_tags(Some(sns_tags("alerts").to_vec()));
    let topic = topic.send().await.unwrap().topic_arn.unwrap();
    sns.subscribe().topic_arn(&topic).protocol("email").endpoint("ops@example.com").send().await.unwrap();

    let cw = aws_sdk_cloudwatch::Client::new(&config);
    let cw_tags = id("alarm-x").map(|(k, v)| aws_sdk_cloudwatch::types::Tag::builder().key(k).value(v).build());
    let alarm = format!("{stack}-x");
    cw.put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("AWS/SQS")
        .metric_name("ApproximateAgeOfOldestMessage")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Maximum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .set_tags(Some(cw_tags.to_vec()))
        .send()
        .await
        .unwrap();

    let ecr = aws_sdk_ecr::Client::new(&config);
    let ecr_tags = id("repository").map(|(k, v)| aws_sdk_ecr::types::Tag::builder().key(k).value(v).build().unwrap());
    let repo = format!("aira/{stack}");
    ecr.create_repository().repository_name(&repo).set_tags(Some(ecr_tags.to_vec())).send().await.unwrap();

    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let ddb_tags = id("table").map(|(k, v)| aws_sdk_dynamodb::types::Tag::builder().key(k).value(v).build().unwrap());
    let table = format!("{stack}-data");
    {
        use aws_sdk_dynamodb::types::*;
        ddb.create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
            .set_tags(Some(ddb_tags.to_vec()))
            .send()
            .await
            .unwrap();
    }

    let iam = aws_sdk_iam::Client::new(&config);
    let role = format!("{stack}-api");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let iam_tags = id("role-api").map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().unwrap());
    iam.create_role()
        .role_name(&role)
        .path(format!("/aira/{stack}/"))
        .assume_role_policy_document(trust)
        .set_tags(Some(iam_tags.to_vec()))
        .send()
        .await
        .unwrap();
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:SendMessage","Resource":"*"}]}"#;
    iam.put_role_policy().role_name(&role).policy_name("aira").policy_document(doc).send().await.unwrap();

    let ecs = aws_sdk_ecs::Client::new(&config);
    let ecs_tags = |i| id(i).map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build());
    ecs.create_cluster().cluster_name(&stack).set_tags(Some(ecs_tags("cluster").to_vec())).send().await.unwrap();
    let family = format!("{stack}-api");
    let container = aws_sdk_ecs::types::ContainerDefinition::builder()
        .name("api")
        .image("example.invalid/api:1")
        .memory(512)
        .build();
    let td = ecs
        .register_task_definition()
        .family(&family)
        .container_definitions(container)
        .set_tags(Some(ecs_tags("task-api").to_vec()))
        .send()
        .await
        .unwrap();
    let td = td.task_definition().unwrap().task_definition_arn().unwrap().to_string();
    let service = ecs.create_service().cluster(&stack).service_name("worker").task_definition(&td).desired_count(0);
    service.set_tags(Some(ecs_tags("service-worker").to_vec())).send().await.unwrap();

    let aas = aws_sdk_applicationautoscaling::Client::new(&config);
    let resource = format!("service/{stack}/worker");
    {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        aas.register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&resource)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(1)
            .max_capacity(2)
            .send()
            .await
            .unwrap();
    }

    let acm = aws_sdk_acm::Client::new(&config);
    let acm_tags = id("certificate").map(|(k, v)| aws_sdk_acm::types::Tag::builder().key(k).value(v).build().unwrap());
    let domain = format!("chat.{stack}.example.com");
    let cert = acm.request_certificate().domain_name(&domain).set_tags(Some(acm_tags.to_vec()));
    let cert = cert.validation_method(aws_sdk_acm::types::ValidationMethod::Dns).send().await.unwrap();
    let cert = cert.certificate_arn().unwrap().to_string();

    let waf = aws_sdk_wafv2::Client::new(&config);
    let acl = {
        use aws_sdk_wafv2::types::*;
        let tags = id("waf").map(|(k, v)| Tag::builder().key(k).value(v).build().unwrap());
        let metrics = VisibilityConfig::builder().sampled_requests_enabled(false).cloud_watch_metrics_enabled(false);
        waf.create_web_acl()
            .name(format!("{stack}-waf"))
            .scope(Scope::Regional)
            .default_action(DefaultAction::builder().allow(AllowAction::builder().build()).build())
            .visibility_config(metrics.metric_name(format!("{stack}-waf")).build().unwrap())
            .set_tags(Some(tags.to_vec()))
            .send()
            .await
            .unwrap()
    };
    let acl = acl.summary().unwrap().clone();

    // A Prometheus workspace (through the conforming proxy, which keeps alert manager
    // definitions), its rule groups and its alert manager.
    let amp = aws_sdk_amp::Client::from_conf(
        aws_sdk_amp::config::Builder::from(&config).endpoint_url(crate::harness::conforming()).build(),
    );
    let amp_tags: std::collections::HashMap<String, String> =
        id("prometheus").into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let ws = amp.create_workspace().alias(&stack).set_tags(Some(amp_tags.clone())).send().await.unwrap();
    let ws = ws.workspace_id().to_string();
    // Writes wait for the workspace to leave CREATING, as on AWS.
    tokio::time::sleep(aira_testkit::aws_rules::WORKSPACE_SETTLING).await;
    let rules = aws_sdk_amp::primitives::Blob::new("groups: []\n");
    let ns_tags = id("prometheus-rules").into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    amp.create_rule_groups_namespace()
        .workspace_id(&ws)
        .name("aira")
        .data(rules)
        .set_tags(Some(ns_tags))
        .send()
        .await
        .unwrap();
    let routes = aws_sdk_amp::primitives::Blob::new("alertmanager_config: |\n  route:\n    receiver: x\n");
    amp.create_alert_manager_definition().workspace_id(&ws).data(routes).send().await.unwrap();

    // Records (no tags): a validation CNAME under the stack's zone, an alias to its load balancer.
    let r53 = aws_sdk_route53::Client::new(&config);
    let zone = r53.create_hosted_zone().name(format!("{stack}.example.com")).caller_reference(&stack).send().await;
    let zone = zone.unwrap().hosted_zone().unwrap().id().to_string();
    let records = {
        use aws_sdk_route53::types::*;
        let cname = ResourceRecordSet::builder()
            .name(format!("_0123abcd.{domain}."))
            .r#type(RrType::Cname)
            .ttl(300)
            .resource_records(ResourceRecord::builder().value("_4567.xyz.acm-validations.aws.").build().unwrap())
            .build()
            .unwrap();
        let alias = ResourceRecordSet::builder()
            .name(format!("{domain}."))
            .r#type(RrType::A)
            .alias_target(
                AliasTarget::builder()
                    .dns_name(format!("dualstack.{stack}-1234567890.{region}.elb.amazonaws.com."))
                    .hosted_zone_id("ZQSVJUPU6J1EY")
                    .evaluate_target_health(false)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        [cname, alias]
    };
    let change = |action: aws_sdk_route53::types::ChangeAction| {
        let changes = records.iter().map(|r| {
            aws_sdk_route53::types::Change::builder()
                .action(action.clone())
                .resource_record_set(r.clone())
                .build()
                .unwrap()
        });
        aws_sdk_route53::types::ChangeBatch::builder().set_changes(Some(changes.collect())).build().unwrap()
    };
    let upsert = change(aws_sdk_route53::types::ChangeAction::Upsert);
    r53.change_resource_record_sets().hosted_zone_id(&zone).change_batch(upsert).send().await.unwrap();

    // The lock's item, in the table every stack of the region shares.
    {
        use aws_sdk_dynamodb::error::ProvideErrorMetadata;
        use aws_sdk_dynamodb::types::*;
        let made = ddb
            .create_table()
            .table_name("aira-locks")
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("stack")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(KeySchemaElement::builder().attribute_name("stack").key_type(KeyType::Hash).build().unwrap())
            .send()
            .await;
        if let Err(e) = made {
            assert_eq!(e.code(), Some("ResourceInUseException"), "{e:?}"); // made by an earlier run
        }
        ddb.put_item().table_name("aira-locks").item("stack", AttributeValue::S(stack.clone())).send().await.unwrap();
    }

    let left = inventory_in(&stack, region).await;
    let kinds: Vec<(&str, &str)> = left.keys().map(|(k, i)| (k.as_str(), i.as_str())).collect();
    let subscription = "email:ops@example.com".to_string();
    let role_policy = format!("{role}/aira");
    let cname = format!("_0123abcd.{domain}. CNAME");
    let alias = format!("{domain}. A");
    let want: Vec<(&str, &str)> = vec![
        ("alarm", "alarm-x"),
        ("alert-manager", stack.as_str()),
        ("certificate", "certificate"),
        ("cluster", "cluster"),
        ("lock", stack.as_str()),
        ("log-group", "logs-api"),
        ("prometheus-workspace", "prometheus"),
        ("queue", "queue"),
        ("record", &cname),
        ("record", &alias),
        ("repository", "repository"),
        ("role", "role-api"),
        ("role-policy", &role_policy),
        ("rule-groups", "aira"),
        ("scalable-target", &resource),
        ("service", "service-worker"),
        ("subscription", &subscription),
        ("table", "table"),
        ("task-definition", &family),
        ("topic", "alerts"),
        ("web-acl", "waf"),
    ];
    assert_eq!(kinds, want);

    // Gone: deregistered, deleted. The inventory finds nothing more.
    acm.delete_certificate().certificate_arn(&cert).send().await.unwrap();
    let delete = change(aws_sdk_route53::types::ChangeAction::Delete);
    r53.change_resource_record_sets().hosted_zone_id(&zone).change_batch(delete).send().await.unwrap();
    ddb.delete_item()
        .table_name("aira-locks")
        .key("stack", aws_sdk_dynamodb::types::AttributeValue::S(stack.clone()))
        .send()
        .await
        .unwrap();
    amp.delete_workspace().workspace_id(&ws).send().await.unwrap();
    waf.delete_web_acl()
        .name(acl.name().unwrap())
        .scope(aws_sdk_wafv2::types::Scope::Regional)
        .id(acl.id().unwrap())
        .lock_token(acl.lock_token().unwrap())
        .send()
        .await
        .unwrap();
    sqs.delete_queue().queue_url(queue).send().await.unwrap();
    logs.delete_log_group().log_group_name(&group).send().await.unwrap();
    sns.delete_topic().topic_arn(&topic).send().await.unwrap();
    cw.delete_alarms().alarm_names(&alarm).send().await.unwrap();
    ecr.delete_repository().repository_name(&repo).send().await.unwrap();
    ddb.delete_table().table_name(&table).send().await.unwrap();
    iam.delete_role_policy().role_name(&role).policy_name("aira").send().await.unwrap();
    iam.delete_role().role_name(&role).send().await.unwrap();
    ecs.deregister_task_definition().task_definition(&td).send().await.unwrap();
    ecs.delete_service().cluster(&stack).service("worker").force(true).send().await.unwrap();
    ecs.delete_cluster().cluster(&stack).send().await.unwrap();
    aas.deregister_scalable_target()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .resource_id(&resource)
        .scalable_dimension(aws_sdk_applicationautoscaling::types::ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .unwrap();
    let left = inventory_in(&stack, region).await;
    assert!(left.is_empty(), "{left:?}");
}
