//! A preview on a shared base (`aira up STACK --preview NAME`).
//!
//! The base is the stack the file describes; a preview uses the base's network (VPC, subnets,
//! gateways, NAT, endpoints, groups), load balancer, listeners and certificate, cluster,
//! Prometheus workspace, alert topic, alarms and web ACL as they are, and has of its own only
//! what grows with it: queues, table, repository, roles, log groups, task definitions, services,
//! the target group, a host rule on the base's HTTPS listener and the DNS records of its host
//! name (`NAME.` the base's domain name, under the base's wildcard certificate). A preview is
//! the base's stack expanded under its own name, with every resource of a shared kind taken from
//! the base ([`Graph::shared`]): the ids are the same, so references resolve to the base's
//! outputs with nothing written twice.

use super::*;

/// The id of a preview's host rule on the base's HTTPS listener.
pub const HOST_RULE: &str = "host-rule";
/// The tag that names the base on every resource of a preview, so that the base's `down` finds
/// its live previews.
pub const BASE_TAG: &str = "aira:base";

/// A preview of a base stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub base: String,
    pub name: String,
}

impl Preview {
    /// The preview's stack name: its resources' `aira:stack` tag and the prefix of their names.
    pub fn stack(&self) -> String {
        format!("{}-{}", self.base, self.name)
    }

    /// Its host name under the base's domain name.
    pub fn host(&self, domain: &str) -> String {
        format!("{}.{}", self.name, domain.trim_end_matches('.'))
    }
}

/// The kinds a preview has of its own; of every other kind it uses the base's resource.
pub fn own_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::SqsQueue
            | Kind::Table
            | Kind::Repository
            | Kind::Role
            | Kind::LogGroup
            | Kind::TaskDefinition
            | Kind::Service
            | Kind::TargetGroup
            | Kind::ListenerRule
            | Kind::DnsRecord
    )
}

/// Why a stack cannot have previews.
pub fn refusal(stack: &Stack) -> Option<String> {
    if stack.domain.is_none() {
        return Some(
            "previews need `domain:` in the stack file: each answers its own host name under the domain's name, \
             through a rule on the base's HTTPS listener"
                .into(),
        );
    }
    if !stack.services.values().any(|s| s.public) {
        return Some("previews need a public service: a preview is reached through the base's load balancer".into());
    }
    None
}

/// The graph of `preview` on the base `stack` describes.
pub fn expand_preview(stack: &Stack, facts: &Facts, image: &Image, preview: &Preview) -> Result<Graph, ExpandError> {
    if let Some(why) = refusal(stack) {
        return Err(ExpandError::Preview(why));
    }
    let domain = stack.domain.as_ref().expect("refusal checks the domain");
    let host = preview.host(&domain.name.0);
    let mut own = stack.clone();
    own.stack.0 = preview.stack();
    own.domain = Some(crate::stack::model::Domain {
        zone: domain.zone.clone(),
        name: crate::stack::model::DomainName(host.clone()),
    });
    let mut graph = expand(&own, facts, image)?;
    let (public, _) = stack.services.iter().find(|(_, s)| s.public).expect("refusal checks the public service");
    for d in &mut graph.resources {
        if d.kind == Kind::Service {
            // Service names are unique within the base's cluster.
            let mut props: kind::Service = serde_json::from_value(d.props.clone()).expect("expand writes its kinds");
            props.name = format!("{}-{}", preview.name, props.name);
            d.props = kind::Props::to_value(&props);
            if d.id.0 == service_id(public) {
                // ECS refuses a target group that no listener or rule uses.
                d.depends_on.insert(HOST_RULE.into());
            }
        }
    }
    let rule = kind::ListenerRule {
        listener: Val::to("listener-https", "arn"),
        hosts: vec![host],
        action: kind::Action::Forward { target_group: Val::to(&format!("tg-{public}"), "arn") },
    };
    graph.resources.push(Desired::of(HOST_RULE, &rule));
    graph.shared = graph.resources.iter().filter(|d| !own_kind(d.kind)).map(|d| d.id.clone()).collect();
    graph.tags.insert(BASE_TAG.into(), preview.base.clone());
    Ok(graph)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn base() -> Stack {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        crate::stack::load(&path).unwrap().stack
    }

    pub(crate) fn image() -> Image {
        Image::Built { digest: "sha256:00".into(), repository: None, source: None }
    }

    #[test]
    fn a_preview_has_its_own_queues_services_and_host_rule_and_uses_the_rest_of_the_base() {
        let stack = base();
        let facts = Facts::offline(&stack);
        let preview = Preview { base: "aira".into(), name: "pr-7".into() };
        let g = expand_preview(&stack, &facts, &image(), &preview).unwrap();
        assert_eq!(g.stack, "aira-pr-7");
        assert_eq!(g.tags.get(BASE_TAG).map(String::as_str), Some("aira"));
        let own: Vec<&str> =
            g.resources.iter().filter(|d| !g.shared.contains(&d.id)).map(|d| d.id.0.as_str()).collect();
        for id in ["queue", "dlq", "table", "repository", "service-api", "service-worker", "tg-api", HOST_RULE, "dns-a"]
        {
            assert!(own.contains(&id), "{id} is not the preview's own: {own:?}");
        }
        for id in ["vpc", "lb", "listener-https", "certificate", "cluster", "nat-a", "services-sg", "prometheus", "waf"]
        {
            assert!(g.shared.contains(&LogicalId::from(id)), "{id} is not shared: {:?}", g.shared);
        }
        let rule = g.get(&HOST_RULE.into()).unwrap();
        assert_eq!(rule.props["hosts"], serde_json::json!(["pr-7.chat.example.com"]));
        assert_eq!(rule.props["listener"], serde_json::json!({ "$ref": "listener-https.arn" }));
        let api = g.get(&"service-api".into()).unwrap();
        assert_eq!(api.props["name"], "pr-7-api");
        assert!(api.depends_on.contains(&LogicalId::from(HOST_RULE)), "{:?}", api.depends_on);
        let record = g.get(&"dns-a".into()).unwrap();
        assert_eq!(record.props["name"], "pr-7.chat.example.com.");
    }

    #[test]
    fn a_stack_without_a_domain_has_no_previews() {
        let mut stack = base();
        stack.domain = None;
        let preview = Preview { base: "aira".into(), name: "pr-7".into() };
        let err = expand_preview(&stack, &Facts::offline(&stack), &image(), &preview).unwrap_err();
        assert!(err.to_string().contains("previews need `domain:`"), "{err}");
    }
}
