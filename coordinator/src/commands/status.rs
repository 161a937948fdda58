//! `ebb status [--json]`: the nodes of the cluster.

use super::{Error, Outcome, Target};
use ebb_proto::NodeRecord;
use serde_json::json;

pub async fn run(target: &Target, as_json: bool) -> Result<Outcome, Error> {
    let mut cluster = target.connect().await?;
    let nodes = cluster.nodes().await?;
    if as_json {
        let nodes: Vec<_> = nodes.iter().map(record_json).collect();
        println!("{}", json!({ "cluster": target.cluster, "nodes": nodes }));
        return Ok(Outcome::Success);
    }
    if nodes.is_empty() {
        println!("no nodes registered in cluster {:?}", target.cluster);
        return Ok(Outcome::Success);
    }
    println!(
        "{:<20} {:<9} {:<9} {:>11} {:>8} {:<10} URL",
        "NAME", "INSTANCE", "STATE", "CONNECTIONS", "AGE", "VERSION"
    );
    let now = ebb_proto::time::now_ms();
    for node in &nodes {
        let age = humantime::format_duration(std::time::Duration::from_secs(
            now.saturating_sub(node.started_at_ms) / 1000,
        ));
        let connections = match node.capacity {
            Some(capacity) => format!("{}/{capacity}", node.connections),
            None => node.connections.to_string(),
        };
        println!(
            "{:<20} {:<9} {:<9} {:>11} {:>8} {:<10} {}",
            node.name,
            &node.instance.simple().to_string()[..8],
            node.state,
            connections,
            age.to_string(),
            node.version,
            node.url
        );
    }
    Ok(Outcome::Success)
}

fn record_json(node: &NodeRecord) -> serde_json::Value {
    json!({
        "name": node.name,
        "instance": node.instance,
        "state": node.state,
        "connections": node.connections,
        "capacity": node.capacity,
        "url": node.url,
        "version": node.version,
        "started_at_ms": node.started_at_ms,
        "updated_at_ms": node.updated_at_ms,
    })
}
