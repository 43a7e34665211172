//! What the benches on the moto server share (`#[path]`-included by `runtime_cost.rs` and
//! `soak.rs`): an SDK configuration for an endpoint, and the queue, dead-letter queue and table
//! as aira creates them (redrive after 5 receives, visibility 60 s, `pk`/`sk` on demand).

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

pub struct Stack {
    pub table: String,
    pub queue_url: String,
}

/// The SDK's configuration for `url`, with the test credentials, in us-east-1.
pub async fn conf_at(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(aira_unify::https_client())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "bench"))
        .load()
        .await
}

/// The queues and the table, named `{prefix}-…`, made with `conf` (through moto directly, so that
/// nothing of it is counted by a proxy).
pub async fn create(conf: &aws_config::SdkConfig, prefix: &str) -> Stack {
    let sqs = aws_sdk_sqs::Client::new(conf);
    let ddb = aws_sdk_dynamodb::Client::new(conf);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let dlq = sqs.create_queue().queue_name(format!("{prefix}-dlq-{suffix}")).send().await.unwrap().queue_url.unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{prefix}-{suffix}"))
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}).to_string(),
        )
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let table = format!("{prefix}-{suffix}");
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    let key = |n: &str, k| KeySchemaElement::builder().attribute_name(n).key_type(k).build().unwrap();
    ddb.create_table()
        .table_name(&table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    Stack { table, queue_url }
}
