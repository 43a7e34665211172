//! Preview environments (`--name-suffix`, `--ttl`) and `down --all`: exactly the matching,
//! expired (or old enough) stacks are removed.

use std::time::Duration;

use crate::harness::{aira, endpoint, inventory, unique_stack, Workdir};

#[tokio::test]
async fn sweep_removes_exactly_the_expired_matching_stacks() {
    let base = unique_stack("sw");
    let (team, other) = (format!("{base}-x"), format!("{base}-y"));
    let work = Workdir::new();
    let file = |team: &str| {
        let f = work.write(
            &format!("{team}.yaml"),
            &format!("stack: {base}\nregion: us-east-1\ntags:\n  team: {team}\nnetwork:\n  endpoints: [s3]\n"),
        );
        f.to_str().unwrap().to_string()
    };
    let (fx, fy) = (file(&team), file(&other));
    let at = endpoint();
    // name suffix, file, ttl
    let stacks: [(&str, &str, Option<&str>); 5] = [
        ("a", &fx, Some("1s")),
        ("b", &fx, Some("48h")),
        ("c", &fy, Some("1s")),
        ("d", &fx, None),
        ("e", &fx, Some("1s")),
    ];
    for (suffix, f, ttl) in stacks {
        let mut args = vec!["up", f, "--name-suffix", suffix, "--endpoint-url", &at];
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        aira(work.dir.path(), &args).await.assert_code(0);
    }
    let name = |s: &str| format!("{base}-{s}");
    for s in ["a", "b", "c", "d", "e"] {
        assert!(!inventory(&name(s)).await.is_empty(), "{s} exists");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sweep = aira(
        work.dir.path(),
        &[
            "down",
            "--all",
            "--expired",
            "--selector",
            &format!("team={team}"),
            "--yes",
            "--output",
            "json",
            "--endpoint-url",
            &at,
        ],
    )
    .await;
    sweep.assert_code(0);
    let out = sweep.json();
    assert_eq!(out["removed"], serde_json::json!([name("a"), name("e")]), "{out}");
    assert_eq!(out["failed"], serde_json::json!([]));
    for s in ["a", "e"] {
        assert!(inventory(&name(s)).await.is_empty(), "{s} removed");
    }
    for s in ["b", "c", "d"] {
        assert!(!inventory(&name(s)).await.is_empty(), "{s} kept");
    }

    // By age: nothing is an hour old; everything of the team is older than a second.
    let none = aira(
        work.dir.path(),
        &["down", "--all", "--older-than", "1h", "--selector", &format!("team={team}"), "--yes", "--endpoint-url", &at],
    )
    .await;
    none.assert_code(0);
    assert!(none.stdout.contains("No stack matches"), "{}", none.stdout);
    let old = aira(
        work.dir.path(),
        &[
            "down",
            "--all",
            "--older-than",
            "1s",
            "--selector",
            &format!("team={team}"),
            "--yes",
            "--output",
            "json",
            "--endpoint-url",
            &at,
        ],
    )
    .await;
    old.assert_code(0);
    assert_eq!(old.json()["removed"], serde_json::json!([name("b"), name("d")]));
    assert!(!inventory(&name("c")).await.is_empty(), "another team's stack is never touched");

    // A preview environment is its own stack: down of it alone.
    aira(work.dir.path(), &["down", &fy, "--name-suffix", "c", "--yes", "--endpoint-url", &at]).await.assert_code(0);
    assert!(inventory(&name("c")).await.is_empty());
}

#[tokio::test]
async fn a_sweep_without_yes_and_without_a_terminal_is_refused() {
    let work = Workdir::new();
    let base = unique_stack("swr");
    let f = work.write(
        "s.yaml",
        &format!("stack: {base}\nregion: us-east-1\ntags:\n  team: {base}\nnetwork:\n  endpoints: [s3]\n"),
    );
    aira(work.dir.path(), &["up", f.to_str().unwrap(), "--endpoint-url", &endpoint()]).await.assert_code(0);
    let refused =
        aira(work.dir.path(), &["down", "--all", "--selector", &format!("team={base}"), "--endpoint-url", &endpoint()])
            .await;
    refused.assert_code(1);
    assert!(!inventory(&base).await.is_empty());
    let bad = aira(
        work.dir.path(),
        &["up", f.to_str().unwrap(), "--name-suffix", "THIS-IS-NOT-VALID", "--endpoint-url", &endpoint()],
    )
    .await;
    bad.assert_code(1);
    assert!(bad.stderr.contains("--name-suffix"), "{}", bad.stderr);
    aira(
        work.dir.path(),
        &["down", "--all", "--selector", &format!("team={base}"), "--yes", "--endpoint-url", &endpoint()],
    )
    .await
    .assert_code(0);
    assert!(inventory(&base).await.is_empty());
}
