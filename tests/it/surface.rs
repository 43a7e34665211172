//! The CLI's outside surface, recorded: every command's help, the exit codes of representative
//! runs, and the plan JSON of a whole stack. A refactor must leave all three as they are; a change
//! of the surface shows here as a diff (`UPDATE_EXPECT=1` records it on purpose).

use expect_test::expect_file;

use crate::harness::{aira, Workdir};
use crate::stack::{fixture, run};

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line starts at column 2; deeper lines continue a wrapped description.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_help_text_is_unchanged() {
    let work = Workdir::new();
    let mut out = String::new();
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let r = aira(work.dir.path(), &args).await;
        r.assert_code(0);
        out.push_str(&format!("$ aira {}\n{}\n", args.join(" "), r.stdout));
        for sub in subcommands(&r.stdout).into_iter().rev() {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    expect_file!["surface/help.txt"].assert_eq(&out);
}

#[tokio::test]
async fn exit_codes_are_unchanged() {
    let work = Workdir::new();
    // Runs that reach AWS reach the moto server; none may reach a real endpoint.
    let ep = crate::harness::endpoint();
    let good = work.write("good.yaml", &crate::harness::small_stack(&crate::harness::unique_stack("surface")));
    let bad = work.write("bad.yaml", "stack: s\nregion: us-east-1\nnetwrk: {}\n");
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let cases: Vec<Vec<&str>> = vec![
        vec!["--version"],
        vec!["validate", good],
        vec!["validate", bad],
        vec!["validate", "/nonexistent/stack.yaml"],
        vec!["validate", good, "--output", "yaml"],
        vec!["no-such-command"],
        vec!["plan", bad],
        vec!["up", bad, "--yes"],
        vec!["plan", good, "--detailed-exitcode", "--endpoint-url", &ep],
        vec!["down", good, "--endpoint-url", &ep],
        vec!["down", "--all", "--selector", "surface=none", "--endpoint-url", &ep],
        vec!["down", good, "--local", "--purge", "--yes"],
        vec!["schema"],
        vec!["dlq", "list", bad],
        vec!["rollback", bad, "--yes"],
    ];
    let mut out = String::new();
    for args in cases {
        let r = aira(work.dir.path(), &args).await;
        let shown: Vec<String> =
            args.iter().map(|a| a.replace(work.dir.path().to_str().unwrap(), "DIR").replace(&ep, "MOTO")).collect();
        out.push_str(&format!("{} -> {}\n", shown.join(" "), r.code));
    }
    expect_file!["surface/exit-codes.txt"].assert_eq(&out);
}

#[tokio::test]
async fn plan_json_of_a_whole_stack_is_unchanged() {
    let f = fixture("surface", 2).await;
    let image = "127.0.0.1:5999/aira/runtime@sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let plan = run(&f, &["plan", &f.file, "--image", image, "--output", "json", "--detailed-exitcode"]).await;
    plan.assert_code(2);
    // The names that differ between runs: the stack's (and its zone's), and moto's zone id.
    let text =
        serde_json::to_string_pretty(&plan.json()).unwrap().replace(&f.zone_id, "ZONE_ID").replace(&f.name, "STACK");
    expect_file!["surface/plan.json"].assert_eq(&text);
}
