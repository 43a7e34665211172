//! `aira secret`: the stack's secrets and whether they exist; set from standard input only.

use crate::harness::{aira, aira_stdin, endpoint, secrets, unique_stack, Workdir};

#[tokio::test]
async fn secret_list_and_set_never_show_the_value() {
    let stack = unique_stack("sec");
    let name = format!("{stack}/openai");
    let work = Workdir::new();
    let file = work.write(
        "stack.yaml",
        &format!("stack: {stack}\nregion: us-east-1\nllm:\n  base_url: https://api.openai.com/v1\n  model: gpt-4o-mini\n  api_key: {{ secret: {name} }}\n"),
    );
    let file = file.to_str().unwrap();
    let at = endpoint();
    let list = aira(work.dir.path(), &["secret", "list", file, "--output", "json", "--endpoint-url", &at]).await;
    list.assert_code(0);
    assert_eq!(list.json()["secrets"][0]["name"], name.as_str());
    assert_eq!(list.json()["secrets"][0]["exists"], false);
    assert_eq!(list.json()["secrets"][0]["used_for"], "llm.api_key");

    let value = "sk-test-value-that-must-never-be-printed";
    let set =
        aira_stdin(work.dir.path(), &["secret", "set", &name, "--endpoint-url", &at], &format!("{value}\n")).await;
    set.assert_code(0);
    assert!(set.stdout.contains("Created"), "{}", set.stdout);
    let again = aira_stdin(work.dir.path(), &["secret", "set", &name, "--endpoint-url", &at], "sk-second\n").await;
    again.assert_code(0);
    assert!(again.stdout.contains("Updated"), "{}", again.stdout);
    let stored = secrets().get_secret_value().secret_id(&name).send().await.unwrap();
    assert_eq!(stored.secret_string(), Some("sk-second"), "the trailing newline is not part of the value");

    let list = aira(work.dir.path(), &["secret", "list", file, "--endpoint-url", &at]).await;
    list.assert_code(0);
    assert!(list.stdout.contains("exists"), "{}", list.stdout);
    for run in [&set, &again, &list] {
        assert!(!run.stdout.contains("sk-") && !run.stderr.contains("sk-"), "a value was printed");
    }
    // No value on standard input: refused, nothing stored.
    aira_stdin(work.dir.path(), &["secret", "set", &format!("{name}-empty"), "--endpoint-url", &at], "")
        .await
        .assert_code(1);
}

/// The pre-flight tells a secret under a customer managed KMS key (the tasks' execution role must
/// decrypt with it) from one under the AWS managed key (`DescribeSecret` omits `KmsKeyId`).
#[tokio::test]
async fn the_preflight_tells_a_secret_under_its_own_kms_key() {
    use aira::engine::provider::Provider;
    let stack = crate::harness::unique_stack("kms");
    let sm = aws_sdk_secretsmanager::Client::new(&crate::harness::sdk_config());
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let (own, aws_managed) = (format!("{stack}/own"), format!("{stack}/managed"));
    sm.create_secret().name(&own).secret_string("sk-1").kms_key_id(key).send().await.unwrap();
    sm.create_secret().name(&aws_managed).secret_string("sk-2").send().await.unwrap();
    let conn = aira::aws::Connection {
        region: Some("us-east-1".into()),
        profile: None,
        endpoint_url: Some(crate::harness::endpoint()),
    };
    let provider = aira::aws::AwsProvider::new(&aira::aws::sdk_config(&conn).await);
    for (secret, own_key) in [(&own, true), (&aws_managed, false)] {
        let yaml = format!(
            "stack: {stack}\nregion: us-east-1\nnetwork:\n  nat: true\nllm:\n  base_url: https://llm.invalid/v1\n  model: m\n  api_key: {{ secret: {secret} }}\n"
        );
        let stack = aira::engine::stack::parse("s.yaml", &yaml).unwrap().stack;
        let facts = provider.facts(&stack).await.unwrap();
        assert!(facts.secrets.contains_key(secret.as_str()), "{facts:?}");
        assert_eq!(facts.secrets_own_key.contains(secret.as_str()), own_key, "{secret}");
    }
}
