//! `aira init`: writes a commented stack file that validates. On a terminal it asks for what the
//! flags left out; without one (CI) it takes the flags and the defaults.

use std::io::{BufRead, IsTerminal, Write};

use clap::ValueEnum;
use serde::Serialize;

use super::args::{InitArgs, Model};
use crate::failure::{Failure, UserError};
use crate::output::{Format, Printer, Render};
use aira_engine::stack;
use aira_engine::stack::model::{Spend, WafLimits};

/// The answers `init` writes a stack from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answers {
    pub stack: String,
    pub region: String,
    /// None: the load balancer's own name, over HTTP.
    pub domain: Option<Domain>,
    pub model: Model,
}

/// The site's name and the hosted zone it lives in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Domain {
    pub name: String,
    pub zone: String,
}

#[derive(Debug, Serialize)]
pub struct Initialized {
    pub file: String,
    #[serde(flatten)]
    pub answers: Answers,
    /// What to run next.
    pub next: Vec<String>,
}

impl Render for Initialized {
    fn text(&self, p: &Printer) {
        p.out(&format!("wrote {} (stack `{}`, {}); next:", self.file, self.answers.stack, self.answers.region));
        for step in &self.next {
            p.out(&format!("  {step}"));
        }
    }
}

pub fn init(args: &InitArgs, region: Option<&String>, printer: &Printer) -> Result<Initialized, Failure> {
    let out = args.out.clone();
    if out.exists() && !args.force {
        return Err(UserError::FileExists(out).into());
    }
    let asking = std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && printer.format == Format::Text;
    let answers = if asking { ask(args, region)? } else { from_flags(args, region)? };
    let text = render(&answers);
    // What `aira validate` would say, before anything is written.
    let file = out.display().to_string();
    stack::parse(&file, &text).map_err(|diags| {
        let first = diags.first().map(|d| d.message.clone()).unwrap_or_default();
        Failure::internal(format!("aira init wrote a stack that does not validate: {first}"))
    })?;
    std::fs::write(&out, &text).map_err(|error| UserError::CannotWrite { path: file.clone(), error })?;
    let mut next = Vec::new();
    if answers.model == Model::Openai {
        next.push("aira secret set aira/openai   # the model's API key, read from standard input".to_string());
    }
    let arg = if out == std::path::Path::new("aira.yaml") { String::new() } else { format!(" {file}") };
    next.push(format!("aira plan{arg}   # what up would create, and its monthly cost"));
    next.push(format!("aira up{arg}"));
    Ok(Initialized { file, answers, next })
}

/// The flags, checked, with the defaults for what they leave out.
fn from_flags(args: &InitArgs, region: Option<&String>) -> Result<Answers, Failure> {
    let stack = args.stack.clone().unwrap_or_else(|| "aira".into());
    let region = region.cloned().unwrap_or_else(|| "us-east-1".into());
    Ok(answers(stack, region, args.domain.clone(), args.zone.clone(), args.model.unwrap_or(Model::Openai))?)
}

fn answers(
    stack: String,
    region: String,
    domain: Option<String>,
    zone: Option<String>,
    model: Model,
) -> Result<Answers, UserError> {
    let flag = |flag: &str, problem: String| UserError::Flag { flag: flag.into(), problem };
    stack::check_format("stack-name", &stack).map_err(|e| flag("--stack", e.to_string()))?;
    let region_ok = region.split('-').count() >= 3
        && region.ends_with(|c: char| c.is_ascii_digit())
        && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !region_ok {
        return Err(flag("--region", format!("`{region}` is not an AWS region such as us-east-1")));
    }
    let domain = match domain.filter(|d| !d.is_empty()) {
        None if zone.is_some() => return Err(UserError::ZoneNeedsDomain),
        None => None,
        Some(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            stack::check_format("hostname", &name).map_err(|e| flag("--domain", e.to_string()))?;
            // chat.example.com lives in example.com; an apex name is its own zone.
            let zone = zone.unwrap_or_else(|| match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => parent.to_string(),
                _ => name.clone(),
            });
            let zone = zone.trim_end_matches('.').to_ascii_lowercase();
            if name != zone && !name.ends_with(&format!(".{zone}")) {
                return Err(flag("--domain", format!("`{name}` is not inside the zone `{zone}`")));
            }
            Some(Domain { name, zone })
        }
    };
    Ok(Answers { stack, region, domain, model })
}

