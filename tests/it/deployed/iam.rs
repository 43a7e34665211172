//! IAM in the refusing direction, each refusal with its error code (and the allowed call beside
//! it, so that a refusal is the scope's, not a broken call's): a principal the trust policy does
//! not name cannot assume a task role; the execution role reads the model's key and no other
//! secret; the worker's role reads its table and no other. The harness's own read marker
//! ([`MARKER`], which lets the conforming proxy's reads of moto's state past IAM) is stripped by
//! the proxy from the requests it forwards, and moto honours it for the proxy's few reads only.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sts::error::ProvideErrorMetadata;
use serde_json::{json, Value};

/// The header of the proxy's own reads (`aws_rules::HARNESS_READ`).
const MARKER: &str = "x-aira-harness-read";

/// Marks a request as one of the proxy's own reads, before it is signed (every SDK crate's
/// `HttpRequest` is the same type).
fn mark(r: &mut aws_sdk_ec2::config::http::HttpRequest) {
    r.headers_mut().insert(MARKER, "1");
}

/// The error code of a call that must fail, or `"allowed"`.
fn code<T, E: ProvideErrorMetadata + std::error::Error + 'static>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "allowed".into(),
        Err(e) => match e.code() {
            Some(code) => code.to_string(),
            None => format!("no code: {}", aws_sdk_sts::error::DisplayErrorContext(e)),
        },
    }
}

/// Puts the read marker on a request after it is signed, as a client could add any header.
#[derive(Debug)]
struct MarkUnsigned;

impl aws_sdk_elasticloadbalancingv2::config::Intercept for MarkUnsigned {
    fn name(&self) -> &'static str {
        "the harness's read marker, unsigned"
    }

    fn modify_before_transmit(
        &self,
        context: &mut aws_sdk_elasticloadbalancingv2::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _: &aws_sdk_elasticloadbalancingv2::config::RuntimeComponents,
        _: &mut aws_sdk_elasticloadbalancingv2::config::ConfigBag,
    ) -> Result<(), aws_sdk_elasticloadbalancingv2::error::BoxError> {
        context.request_mut().headers_mut().insert(MARKER, "1");
        Ok(())
    }
}

/// What each refusal answered. `moto` and `proxy` are URLs; `admin` may do anything its identity
/// policy allows (everything); `ecs` is the user standing for `ecs-tasks.amazonaws.com` (it may
/// only call `sts:AssumeRole`).
pub async fn refusals(
    moto: &str,
    proxy: &str,
    admin: &aws_config::SdkConfig,
    ecs: &aws_config::SdkConfig,
    stack: &str,
) -> Value {
    let account = aws_sdk_sts::Client::new(admin).get_caller_identity().send().await.unwrap();
    let role = |suffix: &str| format!("arn:aws:iam::{}:role/aira/{stack}/{stack}-{suffix}", account.account().unwrap());
    // Not in the task role's trust policy: refused, though the admin's own policy allows it
    // (through the proxy, which gives moto's query-protocol errors as AWS does).
    let admin_via_proxy = admin.to_builder().endpoint_url(proxy).build();
    let sts = aws_sdk_sts::Client::new(&admin_via_proxy);
    let by_admin = code(sts.assume_role().role_arn(role("worker")).role_session_name("x").send().await);
    // The task roles as ECS assumes them, calling through the proxy as the tasks do (it gives
    // JSON-protocol refusals as AWS does).
    let assumed = |suffix: &str| {
        let arn = role(suffix);
        async move {
            let sts = aws_sdk_sts::Client::new(ecs);
            let c = sts.assume_role().role_arn(&arn).role_session_name("x").send().await.unwrap().credentials.unwrap();
            let c = aws_credential_types::Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                Some(c.session_token),
                None,
                "task",
            );
            crate::harness::sdk_config_as(proxy, "us-east-1", c)
        }
    };
    let (worker, execution) = (assumed("worker").await, assumed("execution").await);

    // Another secret and another table of the account: refused; the stack's own: read.
    let other = format!("{stack}-other");
    let secrets = aws_sdk_secretsmanager::Client::new(admin);
    secrets.create_secret().name(&other).secret_string("not the stack's").send().await.unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(admin);
    dynamodb
        .create_table()
        .table_name(&other)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("sk").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .key_schema(KeySchemaElement::builder().attribute_name("sk").key_type(KeyType::Range).build().unwrap())
        .send()
        .await
        .unwrap();
    let read_secret = |conf: &aws_config::SdkConfig, id: String| {
        let req = aws_sdk_secretsmanager::Client::new(conf).get_secret_value().secret_id(id);
        async move { code(req.send().await) }
    };
    let read_item = |table: String| {
        let key = [("pk", "x"), ("sk", "y")].map(|(k, v)| (k.to_string(), AttributeValue::S(v.into())));
        let req = aws_sdk_dynamodb::Client::new(&worker).get_item().table_name(table).set_key(Some(key.into()));
        async move { code(req.send().await) }
    };
    let own_secret = read_secret(&execution, format!("{stack}/model")).await;
    let other_secret = read_secret(&execution, other.clone()).await;
    let own_table = read_item(format!("{stack}-data")).await;
    let other_table = read_item(other.clone()).await;

    // The read marker from a client: stripped by the proxy; straight to moto, honoured for the
    // proxy's reads only (a Describe it does not make is refused, one it makes is not).
    // Through the proxy, on a read moto would let past with it: refused, as the marker is gone.
    let unprivileged = credentials_of(ecs).await;
    let via_proxy = crate::harness::sdk_config_as(proxy, "us-east-1", unprivileged.clone());
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&via_proxy);
    let stripped = code(elb.describe_load_balancers().customize().interceptor(MarkUnsigned).send().await);
    let direct = aws_sdk_ec2::Client::new(&crate::harness::sdk_config_as(moto, "us-east-1", unprivileged));
    let unlisted = code(direct.describe_vpcs().customize().mutate_request(mark).send().await);
    let listed = code(direct.describe_subnets().customize().mutate_request(mark).send().await);
    secrets.delete_secret().secret_id(&other).force_delete_without_recovery(true).send().await.unwrap();
    dynamodb.delete_table().table_name(&other).send().await.unwrap();
    json!({
        "assume_task_role_as_another_principal": by_admin,
        "execution_role_reads_the_model_key": own_secret,
        "execution_role_reads_another_secret": other_secret,
        "worker_reads_its_table": own_table,
        "worker_reads_another_table": other_table,
        "client_read_marker_through_the_proxy": stripped,
        "read_marker_on_a_read_the_proxy_does_not_make": unlisted,
        "read_marker_on_a_read_the_proxy_makes": listed,
    })
}

/// What each refusal must answer. AWS's codes; where moto's differ, moto's, named.
pub fn expected() -> Value {
    json!({
        "assume_task_role_as_another_principal": "AccessDenied",
        "execution_role_reads_the_model_key": "allowed",
        "execution_role_reads_another_secret": "AccessDeniedException",
        "worker_reads_its_table": "allowed",
        "worker_reads_another_table": "AccessDeniedException",
        "client_read_marker_through_the_proxy": "AccessDenied",
        // AWS's EC2 answers `UnauthorizedOperation`; moto answers every service `AccessDenied`.
        "read_marker_on_a_read_the_proxy_does_not_make": "AccessDenied",
        "read_marker_on_a_read_the_proxy_makes": "allowed",
    })
}

async fn credentials_of(conf: &aws_config::SdkConfig) -> aws_credential_types::Credentials {
    use aws_credential_types::provider::ProvideCredentials;
    conf.credentials_provider().unwrap().provide_credentials().await.unwrap()
}
