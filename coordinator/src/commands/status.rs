//! `ebb status [--json]`: the nodes of the cluster, and the rollout in progress if any.

use super::{Error, Outcome, Target};
use crate::rollout::engine::Saved;
use ebb_proto::NodeRecord;
use serde_json::json;

pub async fn run(target: &Target, as_json: bool) -> Result<Outcome, Error> {
    let mut cluster = target.connect().await?;
    let nodes = cluster.nodes().await?;
    let rollout = cluster
        .rollout_state()
        .await?
        .map(|json| super::rolling_restart::read_saved(&json));
    if as_json {
        let nodes: Vec<_> = nodes.iter().map(record_json).collect();
        let rollout = rollout.as_ref().map(rollout_json);
        println!(
            "{}",
            json!({ "cluster": target.cluster, "nodes": nodes, "rollout": rollout })
        );
        return Ok(Outcome::Success);
    }
    print_nodes(target, &nodes);
    if let Some(rollout) = &rollout {
        println!("{}", rollout_line(rollout));
    }
    Ok(Outcome::Success)
}

/// The nodes (as `status --json` lists them) and the saved rollout (or null), for the API.
pub async fn snapshot(
    cluster: &mut crate::cluster::Cluster,
) -> Result<(serde_json::Value, serde_json::Value), crate::cluster::ClusterError> {
    let nodes = cluster.nodes().await?;
    let rollout = cluster
        .rollout_state()
        .await?
        .map(|json| rollout_json(&super::rolling_restart::read_saved(&json)));
    let nodes: Vec<_> = nodes.iter().map(record_json).collect();
    Ok((json!(nodes), rollout.unwrap_or(serde_json::Value::Null)))
}

/// The saved rollout as JSON: id, status (running, paused, aborted...), progress, in flight.
fn rollout_json(saved: &Result<Saved, String>) -> serde_json::Value {
    let saved = match saved {
        Ok(saved) => saved,
        Err(why) => return json!({ "status": "unreadable", "reason": why }),
    };
    let r = &saved.rollout;
    let status = match (saved.status.as_str(), r.mode) {
        ("running", mode) => mode.as_str(),
        (other, _) => other,
    };
    let in_flight: Vec<_> = r
        .in_flight()
        .map(|n| json!({ "name": n.name(), "phase": n.phase.name() }))
        .collect();
    let nodes: Vec<_> = r
        .nodes
        .iter()
        .map(|n| json!({ "name": n.name(), "phase": n.phase.name() }))
        .collect();
    json!({
        "id": r.id,
        "request": saved.request,
        "status": status,
        "reason": r.mode_reason,
        "by": r.mode_by,
        "done": r.done(),
        "nodes": r.nodes.len(),
        "in_flight": in_flight,
        "plan": nodes,
        "max_parallel": saved.policy.max_parallel.to_string(),
    })
}

/// One line for people.
fn rollout_line(saved: &Result<Saved, String>) -> String {
    let v = rollout_json(saved);
    if v["status"] == "unreadable" {
        return format!("rollout: saved state unreadable ({})", v["reason"]);
    }
    let in_flight: Vec<String> = v["in_flight"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{} ({})",
                n["name"].as_str().unwrap_or("?"),
                n["phase"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let mut line = format!(
        "rollout {}: {}, {} of {} node(s) done, in flight: {}",
        v["id"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?"),
        v["done"],
        v["nodes"],
        if in_flight.is_empty() {
            "none".to_owned()
        } else {
            in_flight.join(", ")
        }
    );
    if let Some(reason) = v["reason"].as_str() {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

fn print_nodes(target: &Target, nodes: &[NodeRecord]) {
    if nodes.is_empty() {
        println!("no nodes registered in cluster {:?}", target.cluster);
        return;
    }
    println!(
        "{:<20} {:<9} {:<9} {:>11} {:>8} {:<10} URL",
        "NAME", "INSTANCE", "STATE", "CONNECTIONS", "AGE", "VERSION"
    );
    let now = ebb_proto::time::now_ms();
    for node in nodes {
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
