//! The canonical stack (`stacks/aira.yaml`) without its domain, services and model: its network
//! and queues, for the network tests and the network benchmark. Without the model nothing needs
//! egress, so its NAT gateways go too.

pub fn network_and_queues(stack: &str) -> String {
    let text = std::fs::read_to_string(repo_file("stacks/aira.yaml")).unwrap();
    let mut keep = true;
    let mut out = String::new();
    for line in text.lines() {
        if !line.starts_with([' ', '#']) {
            keep = !["domain:", "services:", "llm:"].iter().any(|k| line.starts_with(k));
        }
        if keep && line.trim() != "nat: true" {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.replace("stack: aira\n", &format!("stack: {stack}\n"))
}

/// A file of the repository, found above the folder of the package cargo runs (the tests' or
/// the bench's), read at run time: `env!("CARGO_MANIFEST_DIR")` in this library keeps the
/// folder of the checkout that compiled it, wrong for another checkout that shares the build
/// folder (`CARGO_TARGET_DIR`).
pub fn repo_file(relative: &str) -> std::path::PathBuf {
    let from: std::path::PathBuf = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::env::current_dir().expect("a current folder"));
    from.ancestors()
        .map(|d| d.join(relative))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{relative} in no folder above {}", from.display()))
}
