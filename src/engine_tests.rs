//! Data-driven tests of the engine (plan + apply) over the in-memory provider.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use expect_test::{expect, Expect};
use serde_json::{json, Value};

use crate::output::{render_plan, render_report};
use aira_engine::apply::{apply, never, Events, OpKind, Report, Status};
use aira_engine::graph::{reference, Desired, Graph, Kind, LogicalId};
use aira_engine::plan::{diff, teardown, Plan};
use aira_engine::provider::fake::FakeProvider;
use aira_engine::provider::{Progress, Provider, Repair, Scope};

struct Quiet;
impl Progress for Quiet {
    fn waiting(&self, _: &LogicalId, _: &str) {}
}
impl Events for Quiet {
    fn started(&self, _: &LogicalId, _: Kind, _: OpKind) {}
    fn finished(&self, _: &LogicalId, _: Kind, _: OpKind, _: Duration, _: Option<&str>) {}
}

const STACK: &str = "demo";

fn scope() -> Arc<Scope> {
    Arc::new(Scope::new(STACK, BTreeMap::new(), Duration::from_secs(60)))
}

fn graph(resources: Vec<Desired>) -> Graph {
    Graph { stack: STACK.into(), resources, ..Graph::default() }
}

fn dlq() -> Desired {
    Desired::new("dlq", Kind::SqsQueue, json!({"name": "demo-dlq", "fifo": false, "retention": 1209600}))
}

fn queue(visibility: u64, fifo: bool) -> Desired {
    Desired::new(
        "queue",
        Kind::SqsQueue,
        json!({"name": "demo-queue", "fifo": fifo, "visibility_timeout": visibility,
               "redrive": {"dead_letter_arn": reference("dlq", "arn"), "max_receives": 5}}),
    )
}

async fn plan(p: &FakeProvider, g: &Graph) -> Plan {
    diff(g, &p.observe(&scope()).await.unwrap()).unwrap()
}

async fn run(p: &Arc<FakeProvider>, plan: &Plan, concurrency: usize) -> Report {
    apply(plan, p.clone(), scope(), Arc::new(Quiet), concurrency, never()).await.unwrap()
}

/// Plans `g`, applies it, and checks the rendered plan, the report and the provider's calls.
async fn check(p: &Arc<FakeProvider>, g: &Graph, expected: Expect) -> Report {
    let plan = plan(p, g).await;
    let report = run(p, &plan, 4).await;
    let mut calls = p.take_calls();
    calls.sort(); // concurrent calls arrive in any order; ordering is asserted separately
    let text = format!("{}{}calls: {}\n", render_plan(&plan, false), render_report(&report), calls.join(", "));
    expected.assert_eq(&text);
    report
}

