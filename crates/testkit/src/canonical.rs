//! The canonical stack (`stacks/aira.yaml`) without its domain, services and model: its network
//! and queues, for the network tests and the network benchmark. Without the model nothing needs
//! egress, so its NAT gateways go too.

pub fn network_and_queues(stack: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../stacks/aira.yaml")).unwrap();
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
