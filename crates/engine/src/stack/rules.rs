//! The rules a schema cannot say, on a structurally valid stack: SQS limits and retention order,
//! the VPC block's size, Fargate sizes, one public service, the model's keys, the spend bounds,
//! the WAF limits, reachability.

use super::check::{check_format, Report};
use super::model::{self, Stack};
use super::yaml::{Node, Pos, Value};

/// Rules across fields, on a structurally valid stack.
pub(crate) fn check_semantics(stack: &Stack, tree: &Node, report: &mut Report) {
    check_queue(stack, tree, report);
    check_network(stack, tree, report);
    check_domain(stack, tree, report);
    let publics = check_services(stack, tree, report);
    if let Some(llm) = &stack.llm {
        check_llm(llm, tree, report);
    }
    if let model::Waf::Limits(limits) = &stack.waf {
        check_waf(limits, tree, report);
    }
    for (service, problem) in super::reach::reachability(stack, None).problems(stack) {
        report.error(tree.pos_of(&["services", &service]), problem, None);
    }
    if !publics.is_empty() && stack.network.existing.is_none() && stack.network.zones < 2 {
        report.error(
            tree.pos_of(&["network", "zones"]),
            format!(
                "network.zones: the public service `{}` needs a load balancer, whose subnets span at least 2 availability zones; found {}",
                publics[0], stack.network.zones
            ),
            Some("set `network.zones` to 2 or more (2 is the default)".into()),
        );
    }
    if publics.len() > 1 {
        report.error(
            tree.pos_of(&["services", &publics[1], "public"]),
            format!(
                "services: only one service can be public behind the load balancer; `{}` and `{}` both are",
                publics[0], publics[1]
            ),
            None,
        );
    }
}

/// SQS's limits, and a dead-letter queue that keeps its messages longer than the queue.
fn check_queue(stack: &Stack, tree: &Node, report: &mut Report) {
    let q = &stack.queue;
    if q.visibility_timeout.secs() > 12 * 3600 {
        report.error(
            tree.pos_of(&["queue", "visibility_timeout"]),
            "queue.visibility_timeout: must be at most 12h (an SQS limit)",
            None,
        );
    }
    if !(60..=14 * 86_400).contains(&q.retention.secs()) {
        report.error(
            tree.pos_of(&["queue", "retention"]),
            format!("queue.retention: must be between 1m and 14d (an SQS limit), found {}", q.retention),
            None,
        );
    }
    if q.receive_wait.secs() > 20 {
        report.error(
            tree.pos_of(&["queue", "receive_wait"]),
            format!("queue.receive_wait: must be at most 20s (an SQS limit), found {}", q.receive_wait),
            None,
        );
    }
    if let Some(dl) = &q.dead_letter {
        let pos = tree.pos_of(&["queue", "dead_letter", "retention"]);
        if dl.retention.secs() > 14 * 86_400 {
            report.error(
                pos,
                format!("queue.dead_letter.retention: must be at most 14d (an SQS limit), found {}", dl.retention),
                None,
            );
        } else if dl.retention <= q.retention {
            report.error(
                pos,
                format!(
                    "queue.dead_letter.retention ({}) must be longer than queue.retention ({})",
                    dl.retention, q.retention
                ),
                Some("a message keeps its original enqueue time in the dead-letter queue, so a shorter retention deletes it before anyone can redrive it".into()),
            );
        }
    }
}

