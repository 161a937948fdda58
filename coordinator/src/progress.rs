//! Live progress of a rollout: on a terminal, one indicatif line per node with its state and
//! draining count; otherwise (CI, pipes) a plain line per change on stderr; or, for `ebb serve`,
//! every change as a [`Line`] on a channel (which the service publishes for `ebb watch`).

use ebb_proto::NodeName;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    last: HashMap<String, String>,
    /// Plain lines: when each node's line was last printed, so counts that move every few
    /// milliseconds print about once a second rather than at every change.
    printed: HashMap<String, (String, Instant)>,
    /// Print nothing (engines run by tests and services).
    silent: bool,
    /// Send every change here instead of printing it (bounded: a full channel drops the line).
    channel: Option<tokio::sync::mpsc::Sender<Line>>,
}

/// One change of a rollout's progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    /// The node it is about; none for a rollout-wide note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub message: String,
    /// The node is finished.
    #[serde(default)]
    pub done: bool,
}

/// The part of a message that is not a number, so "3 left" and "2 left" count as one kind.
fn shape(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// How often a plain line about the same thing may repeat.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// Bars on a terminal (unless `quiet`), lines otherwise.
    pub fn new(plan: &[NodeName], quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                bars: None,
                last: HashMap::new(),
                printed: HashMap::new(),
                silent: false,
                channel: None,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix:<20} {wide_msg}")
            .expect("a valid template");
        let bars = plan
            .iter()
            .map(|name| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(name.to_string());
                bar.set_message("pending");
                bar.enable_steady_tick(Duration::from_millis(120));
                (name.to_string(), bar)
            })
            .collect();
        Progress {
            bars: Some((multi, bars)),
            last: HashMap::new(),
            printed: HashMap::new(),
            silent: false,
            channel: None,
        }
    }

    /// Progress that prints nothing.
    pub fn silent() -> Self {
        Progress {
            bars: None,
            last: HashMap::new(),
            printed: HashMap::new(),
            silent: true,
            channel: None,
        }
    }

    /// Progress sent to `channel`, one [`Line`] per change, and not printed.
    pub fn to_channel(channel: tokio::sync::mpsc::Sender<Line>) -> Self {
        Progress {
            channel: Some(channel),
            ..Progress::silent()
        }
    }

    fn send(&self, node: Option<&str>, message: &str, done: bool) {
        if let Some(channel) = &self.channel {
            let _ = channel.try_send(Line {
                node: node.map(str::to_owned),
                message: message.to_owned(),
                done,
            });
        }
    }

    /// Sets what a node is doing (printed only when it changes).
    pub fn node(&mut self, name: &NodeName, message: String) {
        let name = name.as_str();
        if self.last.get(name) == Some(&message) {
            return;
        }
        self.last.insert(name.to_owned(), message.clone());
        self.send(Some(name), &message, false);
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.get(name) {
                    bar.set_message(message);
                }
            }
            None => {
                let now = Instant::now();
                let kind = shape(&message);
                let repeat = self
                    .printed
                    .get(name)
                    .is_some_and(|(k, at)| *k == kind && now.duration_since(*at) < PLAIN_EVERY);
                if !repeat && !self.silent {
                    eprintln!("ebb: {name}: {message}");
                    self.printed.insert(name.to_owned(), (kind, now));
                }
            }
        }
    }

    /// Marks a node finished.
    pub fn finish_node(&mut self, name: &NodeName, message: String) {
        let name = name.as_str();
        self.send(Some(name), &message, true);
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.get(name) {
                    bar.finish_with_message(message);
                }
            }
            None if self.silent => {}
            None => eprintln!("ebb: {name}: {message}"),
        }
    }

    /// A line that is not about one node.
    pub fn note(&self, line: &str) {
        self.send(None, line, false);
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None if self.silent => {}
            None => eprintln!("ebb: {line}"),
        }
    }

    /// Stops every bar.
    pub fn finish(&mut self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}
