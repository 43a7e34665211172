//! Terminal habits. As a CI job meets them (no terminal): `aira init` from flags writes a stack
//! `aira validate` accepts and never overwrites one; `aira completions` prints scripts their
//! shells parse; `aira man` renders a page per command. On a terminal (a pseudo-terminal from
//! util-linux `script`): the live view of the operations in flight.

use std::time::Duration;

use crate::harness::{aira, endpoint, inventory, small_stack, unique_stack, Workdir, NO_DNS};
use crate::proxy::{Faults, Proxy};

#[tokio::test]
async fn init_from_flags_writes_a_stack_that_validates_and_keeps_an_existing_one() {
    let work = Workdir::new();
    let dir = work.dir.path();
    let out = aira(dir, &["init", "--domain", "chat.example.org", "--model", "bedrock", "--stack", "demo"]).await;
    out.assert_code(0);
    let text = std::fs::read_to_string(dir.join("aira.yaml")).unwrap();
    for line in
        ["stack: demo", "  zone: example.org", "  name: chat.example.org", "  provider: bedrock", "  nat: false"]
    {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    let valid = aira(dir, &["validate", "--output", "json"]).await;
    valid.assert_code(0);
    assert_eq!(valid.json()["stack"], "demo");

    // An existing file is kept; --force replaces it.
    let again = aira(dir, &["init", "--model", "echo"]).await;
    again.assert_code(1);
    assert!(again.stderr.contains("aira.yaml exists; pass --force"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("aira.yaml")).unwrap(), text);
    aira(dir, &["init", "--model", "openai", "--force", "--region", "eu-west-1"]).await.assert_code(0);
    let valid = aira(dir, &["validate", "--output", "json"]).await;
    valid.assert_code(0);
    let text = std::fs::read_to_string(dir.join("aira.yaml")).unwrap();
    assert!(text.contains("region: eu-west-1\n") && text.contains("api_key: { secret: aira/openai }"), "{text}");

    // A bad flag names itself, and nothing is written.
    let bad = aira(dir, &["init", "--out", "bad.yaml", "--domain", "chat.example.org", "--zone", "other.net"]).await;
    bad.assert_code(1);
    assert!(bad.stderr.contains("--domain: `chat.example.org` is not inside the zone `other.net`"), "{}", bad.stderr);
    assert!(!dir.join("bad.yaml").exists());
}

#[tokio::test]
async fn completions_parse_in_their_shell_and_man_pages_render() {
    let work = Workdir::new();
    let dir = work.dir.path();
    let bash = aira(dir, &["completions", "bash"]).await;
    bash.assert_code(0);
    let script = work.write("aira.bash", &bash.stdout);
    let check = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    // Sourced, it completes the commands.
    let probe = "source \"$1\"; COMP_WORDS=(aira ro); COMP_CWORD=1; _aira aira ro aira; echo \"${COMPREPLY[*]}\"";
    let done = std::process::Command::new("bash").args(["-c", probe, "bash"]).arg(&script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "rollback", "{}", String::from_utf8_lossy(&done.stderr));
    for shell in ["zsh", "fish", "powershell"] {
        let out = aira(dir, &["completions", shell]).await;
        out.assert_code(0);
        assert!(out.stdout.contains("aira"), "{shell}: {}", out.stdout);
    }

    let page = aira(dir, &["man"]).await;
    page.assert_code(0);
    assert!(page.stdout.starts_with(".ie") && page.stdout.contains(".TH aira 1"), "{}", page.stdout);
    aira(dir, &["man", "--out", "pages"]).await.assert_code(0);
    for name in ["aira.1", "aira-up.1", "aira-init.1", "aira-dlq-redrive.1"] {
        let text = std::fs::read_to_string(dir.join("pages").join(name)).unwrap();
        assert!(text.contains(".TH"), "{name}");
    }
}

/// Runs `aira ARGS` on a pseudo-terminal (`script`), with `env` (`K=V …`); its transcript.
async fn on_a_terminal(dir: &std::path::Path, env: &str, args: &str) -> String {
    let command = format!("env {env} {} {args}", env!("CARGO_BIN_EXE_aira"));
    let out = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(dir)
        .env("AIRA_DNS_RESOLVER", NO_DNS)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "aira {args}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[tokio::test]
async fn on_a_terminal_the_operations_in_flight_are_shown_live_with_their_timers() {
    // CreateVpc held 2.5 s: the VPC's line is on screen long enough for its timer to reach 2 s.
    let faults = Faults { slow: Some(("CreateVpc", Duration::from_millis(2500))), ..Default::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    let work = Workdir::new();
    let stack = unique_stack("live");
    work.write("aira.yaml", &small_stack(&stack));
    let live = on_a_terminal(work.dir.path(), "", &format!("up --yes --endpoint-url {}", proxy.url)).await;
    // The view redraws in place (line clears, cursor up) a line per operation, with its timer.
    assert!(live.contains("\x1b[2K") && live.contains("\x1b[1A"), "no live redraw:\n{live}");
    assert!(live.contains("  2s\x1b[0m creating ec2.vpc vpc"), "no 2 s timer on the VPC's line:\n{live}");
    // What finished stays above it, as lines.
    // (At least the 2.5 s hold; more on a busy machine or while the IPv6 block associates.)
    let took = live.split("created ec2.vpc vpc in ").nth(1).and_then(|t| t.split('s').next()?.parse::<f64>().ok());
    assert!(took.is_some_and(|t| t >= 2.5), "{took:?}: {live}");
    assert!(live.contains("Applied: "), "{live}");

    // AIRA_PROGRESS=plain: the lines of a log, even on a terminal.
    let plain =
        on_a_terminal(work.dir.path(), "AIRA_PROGRESS=plain", &format!("down --yes --endpoint-url {}", proxy.url))
            .await;
    assert!(!plain.contains("\x1b[2K") && !plain.contains("\x1b[1A"), "redrawn:\n{plain}");
    assert!(plain.contains("s]\x1b[0m deleting ec2.vpc vpc"), "{plain}");
    assert!(inventory(&stack).await.is_empty(), "left after down");
}