#[tokio::test]
async fn create_then_nothing_to_do() {
    let p = Arc::new(FakeProvider::new());
    let g = graph(vec![queue(30, false), dlq()]);
    check(
        &p,
        &g,
        expect![[r#"
        Plan for stack `demo`:

            + sqs.queue dlq
            + sqs.queue queue

        Plan: 2 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged.
        Applied: 2 done, 0 failed, 0 skipped.
        calls: create dlq, create queue
    "#]],
    )
    .await;
    // The queue was created after its dead-letter queue, pointing at its ARN.
    let queue = p.resources(STACK).into_iter().find(|r| r.id.0 == "queue").unwrap();
    assert_eq!(queue.props["redrive"]["dead_letter_arn"], json!("fake:demo:dlq-1"));
    assert!(queue.depends_on.contains(&LogicalId::from("dlq")));
    check(
        &p,
        &g,
        expect![[r#"
        No changes: the 2 resources of stack `demo` match the stack file.
        Applied: 0 done, 0 failed, 0 skipped.
        calls: 
    "#]],
    )
    .await;
}

#[tokio::test]
async fn update_in_place() {
    let p = Arc::new(FakeProvider::new());
    check(
        &p,
        &graph(vec![queue(30, false), dlq()]),
        expect![[r#"
        Plan for stack `demo`:

            + sqs.queue dlq
            + sqs.queue queue

        Plan: 2 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged.
        Applied: 2 done, 0 failed, 0 skipped.
        calls: create dlq, create queue
    "#]],
    )
    .await;
    check(
        &p,
        &graph(vec![queue(120, false), dlq()]),
        expect![[r#"
        Plan for stack `demo`:

            ~ sqs.queue queue
                visibility_timeout: 30 → 120

        Plan: 0 to create, 1 to update, 0 to replace, 0 to delete, 1 unchanged.
        Applied: 1 done, 0 failed, 0 skipped.
        calls: update queue
    "#]],
    )
    .await;
}

/// A task definition's update is a new revision with a new ARN: the service that names it is
/// updated in the same run (a new image rolls out with one `up`, not two).
#[tokio::test]
async fn an_update_that_changes_an_output_updates_what_reads_it() {
    let p = Arc::new(FakeProvider::new());
    let stack = |image: &str| {
        graph(vec![
            Desired::new("task", Kind::TaskDefinition, json!({"family": "demo-api", "container": {"image": image}})),
            Desired::new("svc", Kind::Service, json!({"name": "api", "task_definition": reference("task", "arn")})),
        ])
    };
    run(&p, &plan(&p, &stack("v1")).await, 4).await;
    p.take_calls();
    check(
        &p,
        &stack("v2"),
        expect![[r#"
            Plan for stack `demo`:

                ~ ecs.task-definition task
                    container.image: v1 → v2
                ~ ecs.service svc
                    task_definition: fake:demo:task-1 → (known after apply)

            Plan: 0 to create, 2 to update, 0 to replace, 0 to delete, 0 unchanged.
            Applied: 2 done, 0 failed, 0 skipped.
            calls: update svc, update task
        "#]],
    )
    .await;
    let observed = p.observe(&scope()).await.unwrap();
    let task = observed.iter().find(|o| o.id.0 == "task").unwrap();
    let svc = observed.iter().find(|o| o.id.0 == "svc").unwrap();
    assert_eq!(svc.props["task_definition"], task.outputs["arn"], "the service names the new revision");
    assert_eq!(plan(&p, &stack("v2")).await.summary.no_op, 2);
}

/// A resource that matches the stack but is broken on AWS (observe's `repair`) is updated or
/// replaced with the provider's reason, its dependents following a replacement.
#[tokio::test]
async fn a_broken_resource_is_repaired_without_a_diff() {
    let p = Arc::new(FakeProvider::new());
    let g = graph(vec![queue(30, false), dlq()]);
    run(&p, &plan(&p, &g).await, 4).await;
    let mut observed = p.observe(&scope()).await.unwrap();
    let broken = |observed: &mut Vec<aira_engine::provider::Observed>, id: &str, repair: Option<Repair>| {
        observed.iter_mut().find(|o| o.id.0 == id).unwrap().repair = repair;
    };
    let redeploy = Repair { reason: "last deployment FAILED; redeploying".into(), replace: false };
    broken(&mut observed, "queue", Some(redeploy));
    expect![[r#"
        Plan for stack `demo`:

            ~ sqs.queue queue  (last deployment FAILED; redeploying)

        Plan: 0 to create, 1 to update, 0 to replace, 0 to delete, 1 unchanged.
    "#]]
    .assert_eq(&render_plan(&diff(&g, &observed).unwrap(), false));
    broken(&mut observed, "queue", None);
    broken(
        &mut observed,
        "dlq",
        Some(Repair { reason: "certificate FAILED: request a new one".into(), replace: true }),
    );
    expect![[r#"
        Plan for stack `demo`:

          -/+ sqs.queue dlq  (certificate FAILED: request a new one)
            ~ sqs.queue queue
                redrive.dead_letter_arn: fake:demo:dlq-1 → (known after apply)

        Plan: 0 to create, 1 to update, 1 to replace, 0 to delete, 0 unchanged.
    "#]]
    .assert_eq(&render_plan(&diff(&g, &observed).unwrap(), false));
}

#[tokio::test]
async fn replace_deletes_first_for_named_kinds() {
    let p = Arc::new(FakeProvider::new());
    run(&p, &plan(&p, &graph(vec![queue(30, false), dlq()])).await, 4).await;
    p.take_calls();
    check(
        &p,
        &graph(vec![queue(30, true), dlq()]),
        expect![[r#"
        Plan for stack `demo`:

          -/+ sqs.queue queue  (a queue cannot change between standard and FIFO)
                fifo: false → true  (forces replacement)

        Plan: 0 to create, 0 to update, 1 to replace, 0 to delete, 1 unchanged.
        Applied: 2 done, 0 failed, 0 skipped.
        calls: create queue, delete queue
    "#]],
    )
    .await;
    let plan = plan(&p, &graph(vec![queue(30, false), dlq()])).await;
    run(&p, &plan, 4).await;
    assert_eq!(p.take_calls(), vec!["delete queue", "create queue"], "a name can only exist once");
}

#[tokio::test]
async fn removed_dependency_is_deleted_after_its_dependent_lets_go() {
    let p = Arc::new(FakeProvider::new());
    run(&p, &plan(&p, &graph(vec![queue(30, false), dlq()])).await, 4).await;
    p.take_calls();
    let without_dlq =
        Desired::new("queue", Kind::SqsQueue, json!({"name": "demo-queue", "fifo": false, "visibility_timeout": 30}));
    let g = graph(vec![without_dlq]);
    let plan = plan(&p, &g).await;
    expect![[r#"
        Plan for stack `demo`:

            ~ sqs.queue queue
                redrive: {"dead_letter_arn":"fake:demo:dlq-1","max_receives":5} → (none)
            - sqs.queue dlq  (not in the stack any more)

        Plan: 0 to create, 1 to update, 0 to replace, 1 to delete, 0 unchanged.
    "#]]
    .assert_eq(&render_plan(&plan, false));
    run(&p, &plan, 4).await;
    assert_eq!(p.take_calls(), vec!["update queue", "delete dlq"]);
}

#[tokio::test]
async fn teardown_deletes_dependents_first() {
    let p = Arc::new(FakeProvider::new());
    run(&p, &plan(&p, &graph(vec![queue(30, false), dlq()])).await, 4).await;
    p.take_calls();
    let plan = teardown(STACK, &p.observe(&scope()).await.unwrap()).unwrap();
    assert!(plan.is_destructive());
    let report = run(&p, &plan, 4).await;
    assert!(report.is_success());
    assert_eq!(p.take_calls(), vec!["delete queue", "delete dlq"]);
    assert!(p.resources(STACK).is_empty());
    // Down again: nothing to do.
    let again = teardown(STACK, &[]).unwrap();
    assert!(!again.has_changes());
}

#[tokio::test]
async fn failure_skips_dependents_and_rerun_converges() {
    let p = Arc::new(FakeProvider::new());
    let other = Desired::new("other", Kind::SqsQueue, json!({"name": "demo-other"}));
    let g = graph(vec![queue(30, false), dlq(), other]);
    p.fail_on("create", "dlq");
    let report = check(
        &p,
        &g,
        expect![[r#"
        Plan for stack `demo`:

            + sqs.queue dlq
            + sqs.queue other
            + sqs.queue queue

        Plan: 3 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged.
        Applied: 1 done, 1 failed, 1 skipped.
          failed:  create sqs.queue dlq: create `dlq`: injected failure
          skipped: create sqs.queue queue (it waits on `dlq`, which failed)
        calls: create dlq, create other
    "#]],
    )
    .await;
    assert!(!report.is_success());
    p.heal();
    check(
        &p,
        &g,
        expect![[r#"
        Plan for stack `demo`:

            + sqs.queue dlq
            + sqs.queue queue

        Plan: 2 to create, 0 to update, 0 to replace, 0 to delete, 1 unchanged.
        Applied: 2 done, 0 failed, 0 skipped.
        calls: create dlq, create queue
    "#]],
    )
    .await;
}

#[tokio::test]
async fn duplicates_left_by_a_crash_are_removed() {
    let p = Arc::new(FakeProvider::new());
    let g = graph(vec![dlq()]);
    run(&p, &plan(&p, &g).await, 4).await;
    let mut twin = p.resources(STACK)[0].clone();
    twin.physical_id = "dlq-twin".into();
    p.insert(STACK, twin);
    p.take_calls();
    check(
        &p,
        &g,
        expect![[r#"
        Plan for stack `demo`:

            - sqs.queue dlq  (duplicate of dlq-1 (left by an interrupted run))

        Plan: 0 to create, 0 to update, 0 to replace, 1 to delete, 1 unchanged.
        Applied: 1 done, 0 failed, 0 skipped.
        calls: delete dlq
    "#]],
    )
    .await;
    let left: Vec<String> = p.resources(STACK).into_iter().map(|r| r.physical_id).collect();
    assert_eq!(left, vec!["dlq-1"]);
}

#[tokio::test(start_paused = true)]
async fn independent_resources_run_concurrently_within_the_bound() {
    let p = Arc::new(FakeProvider::with_delay(Duration::from_secs(1)));
    let mut resources: Vec<Desired> =
        (0..6).map(|i| Desired::new(&format!("q{i}"), Kind::SqsQueue, json!({"name": format!("demo-q{i}")}))).collect();
    // A chain of two after q0.
    resources.push(Desired::new("chained", Kind::SqsQueue, json!({"dlq": reference("q0", "arn")})));
    let g = graph(resources);
    let plan = plan(&p, &g).await;
    let start = tokio::time::Instant::now();
    run(&p, &plan, 8).await;
    // Critical path: q0 then chained = 2 calls of 1 s, whatever the width.
    assert_eq!(start.elapsed().as_secs(), 2);

    let p1 = Arc::new(FakeProvider::with_delay(Duration::from_secs(1)));
    let plan = diff(&g, &[]).unwrap();
    let start = tokio::time::Instant::now();
    run(&p1, &plan, 1).await;
    assert_eq!(start.elapsed().as_secs(), 7, "concurrency 1 runs the seven creates one by one");
}

#[tokio::test(start_paused = true)]
async fn a_stop_starts_nothing_more_and_cancels_what_runs() {
    let p = Arc::new(FakeProvider::with_delay(Duration::from_secs(1)));
    let mut resources = vec![dlq(), queue(30, false)];
    resources.push(Desired::new("after", Kind::SqsQueue, json!({"dlq": reference("queue", "arn")})));
    let plan = plan(&p, &graph(resources)).await;
    let (tx, stop) = tokio::sync::watch::channel(None);
    // Between the end of `dlq` (1 s) and the end of `queue` (2 s), which depends on it.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tx.send(Some("lock lost".into())).unwrap();
        std::future::pending::<()>().await;
    });
    let report = apply(&plan, p.clone(), scope(), Arc::new(Quiet), 4, stop).await.unwrap();
    let status: Vec<(String, Status)> = report.outcomes.iter().map(|o| (o.id.0.clone(), o.status.clone())).collect();
    assert_eq!(
        status,
        vec![("dlq".into(), Status::Done), ("queue".into(), Status::Interrupted), ("after".into(), Status::Stopped)]
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(p.take_calls(), vec!["create dlq"], "the interrupted create never reached the provider");
    assert!(report.stopped() && !report.is_success());
}

#[test]
fn plan_json_is_stable() {
    let g = graph(vec![queue(30, false), dlq()]);
    let plan = diff(&g, &[]).unwrap();
    let json: Value = serde_json::to_value(&plan).unwrap();
    expect![[r#"
        {
          "format_version": 1,
          "stack": "demo",
          "steps": [
            {
              "id": "dlq",
              "kind": "sqs.queue",
              "action": "create",
              "depends_on": []
            },
            {
              "id": "queue",
              "kind": "sqs.queue",
              "action": "create",
              "depends_on": [
                "dlq"
              ]
            }
          ],
          "summary": {
            "create": 2,
            "update": 0,
            "replace": 0,
            "delete": 0,
            "no_op": 0
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&json).unwrap());
}

#[tokio::test]
async fn a_reference_to_an_unreported_output_fails_that_operation() {
    let p = Arc::new(FakeProvider::new());
    let g = graph(vec![dlq(), Desired::new("odd", Kind::SqsQueue, json!({"x": reference("dlq", "no-such-output")}))]);
    let report = run(&p, &plan(&p, &g).await, 4).await;
    let odd = report.outcomes.iter().find(|o| o.id.0 == "odd").unwrap();
    assert_eq!(
        odd.status,
        aira_engine::apply::Status::Failed {
            error: "`odd` references an output that its dependencies did not report".into()
        }
    );
    assert_eq!(p.take_calls(), vec!["create dlq"], "nothing was sent for `odd`");
}