/// Asks on the terminal for what the flags did not give; Enter takes the default shown.
fn ask(args: &InitArgs, region: Option<&String>) -> Result<Answers, Failure> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut prompt = |question: &str, default: &str| -> Result<String, Failure> {
        eprint!("{question} [{default}]: ");
        std::io::stderr().flush().ok();
        let line = lines.next().transpose().map_err(UserError::Answer)?;
        let line = line.ok_or(UserError::NoAnswer)?;
        Ok(match line.trim() {
            "" => default.to_string(),
            answer => answer.to_string(),
        })
    };
    loop {
        let stack = match &args.stack {
            Some(s) => s.clone(),
            None => prompt("Stack name", "aira")?,
        };
        let region = match region {
            Some(r) => r.clone(),
            None => prompt("AWS region", "us-east-1")?,
        };
        let domain = match &args.domain {
            Some(d) => Some(d.clone()),
            None => Some(prompt("Domain name (none: the load balancer's own name, over HTTP)", "none")?)
                .filter(|d| d != "none"),
        };
        let model = match args.model {
            Some(m) => m,
            None => {
                let answer = prompt("Model: openai (any OpenAI-compatible API), bedrock, or echo (offline)", "openai")?;
                match Model::from_str(&answer, true) {
                    Ok(m) => m,
                    Err(_) => {
                        eprintln!("`{answer}` is not one of openai, bedrock, echo");
                        continue;
                    }
                }
            }
        };
        match answers(stack, region, domain, args.zone.clone(), model) {
            Ok(a) => return Ok(a),
            Err(e) => eprintln!("{e}; again:"),
        }
    }
}

/// The stack file, commented for someone reading it for the first time.
pub fn render(a: &Answers) -> String {
    let mut s = format!(
        "# The aira stack `{}`. `aira plan` shows what `aira up` would create and what it costs a\n\
         # month; `aira up` creates it; `aira down` removes every part of it. Every key: `aira schema`.\n\
         stack: {}\n\
         region: {}\n\
         network:\n  \
           # Subnets in two availability zones: the service survives the loss of one.\n  \
           zones: 2\n",
        a.stack, a.stack, a.region
    );
    match a.model {
        Model::Openai => s.push_str(
            "  # AWS's own services through VPC endpoints (interface endpoints are billed per zone and\n  \
             # hour; s3 and dynamodb are free gateway endpoints).\n  \
             endpoints: [sqs, ecr.api, ecr.dkr, logs, secretsmanager, s3, dynamodb]\n  \
             # The model is on the internet: the worker needs a way out, a NAT gateway per zone.\n  \
             nat: true\n",
        ),
        Model::Bedrock | Model::Echo => s.push_str(
            "  # AWS's own services through VPC endpoints (interface endpoints are billed per zone and\n  \
             # hour; s3 and dynamodb are free gateway endpoints). No way to the internet is needed.\n  \
             endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\n  \
             nat: false\n",
        ),
    }
    match &a.domain {
        Some(Domain { name, zone }) => s.push_str(&format!(
            "# HTTPS on this name: aira requests the certificate, validates it in the hosted zone (which\n\
             # must exist in this account) and points the name at the load balancer.\n\
             domain:\n  \
               zone: {zone}\n  \
               name: {name}\n"
        )),
        None => s.push_str(
            "# No domain: the load balancer serves its own DNS name over HTTP. Add one for HTTPS:\n\
             # domain: { zone: example.com, name: chat.example.com }\n",
        ),
    }
    s.push_str(
        "queue:\n  \
           # A message the worker fails on five times goes to the dead-letter queue (`aira dlq`).\n  \
           dead_letter: { max_receives: 5, retention: 14d }\n\
         services:\n  \
           # The HTTP API behind the load balancer; 256 CPU units are a quarter of a vCPU.\n  \
           api: { role: api, cpu: 256, memory: 512, count: 2, port: 8080, health: /healthz, public: true }\n  \
           # The worker answers queued messages; it scales on the queue's backlog.\n  \
           worker: { role: worker, cpu: 256, memory: 512, count: { min: 1, max: 4, backlog_per_task: 50 } }\n\
         # Prometheus: the tasks push their metrics to a managed workspace that evaluates the rules\n\
         # and routes the alerts of templates/monitoring (to the alert topic). `false` leaves it out.\n\
         monitoring: true\n",
    );
    let WafLimits { requests, auth_requests, window } = WafLimits::default();
    let p = aira_engine::prices::near(Some(&a.region));
    s.push_str(&format!(
        "# AWS WAF on the load balancer: each client address may send `requests` per `window` (and\n\
         # `auth_requests` to sign-up, sign-in and tokens), however many api tasks run; past that it\n\
         # gets 429. About ${:.0} a month and ${} per million requests. `false` leaves it out.\n\
         waf: {{ requests: {requests}, auth_requests: {auth_requests}, window: {window} }}\n",
        p.waf_web_acl_month + 2.0 * p.waf_rule_month,
        p.waf_requests_million,
    ));
    match a.model {
        Model::Openai => s.push_str(
            "llm:\n  \
               base_url: https://api.openai.com/v1\n  \
               model: gpt-4o-mini\n  \
               # Set once with `aira secret set aira/openai` (read from standard input, never printed).\n  \
               api_key: { secret: aira/openai }\n",
        ),
        Model::Bedrock => s.push_str(&format!(
            "# A model id, or a cross-region inference profile's (`us.`, `eu.`, `apac.`, …), which many\n\
             # models are served through; `aira plan` checks that the region serves it. The worker's role\n\
             # may invoke this one model (through a profile: in each region the profile routes to).\n\
             llm:\n  \
               provider: bedrock\n  \
               model: {}\n",
            bedrock_model(&a.region)
        )),
        Model::Echo => {
            s.push_str("# No `llm`: the offline echo model answers. Add an `llm` section for a real model.\n")
        }
    }
    if a.model != Model::Echo {
        let Spend { daily_tokens: all, user_daily_tokens: user, .. } = Spend::default();
        s.push_str(&format!(
            "  # At most {all} model tokens a day for all users together, {user} for one: past them\n  \
             # posts are refused until 00:00 UTC. `daily_tokens: 0` removes the bound.\n  \
             # daily_tokens: {all}\n  \
             # user_daily_tokens: {user}\n",
        ));
    }
    s
}

