//! Prometheus for a deployed stack: an Amazon Managed Service for Prometheus workspace, the
//! rules of `templates/monitoring/rules` as its rule groups, and an alert manager definition
//! derived from `templates/monitoring/alertmanager.yml` whose receivers publish to the stack's
//! alert topic (SNS is the one receiver the managed alert manager offers). The tasks push their
//! metrics to the workspace (remote write, `services.rs`), so there is no target list to keep.

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use super::*;

pub const WORKSPACE: &str = "prometheus";
pub const RULES: &str = "prometheus-rules";
pub const ALERT_MANAGER: &str = "prometheus-alerts";

/// The rules promtool tests (`ops-tests`), uploaded as they are.
pub const RULES_FILE: &str = include_str!("../../../../templates/monitoring/rules/aira.rules.yml");
/// The local Alertmanager's routes, whose receivers become the alert topic.
pub const ALERTMANAGER_FILE: &str = include_str!("../../../../templates/monitoring/alertmanager.yml");
/// The rule groups namespace's name.
pub const RULES_NAMESPACE: &str = "aira";

pub(super) fn monitoring(stack: &Stack, facts: &Facts) -> Result<Vec<Desired>, ExpandError> {
    let name = &stack.stack.0;
    let topic_arn =
        format!("arn:{}:sns:{}:{}:{}", partition(&facts.region), facts.region, facts.account, alarms::topic_name(name));
    let definition = alert_manager_definition(&topic_arn, &facts.region)?;
    let mut alerts =
        Desired::of(ALERT_MANAGER, &kind::AlertManager { workspace: Val::to(WORKSPACE, "id"), definition });
    // The topic lets the workspace publish before the first alert can fire.
    alerts.depends_on.insert(alarms::TOPIC.into());
    Ok(vec![
        Desired::of(WORKSPACE, &kind::PrometheusWorkspace { alias: name.clone() }),
        Desired::of(
            RULES,
            &kind::PrometheusRules {
                workspace: Val::to(WORKSPACE, "id"),
                name: RULES_NAMESPACE.into(),
                data: RULES_FILE.into(),
            },
        ),
        alerts,
    ])
}

/// The workspace's alert manager definition (its `alertmanager_config`, as the managed service
/// takes it): the routes, timings and inhibitions of the template, every receiver an SNS
/// receiver of `topic_arn`. The managed service refuses `api_url` and `http_config`, and needs the
/// SigV4 region.
pub fn alert_manager_definition(topic_arn: &str, region: &str) -> Result<String, ExpandError> {
    let docs =
        YamlLoader::load_from_str(ALERTMANAGER_FILE).map_err(|e| ExpandError::AlertManagerTemplate(e.to_string()))?;
    let Some(Yaml::Hash(mut config)) = docs.into_iter().next() else {
        return Err(ExpandError::AlertManagerTemplate("not a mapping".into()));
    };
    let key = |k: &str| Yaml::String(k.into());
    let receivers = match config.get(&key("receivers")) {
        Some(Yaml::Array(list)) => list.clone(),
        _ => return Err(ExpandError::AlertManagerTemplate("no receivers".into())),
    };
    let mut sns = Vec::new();
    for r in receivers {
        let Some(receiver) = r["name"].as_str() else {
            return Err(ExpandError::AlertManagerTemplate("a receiver without a name".into()));
        };
        let mut sigv4 = Hash::new();
        sigv4.insert(key("region"), key(region));
        let mut target = Hash::new();
        target.insert(key("topic_arn"), key(topic_arn));
        target.insert(key("sigv4"), Yaml::Hash(sigv4));
        // SNS subjects end at 100 characters; the default template lists every label.
        target.insert(
            key("subject"),
            key("[{{ .Status | toUpper }}] {{ .GroupLabels.alertname }} ({{ .CommonLabels.severity }})"),
        );
        target.insert(key("send_resolved"), Yaml::Boolean(true));
        let mut out = Hash::new();
        out.insert(key("name"), key(receiver));
        out.insert(key("sns_configs"), Yaml::Array(vec![Yaml::Hash(target)]));
        sns.push(Yaml::Hash(out));
    }
    config.insert(key("receivers"), Yaml::Array(sns));
    let mut text = String::new();
    YamlEmitter::new(&mut text)
        .dump(&Yaml::Hash(config))
        .map_err(|e| ExpandError::AlertManagerTemplate(e.to_string()))?;
    let body = text.strip_prefix("---\n").unwrap_or(&text);
    let indented: String = body.lines().map(|l| format!("  {l}\n")).collect();
    Ok(format!(
        "# Derived by aira from templates/monitoring/alertmanager.yml: every receiver is the stack's alert topic.\n\
         alertmanager_config: |\n{indented}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_receiver_of_the_template_publishes_to_the_topic_and_the_routes_stay() {
        let d = alert_manager_definition("arn:aws:sns:us-east-1:123456789012:s-alerts", "us-east-1").unwrap();
        let outer = &YamlLoader::load_from_str(&d).unwrap()[0];
        let inner = &YamlLoader::load_from_str(outer["alertmanager_config"].as_str().unwrap()).unwrap()[0];
        let template = &YamlLoader::load_from_str(ALERTMANAGER_FILE).unwrap()[0];
        assert_eq!(inner["route"], template["route"]);
        assert_eq!(inner["inhibit_rules"], template["inhibit_rules"]);
        let names = |doc: &Yaml| -> Vec<String> {
            doc["receivers"].as_vec().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(names(inner), names(template));
        for r in inner["receivers"].as_vec().unwrap() {
            let sns = &r["sns_configs"][0];
            assert_eq!(sns["topic_arn"].as_str(), Some("arn:aws:sns:us-east-1:123456789012:s-alerts"));
            assert_eq!(sns["sigv4"]["region"].as_str(), Some("us-east-1"));
            assert!(r["webhook_configs"].is_badvalue(), "{r:?}");
        }
        assert!(!d.contains("api_url") && !d.contains("http_config"), "the managed service refuses them");
    }
}
