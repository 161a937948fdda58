//! The status page of `ebb serve` (`GET /`) in a real headless Chromium, through a real rolling
//! restart: Redis in a container, three supervised nodes with live clients, two `ebb serve`
//! (a leader and a standby), the rollout queued the way a pipeline does it (`ebb request
//! rolling-restart --wait`). One page load per service, never reloaded, is read through the
//! DevTools protocol while the rollout runs (the page polls `/api/status` every second): every
//! node's row with its name and state, the rollout with its id, its request, each planned node's
//! phase and the one node in flight, a drain as it happens, leadership on both pages; then the
//! rollout's end, and the standby's page showing it leading once the leader stopped. The clients
//! lose nothing, and the rollout completes.
//!
//! Artifacts, written on every run (the paths are printed; `--no-capture` shows them):
//! `target/test-artifacts/serve-page.png`, a 1200x800 screenshot of the leader's page with the
//! rollout in flight, and `target/test-artifacts/serve-page.html`, its DOM at that moment.
//!
//! Needs Chromium: Debian's `chromium` (`.ci/run` installs it) or `EBB_CHROMIUM`; without it the
//! test fails saying so.

use ebb_tests::browser::{self, Browser, Tab};
use ebb_tests::containers::report_of;
use ebb_tests::fleet::{Supervised, ebb_spawn, node_args};
use ebb_tests::process::Proc;
use ebb_tests::redis::Redis;
use ebb_tests::traffic::Traffic;
use ebb_tests::{artifacts, eventually, http};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "page";
const TOKEN: &str = "page-test-api-token";
const REQUEST: &str = "page-rollout-1";
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// What the page shows, read from its DOM: the hooks the page documents (`page.rs`) and the
/// text a person sees (`innerText`: only what is rendered), the bars' drawn widths.
const SNAPSHOT: &str = r##"(() => {
  const q = s => document.querySelector(s);
  const box = q("#rollout"), lead = q("#leadership");
  return {
    refreshes: Number(document.body.dataset.refreshes),
    stale: "stale" in document.body.dataset,
    error: q("#error").innerText,
    title: document.title,
    role: lead.dataset.role,
    role_text: lead.innerText,
    leader: lead.dataset.leader || "",
    lease_text: q("#lease").innerText,
    summary: q("#fleet-summary").innerText,
    nodes: [...document.querySelectorAll("#nodes tr.node")].map(r => ({
      name: r.dataset.node,
      state: r.dataset.state,
      instance: r.dataset.instance,
      connections: Number(r.dataset.connections),
      text: r.innerText,
      bar_px: r.querySelector(".bar").getBoundingClientRect().width,
    })),
    rollout: {
      status: box.dataset.status,
      id: box.dataset.rolloutId || null,
      request: box.dataset.request || null,
      text: box.innerText,
      in_flight: (q("#rollout-in-flight")?.dataset.nodes || "").split(" ").filter(Boolean),
      in_flight_text: q("#rollout-in-flight")?.innerText || "",
      plan: [...document.querySelectorAll("#rollout-plan li")].map(li => ({
        name: li.dataset.node,
        phase: li.dataset.phase,
        in_flight: li.dataset.inFlight === "true",
        text: li.innerText,
      })),
    },
  };
})()"##;

/// One `ebb serve --listen 127.0.0.1:0 --api-token T` of the test's cluster.
struct Serve {
    proc: Proc,
    addr: SocketAddr,
}

