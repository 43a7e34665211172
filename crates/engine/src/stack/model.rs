//! The typed stack: what a valid stack file means.
//!
//! These types are the single source of truth of the format: the JSON Schema (`aira schema`)
//! is generated from them, and the validator walks that schema over the spanned YAML tree.
//! Values with their own syntax (durations, CIDR blocks, domain names) carry a JSON Schema
//! `format` that the validator checks with a precise message.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::values::*;

/// An aira stack: the network, queue, store and services of one deployment of the runtime.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Name of the stack: tags every resource (`aira:stack`) and prefixes resource names.
    pub stack: StackName,
    /// AWS region; the `--region` flag and the SDK's configuration chain apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Extra tags put on every resource (for example `team: chat`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The VPC the services run in.
    #[serde(default)]
    pub network: Network,
    /// Optional DNS name and certificate; without it the load balancer serves its own DNS name over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Domain>,
    /// The work queue between the API and the worker, with its dead-letter queue.
    #[serde(default)]
    pub queue: Queue,
    /// ECS Fargate services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// The model the worker calls (an OpenAI-compatible API or Amazon Bedrock); the offline echo
    /// model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<Llm>,
    /// A prebuilt image reference to deploy (`repo@sha256:…`); built from source when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// How deployments are waited for.
    #[serde(default)]
    pub deploy: Deploy,
    /// CloudWatch alarms on the queue, the dead-letter queue and the load balancer, sent to an SNS topic.
    #[serde(default)]
    pub alerts: Alerts,
    /// Prometheus for the services: an Amazon Managed Service for Prometheus workspace that the
    /// tasks push their metrics to, with the rules and alert routes of `templates/monitoring`
    /// (alerts go to the stack's alert topic). `false` leaves it out.
    #[serde(default = "Stack::default_monitoring")]
    pub monitoring: bool,
    /// Per-address rate limits at the load balancer, held across every api task: an AWS WAF web
    /// ACL with rate-based rules on the public service's load balancer, which answers 429 past a
    /// limit. On (with the defaults) for a stack with a public service; `false` leaves it out.
    #[serde(default)]
    pub waf: Waf,
}

/// `waf`: on or off, or the limits themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Waf {
    /// `true`: the default limits; `false`: no web ACL.
    Switch(bool),
    /// The limits (each key has its default).
    Limits(WafLimits),
}

impl Default for Waf {
    fn default() -> Self {
        Waf::Switch(true)
    }
}

impl Waf {
    /// The limits, `None` when turned off.
    pub fn limits(self) -> Option<WafLimits> {
        match self {
            Waf::Switch(true) => Some(WafLimits::default()),
            Waf::Switch(false) => None,
            Waf::Limits(l) => Some(l),
        }
    }
}

/// The smallest rate limit AWS WAF accepts in a rate-based rule (AWS WAF Developer Guide,
/// "Rate-based rule high-level settings": "The lowest limit setting allowed is 10").
pub const WAF_MIN_LIMIT: u32 = 10;
/// The evaluation windows AWS WAF offers, in seconds (60, 120, 300 and 600; 300 by default).
pub const WAF_WINDOWS: [u64; 4] = [60, 120, 300, 600];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafLimits {
    /// Requests one client address may send in `window`, to any path; past it AWS WAF answers
    /// 429 until the address's rate falls below.
    #[serde(default = "WafLimits::default_requests")]
    #[schemars(range(min = 10, max = 2000000000))]
    pub requests: u32,
    /// Requests one client address may send in `window` to the account routes (`/v1/auth/`:
    /// sign-up, sign-in, tokens); at most `requests`.
    #[serde(default = "WafLimits::default_auth_requests")]
    #[schemars(range(min = 10, max = 2000000000))]
    pub auth_requests: u32,
    /// How far back AWS WAF counts: `1m`, `2m`, `5m` or `10m`.
    #[serde(default = "WafLimits::default_window")]
    pub window: Duration,
}

impl WafLimits {
    fn default_requests() -> u32 {
        2000
    }
    fn default_auth_requests() -> u32 {
        100
    }
    fn default_window() -> Duration {
        Duration(300)
    }
}

