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