/// Amazon Nova Lite as the region reaches it: through the inference profile of its geography
/// (the regions each routes from: Bedrock User Guide, "Supported Regions and models for
/// inference profiles"), else by its id.
fn bedrock_model(region: &str) -> String {
    let geography = match region {
        r if r.starts_with("us-gov-") => None,
        r if r.starts_with("us-") => Some("us"),
        r if r.starts_with("eu-") => Some("eu"),
        r if r.starts_with("ap-") => Some("apac"),
        _ => None,
    };
    match geography {
        Some(g) => format!("{g}.amazon.nova-lite-v1:0"),
        None => "amazon.nova-lite-v1:0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bedrock_model_is_the_profile_of_the_regions_geography() {
        assert_eq!(bedrock_model("eu-west-3"), "eu.amazon.nova-lite-v1:0");
        assert_eq!(bedrock_model("us-east-2"), "us.amazon.nova-lite-v1:0");
        assert_eq!(bedrock_model("ap-northeast-1"), "apac.amazon.nova-lite-v1:0");
        assert_eq!(bedrock_model("us-gov-west-1"), "amazon.nova-lite-v1:0");
        let a = answers("demo".into(), "eu-central-1".into(), None, None, Model::Bedrock).unwrap();
        assert!(render(&a).contains("model: eu.amazon.nova-lite-v1:0"), "{}", render(&a));
    }

    #[test]
    fn every_choice_writes_a_stack_that_validates() {
        for model in [Model::Openai, Model::Bedrock, Model::Echo] {
            for domain in [None, Some("chat.example.com".to_string()), Some("example.org".to_string())] {
                let a = answers("demo".into(), "eu-west-1".into(), domain.clone(), None, model).unwrap();
                let text = render(&a);
                let loaded = stack::parse("aira.yaml", &text)
                    .unwrap_or_else(|d| panic!("{model:?} {domain:?}: {:?}\n{text}", d[0].message));
                assert_eq!(loaded.stack.stack.0, "demo");
                assert_eq!(loaded.stack.domain.is_some(), domain.is_some(), "{text}");
                assert_eq!(loaded.stack.waf(), Some(WafLimits::default()), "{text}");
            }
        }
    }

    #[test]
    fn bad_answers_name_the_flag() {
        let bad = |stack: &str, region: &str, domain: Option<&str>, zone: Option<&str>| {
            answers(stack.into(), region.into(), domain.map(Into::into), zone.map(Into::into), Model::Echo)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("Demo", "us-east-1", None, None).starts_with("--stack:"));
        assert!(bad("demo", "east", None, None).starts_with("--region:"));
        assert!(bad("demo", "us-east-1", Some("a b"), None).starts_with("--domain:"));
        assert_eq!(
            bad("demo", "us-east-1", Some("chat.example.com"), Some("other.com")),
            "--domain: `chat.example.com` is not inside the zone `other.com`"
        );
        assert_eq!(bad("demo", "us-east-1", None, Some("example.com")), "--zone needs --domain");
    }
}