impl Default for WafLimits {
    fn default() -> Self {
        WafLimits {
            requests: Self::default_requests(),
            auth_requests: Self::default_auth_requests(),
            window: Self::default_window(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Subscribe this address to the stack's alert topic (AWS sends a confirmation e-mail first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Alarm when the oldest queued message has waited this long.
    #[serde(default = "Alerts::default_oldest_message")]
    pub oldest_message: Duration,
    /// Alarm when this percentage of the load balancer's requests end in a 5xx.
    #[serde(default = "Alerts::default_error_rate")]
    #[schemars(range(min = 1, max = 100))]
    pub error_rate: u32,
}

impl Alerts {
    fn default_oldest_message() -> Duration {
        Duration(15 * 60)
    }
    fn default_error_rate() -> u32 {
        5
    }
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts { email: None, oldest_message: Self::default_oldest_message(), error_rate: Self::default_error_rate() }
    }
}

impl Stack {
    fn default_monitoring() -> bool {
        true
    }

    /// Whether the stack gets its Prometheus workspace: `monitoring` on, and services to monitor.
    pub fn prometheus(&self) -> bool {
        self.monitoring && !self.services.is_empty()
    }

    /// The limits of the stack's web ACL: `waf` on, and a public service behind the load
    /// balancer it protects.
    pub fn waf(&self) -> Option<WafLimits> {
        self.services.values().any(|s| s.public).then(|| self.waf.limits()).flatten()
    }

    /// The Secrets Manager secrets the stack references.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.llm.iter().filter_map(|l| l.api_key.as_ref()).map(|k| k.secret.as_str())
    }

    /// The bounds on model spend the runtime enforces.
    pub fn spend(&self) -> Spend {
        self.llm.as_ref().map_or_else(Spend::default, |l| Spend {
            max_tokens: l.max_tokens,
            daily_tokens: l.daily_tokens,
            user_daily_tokens: l.user_daily_tokens,
            user_in_flight: l.user_in_flight,
        })
    }

    /// The model, when the worker calls Amazon Bedrock.
    pub fn bedrock(&self) -> Option<&Llm> {
        self.llm.as_ref().filter(|l| l.provider == LlmProvider::Bedrock)
    }

    /// The VPC endpoints the network gets: `network.endpoints`, `bedrock-runtime` when the
    /// worker calls Bedrock, and `aps-workspaces` for the tasks' metrics (the only paths
    /// without a NAT gateway, so they are implied).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut all = self.network.endpoints.clone();
        let implied =
            [(self.bedrock().is_some(), Endpoint::BedrockRuntime), (self.prometheus(), Endpoint::ApsWorkspaces)];
        for (wanted, e) in implied {
            if wanted && !all.contains(&e) {
                all.push(e);
            }
        }
        all
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// IPv4 block of the VPC that aira creates (a /16 to /24).
    #[serde(default = "Network::default_cidr")]
    pub cidr: Cidr,
    /// Number of availability zones, each with a public and a private subnet.
    #[serde(default = "Network::default_zones")]
    #[schemars(range(min = 1, max = 6))]
    pub zones: u8,
    /// VPC endpoints that let tasks in private subnets reach AWS without a NAT gateway.
    #[serde(default = "Network::default_endpoints")]
    pub endpoints: Vec<Endpoint>,
    /// Internet access for the private subnets (not needed with the endpoints above): `true`, a
    /// NAT gateway per zone; `one`, a single NAT gateway in the first zone for every zone;
    /// `instance`, a NAT instance (the smallest Graviton instance) in the first zone for every
    /// zone; `false`, none.
    #[serde(default)]
    pub nat: Nat,
    /// An Amazon-provided IPv6 block on the VPC and its public subnets, so that the load balancer
    /// also answers over IPv6 (its AAAA record). Not used with `existing`.
    #[serde(default = "Network::default_ipv6")]
    pub ipv6: bool,
    /// Use an existing VPC instead of creating one; aira then never modifies what it did not create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingVpc>,
}

impl Network {
    fn default_cidr() -> Cidr {
        Cidr("10.40.0.0/16".parse().expect("valid default"))
    }
    fn default_zones() -> u8 {
        2
    }
    fn default_ipv6() -> bool {
        true
    }
    fn default_endpoints() -> Vec<Endpoint> {
        use Endpoint::*;
        vec![Sqs, EcrApi, EcrDkr, Logs, SecretsManager, S3, DynamoDb]
    }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            cidr: Self::default_cidr(),
            zones: Self::default_zones(),
            endpoints: Self::default_endpoints(),
            nat: Nat::default(),
            ipv6: Self::default_ipv6(),
            existing: None,
        }
    }
}

/// `network.nat`: how the private subnets reach the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Nat {
    /// `true`: a NAT gateway per zone, so that a zone's failure leaves the others online;
    /// `false`: none.
    Switch(bool),
    /// `one` or `instance`: one NAT device in the first zone for every zone.
    Shared(NatShared),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NatShared {
    /// One NAT gateway: one gateway's price, but every zone loses the internet with the first,
    /// and the other zones' traffic crosses zones.
    One,
    /// One NAT instance ([`NAT_INSTANCE_TYPE`] on Amazon Linux 2023): a few dollars a month
    /// and no charge per GB processed, but one instance's bandwidth and availability, and
    /// replaced by the next `aira up` when it stops or fails its status checks.
    Instance,
}