/// The VPC block's size, an existing VPC's ids, endpoints listed once.
fn check_network(stack: &Stack, tree: &Node, report: &mut Report) {
    let net = &stack.network;
    let prefix = net.cidr.0.prefix_len();
    if !(16..=24).contains(&prefix) {
        report.error(
            tree.pos_of(&["network", "cidr"]),
            format!("network.cidr: the VPC block must be a /16 to /24, found /{prefix}"),
            None,
        );
    } else if net.existing.is_none() {
        // Two subnets per zone, each an equal slice of the VPC block (as expand carves it). A load
        // balancer's subnet must be a /27 or larger with 8 free addresses (AWS: "Subnets for your
        // Application Load Balancer"); a /28 private subnet leaves 11 addresses for the tasks and
        // every interface endpoint's network interface.
        let needed_bits = (2 * net.zones as u32).next_power_of_two().trailing_zeros() as u8;
        if prefix + needed_bits > 27 {
            let largest = 27 - needed_bits;
            report.error(
                tree.pos_of(&["network", "cidr"]),
                format!(
                    "network.cidr: /{prefix} is too small for {} subnets of at least /27 (a load balancer's subnet needs a /27, and the tasks and endpoints share the private ones)",
                    2 * net.zones
                ),
                Some(format!("a /{largest} or larger VPC block, or fewer `network.zones`")),
            );
        }
    }
    if let Some(existing) = &net.existing {
        if !existing.vpc_id.starts_with("vpc-") {
            report.error(
                tree.pos_of(&["network", "existing", "vpc_id"]),
                format!("network.existing.vpc_id: `{}` is not a VPC id (`vpc-…`)", existing.vpc_id),
                None,
            );
        }
        for (field, ids) in
            [("public_subnets", &existing.public_subnets), ("private_subnets", &existing.private_subnets)]
        {
            if ids.is_empty() {
                report.error(
                    tree.pos_of(&["network", "existing", field]),
                    format!("network.existing.{field}: list at least one subnet"),
                    None,
                );
            }
            for id in ids.iter().filter(|id| !id.starts_with("subnet-")) {
                report.error(
                    tree.pos_of(&["network", "existing", field]),
                    format!("network.existing.{field}: `{id}` is not a subnet id (`subnet-…`)"),
                    None,
                );
            }
        }
    }
    let mut seen = Vec::new();
    for (i, e) in net.endpoints.iter().enumerate() {
        if seen.contains(e) {
            let pos = match tree.get("network").and_then(|n| n.get("endpoints")).map(|n| &n.value) {
                Some(Value::Seq(items)) => items.get(i).map(|n| n.pos).unwrap_or_default(),
                _ => Pos::default(),
            };
            report.error(
                pos,
                format!(
                    "network.endpoints: `{}` is listed twice",
                    serde_json::to_value(e).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                ),
                None,
            );
        }
        seen.push(*e);
    }
}

fn check_domain(stack: &Stack, tree: &Node, report: &mut Report) {
    if let Some(domain) = &stack.domain {
        let (name, zone) = (domain.name.0.trim_end_matches('.'), domain.zone.0.trim_end_matches('.'));
        if name != zone && !name.ends_with(&format!(".{zone}")) {
            report.error(
                tree.pos_of(&["domain", "name"]),
                format!("domain.name: `{name}` is not inside the zone `{zone}`"),
                None,
            );
        }
    }
}

