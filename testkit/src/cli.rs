//! What `lego` commands print, parsed: `lego run --stats` counters and `lego ps --json`.

/// The counter `name` of `lego run --stats` output (the last number on its line).
pub fn stat(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no '{name}' in {stderr}"))
}

/// A component as `lego ps --json` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// The id the global manager gave it.
    pub id: u64,
    /// `Memory`, `Storage` or `Processor`.
    pub role: String,
    /// The address it listens on.
    pub addr: String,
    /// Whether it is up (heard from within three heartbeats).
    pub up: bool,
    /// Milliseconds since the manager last heard from it.
    pub last_seen_ms: u64,
    /// Requests it has served, as of its last heartbeat.
    pub requests: u64,
}

/// The output of `lego ps --json`, which must have succeeded: its components in id order, and
/// the whole document (for the vNodes).
pub fn ps_json(out: &std::process::Output) -> (Vec<Component>, serde_json::Value) {
    assert!(out.status.success(), "lego ps: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lego ps --json prints JSON");
    let components = v["components"]
        .as_array()
        .expect("a components array")
        .iter()
        .map(|c| {
            let u64_at = |v: &serde_json::Value, what| v.as_u64().unwrap_or_else(|| panic!("{what} is not a number in {c}"));
            let str_at = |v: &serde_json::Value, what| v.as_str().unwrap_or_else(|| panic!("{what} is not a string in {c}")).to_string();
            Component {
                id: u64_at(&c["id"], "id"),
                role: str_at(&c["role"], "role"),
                addr: str_at(&c["addr"], "addr"),
                up: c["up"].as_bool().unwrap_or_else(|| panic!("up is not a boolean in {c}")),
                last_seen_ms: u64_at(&c["last_seen_ms"], "last_seen_ms"),
                requests: u64_at(&c["load"]["requests"], "load.requests"),
            }
        })
        .collect();
    (components, v)
}