/// `nat: instance`'s instance type, the smallest Graviton instance: enough for the tasks' calls
/// to a model (up to 5 Gbit/s in bursts, 32 Mbit/s sustained).
pub const NAT_INSTANCE_TYPE: &str = "t4g.nano";

impl Default for Nat {
    fn default() -> Self {
        Nat::Switch(false)
    }
}

impl Nat {
    /// Whether the private subnets have a NAT device to reach the internet through.
    pub fn on(&self) -> bool {
        *self != Nat::Switch(false)
    }

    /// How many NAT gateways `zones` zones get.
    pub fn gateways(&self, zones: usize) -> usize {
        match self {
            Nat::Switch(false) | Nat::Shared(NatShared::Instance) => 0,
            Nat::Switch(true) => zones,
            Nat::Shared(NatShared::One) => zones.min(1),
        }
    }

    /// Whether the NAT device is an instance.
    pub fn instance(&self) -> bool {
        *self == Nat::Shared(NatShared::Instance)
    }

    /// The Elastic IPs it holds (one a NAT gateway, one the NAT instance).
    pub fn addresses(&self, zones: usize) -> usize {
        if self.instance() {
            1
        } else {
            self.gateways(zones)
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExistingVpc {
    /// The VPC id, `vpc-…`.
    pub vpc_id: String,
    /// Subnets for the load balancer.
    pub public_subnets: Vec<String>,
    /// Subnets for the tasks.
    pub private_subnets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
pub enum Endpoint {
    #[serde(rename = "sqs")]
    Sqs,
    #[serde(rename = "ecr.api")]
    EcrApi,
    #[serde(rename = "ecr.dkr")]
    EcrDkr,
    #[serde(rename = "logs")]
    Logs,
    #[serde(rename = "secretsmanager")]
    SecretsManager,
    #[serde(rename = "s3")]
    S3,
    #[serde(rename = "dynamodb")]
    DynamoDb,
    #[serde(rename = "monitoring")]
    Monitoring,
    #[serde(rename = "bedrock-runtime")]
    BedrockRuntime,
    // Amazon Managed Service for Prometheus: remote write and queries.
    #[serde(rename = "aps-workspaces")]
    ApsWorkspaces,
}

impl Endpoint {
    pub const ALL: [Endpoint; 10] = {
        use Endpoint::*;
        [Sqs, EcrApi, EcrDkr, Logs, SecretsManager, S3, DynamoDb, Monitoring, BedrockRuntime, ApsWorkspaces]
    };

    /// The service's name as the stack file and AWS's endpoint service names spell it
    /// (`com.amazonaws.REGION.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Sqs => "sqs",
            Endpoint::EcrApi => "ecr.api",
            Endpoint::EcrDkr => "ecr.dkr",
            Endpoint::Logs => "logs",
            Endpoint::SecretsManager => "secretsmanager",
            Endpoint::S3 => "s3",
            Endpoint::DynamoDb => "dynamodb",
            Endpoint::Monitoring => "monitoring",
            Endpoint::BedrockRuntime => "bedrock-runtime",
            Endpoint::ApsWorkspaces => "aps-workspaces",
        }
    }

    /// A gateway endpoint (a route in the route tables) rather than an interface endpoint.
    pub fn is_gateway(self) -> bool {
        matches!(self, Endpoint::S3 | Endpoint::DynamoDb)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// An existing public hosted zone in the account, e.g. `example.com`.
    pub zone: DomainName,
    /// The name users reach, inside the zone, e.g. `chat.example.com`.
    pub name: DomainName,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// How long a received message stays hidden from other consumers (at most 12h).
    #[serde(default = "Queue::default_visibility")]
    pub visibility_timeout: Duration,
    /// How long an unreceived message is kept (1m to 14d).
    #[serde(default = "Queue::default_retention")]
    pub retention: Duration,
    /// Long-polling wait of receives (at most 20s).
    #[serde(default = "Queue::default_receive_wait")]
    pub receive_wait: Duration,
    /// First-in-first-out queue (changing it replaces the queue).
    #[serde(default)]
    pub fifo: bool,
    /// Where messages go after failing `max_receives` times.
    #[serde(default = "Queue::default_dead_letter", skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

impl Queue {
    fn default_visibility() -> Duration {
        Duration(120)
    }
    fn default_retention() -> Duration {
        Duration(4 * 86_400)
    }
    fn default_receive_wait() -> Duration {
        Duration(20)
    }
    fn default_dead_letter() -> Option<DeadLetter> {
        Some(DeadLetter { max_receives: 5, retention: Duration(14 * 86_400) })
    }
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            visibility_timeout: Self::default_visibility(),
            retention: Self::default_retention(),
            receive_wait: Self::default_receive_wait(),
            fifo: false,
            dead_letter: Self::default_dead_letter(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// Receives after which a message moves to the dead-letter queue.
    #[schemars(range(min = 1, max = 1000))]
    pub max_receives: u32,
    /// Retention of the dead-letter queue; must be longer than the queue's.
    pub retention: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The HTTP API: records requests and enqueues them.
    Api,
    /// The queue consumer that calls the model.
    Worker,
}

/// Every task's operations listener (`/metrics`, `/readyz`, `/healthz`), never behind the load
/// balancer (the worker's container health check asks it): no api service may take this port.
pub const OPS_PORT: u16 = 9090;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// What the service runs.
    pub role: Role,
    /// Fargate CPU units.
    pub cpu: Cpu,
    /// Fargate memory in MiB; must be a size Fargate accepts for the CPU.
    #[schemars(range(min = 512, max = 122880))]
    pub memory: u32,
    /// Fixed task count, or autoscaling bounds on the queue backlog.
    #[serde(default)]
    pub count: Count,
    /// Container port (api services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// HTTP health check path (api services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HttpPath>,
    /// Reachable from the internet through the load balancer.
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    /// A fixed number of tasks.
    Fixed(#[schemars(range(max = 1000))] u32),
    /// Autoscaling on the queue backlog.
    Auto(AutoCount),
}

impl Default for Count {
    fn default() -> Self {
        Count::Fixed(1)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoCount {
    /// Fewest tasks.
    pub min: u32,
    /// Most tasks.
    #[schemars(range(min = 1, max = 1000))]
    pub max: u32,
    /// Target of visible queue messages per running task.
    #[serde(default = "AutoCount::default_backlog")]
    #[schemars(range(min = 1))]
    pub backlog_per_task: u32,
}

impl AutoCount {
    fn default_backlog() -> u32 {
        50
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    /// Who serves the model.
    #[serde(default)]
    pub provider: LlmProvider,
    /// Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1` (provider `openai`
    /// only, where it is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<Url>,
    /// Model name; with provider `bedrock`, the Bedrock model id, e.g. `amazon.nova-lite-v1:0`.
    pub model: String,
    /// The API key's Secrets Manager secret; never a literal (provider `openai` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
    /// Most tokens of one answer (the model's `max_tokens`); also what a message is charged
    /// before its answer is known.
    #[serde(default = "Llm::default_max_tokens")]
    #[schemars(range(min = 1, max = 200000))]
    pub max_tokens: u32,
    /// Model tokens (prompt and answer) all users together may spend per UTC day; past it the
    /// API refuses new messages until 00:00 UTC. `0` removes the bound, and only when written:
    /// without the key the bound is 2000000.
    #[serde(default = "Llm::default_daily_tokens")]
    pub daily_tokens: u64,
    /// Model tokens one user may spend per UTC day; `0`: no bound for a user. At most
    /// `daily_tokens` when that is bounded.
    #[serde(default = "Llm::default_user_daily_tokens")]
    pub user_daily_tokens: u64,
    /// Messages of one user waiting or being answered at once.
    #[serde(default = "Llm::default_user_in_flight")]
    #[schemars(range(min = 1, max = 100))]
    pub user_in_flight: u32,
}

impl Llm {
    fn default_max_tokens() -> u32 {
        Spend::default().max_tokens
    }
    fn default_daily_tokens() -> u64 {
        Spend::default().daily_tokens
    }
    fn default_user_daily_tokens() -> u64 {
        Spend::default().user_daily_tokens
    }
    fn default_user_in_flight() -> u32 {
        Spend::default().user_in_flight
    }
}

/// The runtime's bounds on what the model costs: `llm`'s keys, or their defaults without `llm`
/// (the offline echo model counts tokens too, so the bounds hold whatever the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// `llm.max_tokens`.
    pub max_tokens: u32,
    /// `llm.daily_tokens`; 0: no bound.
    pub daily_tokens: u64,
    /// `llm.user_daily_tokens`; 0: no bound.
    pub user_daily_tokens: u64,
    /// `llm.user_in_flight`.
    pub user_in_flight: u32,
}

impl Default for Spend {
    fn default() -> Self {
        Spend { max_tokens: 1024, daily_tokens: 2_000_000, user_daily_tokens: 200_000, user_in_flight: 4 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Any OpenAI-compatible API at `base_url`; a host outside AWS needs `network.nat: true`.
    #[default]
    Openai,
    /// Amazon Bedrock in the stack's region, through a `bedrock-runtime` VPC endpoint; the
    /// worker's task role may invoke `model` only.
    Bedrock,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of a Secrets Manager secret, e.g. `aira/openai`.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Longest wait for a service deployment or a certificate before giving up.
    #[serde(default = "Deploy::default_timeout")]
    pub timeout: Duration,
}

impl Deploy {
    fn default_timeout() -> Duration {
        Duration(30 * 60)
    }
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy { timeout: Self::default_timeout() }
    }
}