/// Each service's name, size, count and role; returns the public ones.
fn check_services(stack: &Stack, tree: &Node, report: &mut Report) -> Vec<String> {
    let mut publics = Vec::new();
    for (name, svc) in &stack.services {
        let at = |field: &str| tree.pos_of(&["services", name, field]);
        if check_format("stack-name", name).is_err() {
            report.error(
                tree.get("services").and_then(|s| match &s.value {
                    Value::Map(entries) => entries.iter().find(|(k, _)| &k.name == name).map(|(k, _)| k.pos),
                    _ => None,
                }).unwrap_or_default(),
                format!("services: `{name}` is not a valid service name: lower-case letters, digits and hyphens, starting with a letter"),
                None,
            );
        }
        let allowed = model::fargate_memory(svc.cpu.0);
        if !allowed.contains(&svc.memory) {
            report.error(
                at("memory"),
                format!(
                    "services.{name}.memory: Fargate does not accept {} MiB with {} CPU units",
                    svc.memory, svc.cpu.0
                ),
                Some(format!("with cpu {}, memory is one of {}", svc.cpu.0, render_sizes(&allowed))),
            );
        }
        if let model::Count::Auto(auto) = &svc.count {
            if auto.min == 0 {
                // The scaling metric is the backlog per running task (messages ÷ tasks): with no
                // task it has no value, and target tracking never scales out again.
                report.error(
                    at("count"),
                    format!(
                        "services.{name}.count: min 0 would leave the worker stopped for good: the backlog per running \
                         task it scales on has no value with no task running"
                    ),
                    Some("`min: 1` or more".into()),
                );
            }
            if auto.min > auto.max {
                report.error(
                    at("count"),
                    format!("services.{name}.count: min ({}) is greater than max ({})", auto.min, auto.max),
                    None,
                );
            }
        }
        match svc.role {
            model::Role::Api => {
                let ops = model::OPS_PORT;
                if svc.port.is_none() {
                    report.error(
                        tree.pos_of(&["services", name]),
                        format!("services.{name}: an api service needs a `port`"),
                        None,
                    );
                } else if svc.port == Some(ops) {
                    report.error(
                        at("port"),
                        format!(
                            "services.{name}.port: {ops} is every task's operations listener (`/metrics`, \
                             `/readyz`), which the load balancer never reaches; choose another port"
                        ),
                        None,
                    );
                }
            }
            model::Role::Worker => {
                for field in ["port", "health"] {
                    if tree.get("services").and_then(|s| s.get(name)).and_then(|s| s.get(field)).is_some() {
                        report.error(
                            at(field),
                            format!("services.{name}.{field}: a worker serves no HTTP, so it takes no `{field}`"),
                            None,
                        );
                    }
                }
                if svc.public {
                    report.error(at("public"), format!("services.{name}.public: a worker cannot be public"), None);
                }
            }
        }
        if svc.public {
            publics.push(name.clone());
        }
    }
    publics
}

/// The keys each provider takes: `openai` a URL (and perhaps a key), `bedrock` a model id only,
/// since the worker's task role is what Bedrock authorizes.
fn check_llm(llm: &model::Llm, tree: &Node, report: &mut Report) {
    let at = |key: &str| tree.pos_of(&["llm", key]);
    match llm.provider {
        model::LlmProvider::Openai => {
            if llm.base_url.is_none() {
                report.error(
                    tree.pos_of(&["llm"]),
                    "llm: provider `openai` needs `base_url`, the URL of an OpenAI-compatible API such as `https://api.openai.com/v1`",
                    Some("or `provider: bedrock` for a model on Amazon Bedrock".into()),
                );
            }
        }
        model::LlmProvider::Bedrock => {
            if llm.base_url.is_some() {
                report.error(
                    at("base_url"),
                    "llm.base_url: provider `bedrock` takes no `base_url`: the worker calls Bedrock in the stack's region, through a `bedrock-runtime` VPC endpoint",
                    Some("remove `base_url`; `model` is the Bedrock model id, such as `amazon.nova-lite-v1:0`".into()),
                );
            }
            if llm.api_key.is_some() {
                report.error(
                    at("api_key"),
                    "llm.api_key: provider `bedrock` takes no `api_key`: the worker's task role is granted `bedrock:InvokeModel` on the model",
                    Some("remove `api_key`".into()),
                );
            }
            if let Err((message, hint)) = check_bedrock_model(&llm.model) {
                report.error(at("model"), format!("llm.model: {message}"), hint);
            }
        }
    }
    check_spend(llm, tree, report);
}

