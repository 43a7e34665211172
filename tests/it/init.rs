//! Terminal habits, as a CI job meets them (no terminal on stdin): `aira init` from flags writes
//! a stack `aira validate` accepts and never overwrites one; `aira completions` prints scripts
//! their shells parse; `aira man` renders a page per command.

use crate::harness::{aira, Workdir};

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