impl Serve {
    async fn start(redis: &Redis) -> Serve {
        let args = ["serve", "--listen", "127.0.0.1:0", "--api-token", TOKEN];
        let proc = ebb_spawn(redis.url(), CLUSTER, &args);
        let line = proc.wait_log("ebb serve listening", SECS(20)).await;
        let addr = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        Serve { proc, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    async fn status(&self) -> Value {
        http::get(self.addr, "/api/status").await.json()
    }

    /// SIGTERM, and a clean exit.
    async fn stop(mut self) {
        self.proc.signal(Signal::SIGTERM);
        let status = self.proc.wait(SECS(20)).await;
        assert!(status.success(), "ebb serve exits 0 on SIGTERM: {status}");
    }
}

/// Reads the page until `pred` holds on what it shows; that snapshot.
async fn page_when(
    browser: &Browser,
    tab: &Tab,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("the page to show {what}"), SECS(60), || async {
        let shown = browser.eval(tab, SNAPSHOT).await;
        pred(&shown).then_some(shown)
    })
    .await
}

fn rows(shown: &Value) -> BTreeMap<String, Value> {
    shown["nodes"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| (row["name"].as_str().unwrap_or("").to_owned(), row.clone()))
        .collect()
}

fn has_every_node(shown: &Value) -> bool {
    rows(shown).keys().map(String::as_str).eq(NAMES)
}

fn all_active(shown: &Value) -> bool {
    has_every_node(shown) && rows(shown).values().all(|row| row["state"] == "active")
}

/// The rollout of [`REQUEST`] running, with exactly one node in flight (`--max-parallel 1`).
fn one_in_flight(shown: &Value) -> bool {
    let r = &shown["rollout"];
    let plan = r["plan"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let flying: Vec<&Value> = plan.iter().filter(|n| n["in_flight"] == true).collect();
    r["status"] == "running"
        && r["request"] == REQUEST
        && r["id"].is_string()
        && plan.len() == NAMES.len()
        && flying.len() == 1
        && r["in_flight"] == serde_json::json!([flying[0]["name"]])
}

#[tokio::test]
async fn the_status_page_follows_a_rolling_restart_in_a_real_browser() {
    // First, so a machine without Chromium fails at once, saying how to get it.
    browser::locate();
    let redis = Redis::run().await;
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for name in NAMES {
        let args = node_args(redis.url(), CLUSTER, &["--close-spread", "2s"]);
        let node = Supervised::start(name, args).await;
        urls.push(node.ws_url().await);
        nodes.push(node);
    }
    let traffic = Traffic::start(&urls, 30);
    let leader = Serve::start(&redis).await;
    eventually("the first ebb serve to lead", SECS(20), || async {
        (leader.status().await["leader"] == true).then_some(())
    })
    .await;
    let standby = Serve::start(&redis).await;
    assert_eq!(
        standby.status().await["leader"],
        false,
        "the second stands by"
    );

    let browser = Browser::launch().await;
    eprintln!("browser: {}", browser.version);
    let page = browser.open(&leader.url()).await;
    let standby_page = browser.open(&standby.url()).await;

    // Before: the fleet, every node active with its clients, no rollout; this service leads.
    let idle = page_when(&browser, &page, "the idle fleet", |s| {
        all_active(s)
            && s["rollout"]["status"] == "none"
            && rows(s).values().all(|row| row["connections"] == 10)
    })
    .await;
    assert_eq!(idle["role"], "leader", "{idle}");
    assert_eq!(idle["role_text"], "leader", "{idle}");
    assert!(
        !idle["stale"].as_bool().unwrap() && idle["error"] == "",
        "{idle}"
    );
    assert!(
        idle["rollout"]["text"] == "no rollout running",
        "{}",
        idle["rollout"]
    );
    assert!(
        idle["summary"]
            .as_str()
            .unwrap()
            .contains("3 node(s), 3 active, 30 connection(s)"),
        "{}",
        idle["summary"]
    );
    for (name, row) in rows(&idle) {
        let text = row["text"].as_str().unwrap();
        assert!(text.contains(&name) && text.contains("active"), "{row}");
        assert!(text.contains("10"), "the connections shown: {row}");
        // Equal counts, equal bars, each drawn the track's full 220 px.
        let bar = row["bar_px"].as_f64().unwrap();
        assert!((bar - 220.0).abs() < 1.0, "{name}'s bar is {bar} px");
    }
    let before: BTreeMap<String, Value> = rows(&idle)
        .into_iter()
        .map(|(name, row)| (name, row["instance"].clone()))
        .collect();
    let leader_pid = leader.proc.pid();
    let standing_by = page_when(&browser, &standby_page, "a standby", |s| {
        s["role"] == "standby" && has_every_node(s)
    })
    .await;
    assert!(
        standing_by["leader"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(pid {leader_pid})")),
        "the standby names the leader: {standing_by}"
    );
    assert!(
        standing_by["lease_text"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "the leader is {}",
                standing_by["leader"].as_str().unwrap()
            )),
        "{standing_by}"
    );

    // The pipeline's step: queue a rolling restart and follow it to its end.
    let mut request = ebb_spawn(
        redis.url(),
        CLUSTER,
        &[
            "request",
            "rolling-restart",
            "--id",
            REQUEST,
            "--max-parallel",
            "1",
            "--settle",
            "1s",
            "--wait",
            "--timeout",
            "2m",
        ],
    );

    // While it runs: every node's row, the rollout with its id and the node in flight.
    let live = page_when(
        &browser,
        &page,
        "the rollout with one node in flight",
        |s| one_in_flight(s) && has_every_node(s),
    )
    .await;
    let shot = artifacts::path("serve-page.png");
    browser.screenshot(&page, &shot).await;
    let html = artifacts::path("serve-page.html");
    std::fs::write(&html, browser.dom(&page).await).expect("write the DOM");
    eprintln!(
        "screenshot of the status page mid-rollout: {}",
        shot.display()
    );
    eprintln!("its DOM: {}", html.display());

    let rollout = &live["rollout"];
    let id = rollout["id"].as_str().unwrap().to_owned();
    let truth = leader.status().await["rollout"].clone();
    assert_eq!(
        truth["id"],
        id.as_str(),
        "the page shows the running rollout"
    );
    let text = rollout["text"].as_str().unwrap();
    assert!(
        text.contains(&id) && text.contains(REQUEST),
        "the rollout's id and request, visible: {text:?}"
    );
    assert!(text.contains("max parallel 1"), "{text:?}");
    let flying = rollout["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["in_flight"] == true)
        .unwrap();
    let (name, phase) = (
        flying["name"].as_str().unwrap(),
        flying["phase"].as_str().unwrap(),
    );
    assert!(
        rollout["in_flight_text"] == format!("in flight: {name} ({phase})"),
        "{rollout}"
    );
    let planned: Vec<&str> = rollout["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let (node, phase) = (n["name"].as_str().unwrap(), n["phase"].as_str().unwrap());
            assert!(
                n["text"].as_str().unwrap().contains(node)
                    && n["text"].as_str().unwrap().contains(phase),
                "each planned node's phase, visible: {n}"
            );
            node
        })
        .collect();
    assert_eq!(planned, NAMES, "the plan, in order");
    for (name, row) in rows(&live) {
        let (text, state) = (
            row["text"].as_str().unwrap(),
            row["state"].as_str().unwrap(),
        );
        assert!(
            ["active", "draining", "drained", "starting"].contains(&state),
            "{row}"
        );
        assert!(text.contains(&name) && text.contains(state), "{row}");
    }
    assert!(
        live["title"].as_str().unwrap().contains("rollout"),
        "{}",
        live["title"]
    );

    // A drain as it happens: the node in flight draining, in its row and in the plan.
    let draining = page_when(&browser, &page, "a node draining", |s| {
        let draining: Vec<String> = rows(s)
            .into_iter()
            .filter(|(_, row)| row["state"] == "draining")
            .map(|(name, _)| name)
            .collect();
        one_in_flight(s)
            && draining.len() == 1
            && s["rollout"]["plan"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == draining[0].as_str() && n["phase"] == "draining")
    })
    .await;
    assert!(
        draining["rollout"]["in_flight_text"]
            .as_str()
            .unwrap()
            .ends_with("(draining)"),
        "{}",
        draining["rollout"]
    );
    // The standby's page shows the same rollout, and still stands by.
    let seen = page_when(
        &browser,
        &standby_page,
        "the rollout, on the standby",
        |s| s["rollout"]["id"] == id.as_str(),
    )
    .await;
    assert_eq!(seen["role"], "standby", "{seen}");

    // The end: the rollout completed, and the same page load shows it gone and every node
    // replaced (it kept polling: no reload).
    let (status, stdout) = request.wait_with_output(SECS(120)).await;
    let report = report_of(&stdout.join("\n"));
    assert!(status.success(), "{status}: {report} {:?}", request.logs());
    assert_eq!(report["status"], "completed", "{report}");
    let result = http::get(leader.addr, &format!("/api/rollouts/{REQUEST}"))
        .await
        .json();
    assert_eq!(result["status"], "completed", "{result}");
    let after = page_when(&browser, &page, "the rollout's end", |s| {
        all_active(s)
            && s["rollout"]["status"] == "none"
            && rows(s)
                .iter()
                .all(|(name, row)| row["instance"] != before[name])
    })
    .await;
    assert!(
        after["refreshes"].as_u64().unwrap() > live["refreshes"].as_u64().unwrap(),
        "one page load, polling: {} then {}",
        live["refreshes"],
        after["refreshes"]
    );
    for node in report["nodes"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        assert_eq!(
            node["new_instance"],
            rows(&after)[name]["instance"],
            "{node}"
        );
    }

    traffic.finish(SECS(30)).await.assert_nothing_lost();

    // Leadership moves: the leader stops (SIGTERM releases the lease) and the standby's page,
    // the same load still, shows it leading.
    leader.stop().await;
    let stopped = std::time::Instant::now();
    let took_over = page_when(&browser, &standby_page, "the standby leading", |s| {
        s["role"] == "leader"
    })
    .await;
    eprintln!(
        "the standby's page showed it leading {:?} after the leader exited",
        stopped.elapsed()
    );
    assert_eq!(took_over["role_text"], "leader", "{took_over}");
    assert!(
        took_over["lease_text"]
            .as_str()
            .unwrap()
            .ends_with("carries out requests"),
        "{took_over}"
    );
    browser.close().await;
    standby.stop().await;
    drop(nodes);
}