/// One user's daily bound within the bound of all users: otherwise one user could spend the
/// whole day's tokens and everyone else would be refused until midnight UTC.
fn check_spend(llm: &model::Llm, tree: &Node, report: &mut Report) {
    let (all, user) = (llm.daily_tokens, llm.user_daily_tokens);
    if all == 0 || (user != 0 && user <= all) {
        return;
    }
    let (pos, what) = at_written_key(
        tree,
        ("llm", "user_daily_tokens", "daily_tokens"),
        match user {
            0 => format!("llm.user_daily_tokens: 0 (no bound for a user) with llm.daily_tokens {all}"),
            _ => format!("llm.user_daily_tokens: {user} is more than llm.daily_tokens ({all})"),
        },
        format!("llm.daily_tokens: {all} is less than llm.user_daily_tokens ({user}, its default)"),
    );
    report.error(
        pos,
        format!("{what}: one user could spend all users' tokens of the day"),
        Some(format!("give one user at most {all} tokens a day, or `daily_tokens: 0` for no overall bound")),
    );
}

/// AWS WAF's evaluation windows, and the account routes' limit within the limit of all requests:
/// the rule of all requests comes first, so a higher limit on the account routes never applies.
fn check_waf(limits: &model::WafLimits, tree: &Node, report: &mut Report) {
    let window = limits.window.secs();
    if !model::WAF_WINDOWS.contains(&window) {
        report.error(
            tree.pos_of(&["waf", "window"]),
            format!("waf.window: AWS WAF counts requests over 1m, 2m, 5m or 10m, found {}", limits.window),
            None,
        );
    }
    let (all, auth) = (limits.requests, limits.auth_requests);
    if auth > all {
        let (pos, what) = at_written_key(
            tree,
            ("waf", "auth_requests", "requests"),
            format!("waf.auth_requests: {auth} is more than waf.requests ({all})"),
            format!("waf.requests: {all} is less than waf.auth_requests ({auth}, its default)"),
        );
        report.error(
            pos,
            format!("{what}: the limit of all requests stops an address first, so the account routes' limit would never apply"),
            Some(format!("give the account routes (`/v1/auth/`) at most {all} requests a window")),
        );
    }
}

/// Where a bound that exceeds the bound above it is reported: at the key the user wrote (the
/// inner bound), or else at the outer one that undercuts the inner one's default.
fn at_written_key(
    tree: &Node,
    (section, inner, outer): (&str, &str, &str),
    inner_says: String,
    outer_says: String,
) -> (Pos, String) {
    match tree.get(section).and_then(|s| s.get(inner)).is_some() {
        true => (tree.pos_of(&[section, inner]), inner_says),
        false => (tree.pos_of(&[section, outer]), outer_says),
    }
}

/// Prefixes of Bedrock's cross-region (system-defined) inference profiles (Bedrock User Guide,
/// "Supported Regions and models for inference profiles").
const INFERENCE_PROFILE_PREFIXES: [&str; 7] = ["us.", "eu.", "apac.", "jp.", "au.", "us-gov.", "global."];

/// The foundation model of a cross-region inference profile id (`us.anthropic.claude…` →
/// `anthropic.claude…`), `None` for any other id.
pub fn inference_profile(id: &str) -> Option<&str> {
    INFERENCE_PROFILE_PREFIXES.iter().find_map(|p| id.strip_prefix(p))
}

/// A Bedrock model id such as `amazon.nova-lite-v1:0`, or an inference profile's such as
/// `us.anthropic.claude-3-5-haiku-20241022-v1:0`: the worker's grant names the model (and the
/// profile); the pre-flight reads whether the region serves it.
fn check_bedrock_model(id: &str) -> Result<(), (String, Option<String>)> {
    let id = inference_profile(id).unwrap_or(id);
    let ok = id.split_once('.').is_some_and(|(vendor, name)| !vendor.is_empty() && !name.is_empty())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if ok {
        Ok(())
    } else {
        Err((
            format!("`{id}` is not a Bedrock model id"),
            Some("a model id names its provider and model, such as `amazon.nova-lite-v1:0` or `anthropic.claude-3-haiku-20240307-v1:0`".into()),
        ))
    }
}

fn render_sizes(sizes: &[u32]) -> String {
    if sizes.len() <= 4 {
        return sizes.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    }
    format!("{} to {} in steps of {}", sizes[0], sizes[sizes.len() - 1], sizes[1] - sizes[0])
}
