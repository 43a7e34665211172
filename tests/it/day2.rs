//! `aira logs` and `aira rollback` against moto: log events written and services set up with
//! the SDK under the names aira gives them, then read and changed through the CLI.

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};

use crate::harness::{aira, endpoint, sdk_config, unique_stack, Workdir};

fn stack_yaml(name: &str) -> String {
    format!(
        "stack: {name}\nregion: us-east-1\nservices:\n  api: {{ role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }}\n  worker: {{ role: worker, cpu: 256, memory: 512 }}\n"
    )
}

#[tokio::test]
async fn logs_interleave_the_services_by_time() {
    let name = unique_stack("logs");
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk_config());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // api at t-3s and t-1s, worker at t-2s; an old event (1 h ago) outside --since 10m.
    let events = [
        ("api", now - 3000, "api first"),
        ("worker", now - 2000, "worker second"),
        ("api", now - 1000, "api third"),
        ("worker", now - 3_600_000, "too old"),
    ];
    for service in ["api", "worker"] {
        let group = format!("/aira/{name}/{service}");
        logs.create_log_group().log_group_name(&group).send().await.unwrap();
        logs.create_log_stream().log_group_name(&group).log_stream_name("task/1").send().await.unwrap();
        let mut batch: Vec<_> = events.iter().filter(|e| e.0 == service).collect();
        batch.sort_by_key(|e| e.1);
        let put = batch.iter().map(|e| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder().timestamp(e.1).message(e.2).build().unwrap()
        });
        logs.put_log_events()
            .log_group_name(&group)
            .log_stream_name("task/1")
            .set_log_events(Some(put.collect()))
            .send()
            .await
            .unwrap();
    }
    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack_yaml(&name));
    let file = file.to_str().unwrap();
    let ep = endpoint();

    let run = aira(work.dir.path(), &["logs", file, "--since", "10m", "--endpoint-url", &ep]).await;
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    for (line, (prefix, text)) in
        lines.iter().zip([("api    |", "api first"), ("worker |", "worker second"), ("api    |", "api third")])
    {
        assert!(line.starts_with(prefix) && line.ends_with(text), "{line:?}");
    }

    let run =
        aira(work.dir.path(), &["logs", file, "worker", "--since", "2h", "--output", "json", "--endpoint-url", &ep])
            .await;
    run.assert_code(0);
    let msgs: Vec<String> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(msgs, ["too old", "worker second"]);

    let run = aira(work.dir.path(), &["logs", file, "wroker", "--endpoint-url", &ep]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("no service `wroker`") && run.stderr.contains("worker"), "{}", run.stderr);
}

#[tokio::test]
async fn rollback_moves_a_service_to_an_earlier_revision_and_deregisters_nothing() {
    let name = unique_stack("rb");
    let ecs = aws_sdk_ecs::Client::new(&sdk_config());
    ecs.create_cluster().cluster_name(&name).send().await.unwrap();
    let family = format!("{name}-api");
    let mut arns = Vec::new();
    for tag in ["one", "two"] {
        let out = ecs
            .register_task_definition()
            .family(&family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder().name("api").image(format!("registry.invalid/aira:{tag}")).build(),
            )
            .send()
            .await
            .unwrap();
        arns.push(out.task_definition().unwrap().task_definition_arn().unwrap().to_string());
    }
    ecs.create_service()
        .cluster(&name)
        .service_name("api")
        .task_definition(&arns[1])
        .desired_count(1)
        .send()
        .await
        .unwrap();

    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack_yaml(&name));
    let file = file.to_str().unwrap();
    let ep = endpoint();

    // --to needs a service when the stack has several.
    let run = aira(work.dir.path(), &["rollback", file, "--to", "1", "--endpoint-url", &ep]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("--service"), "{}", run.stderr);
    // A revision that does not exist is named with the ones that do.
    let run = aira(work.dir.path(), &["rollback", file, "--service", "api", "--to", "7", "--endpoint-url", &ep]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("no active revision 7") && run.stderr.contains("2, 1"), "{}", run.stderr);

    let run =
        aira(work.dir.path(), &["rollback", file, "--service", "api", "--output", "json", "--endpoint-url", &ep]).await;
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["rolled_back"][0]["from"], format!("{family}:2"));
    assert_eq!(out["rolled_back"][0]["to"], format!("{family}:1"));
    let svc = ecs.describe_services().cluster(&name).services("api").send().await.unwrap();
    assert_eq!(svc.services()[0].task_definition(), Some(arns[0].as_str()));
    // Nothing was deregistered: rolling forward is `aira up` (or --to 2).
    let active = ecs.list_task_definitions().family_prefix(&family).send().await.unwrap();
    assert_eq!(active.task_definition_arns().len(), 2);
    // Already at the earliest revision: nothing earlier to go to.
    let run = aira(work.dir.path(), &["rollback", file, "--service", "api", "--endpoint-url", &ep]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("no earlier active revision"), "{}", run.stderr);
}
