//! Waiting and reading: the next thing that may change a decision (an event, a finished command,
//! a tick, the poll, the lock's renewal), then the records it points at. Events only say what
//! to read; the records (and the control value) are what the rollout decides on.

use super::*;

impl<C: Io> Engine<C> {
    /// Waits for the next thing that may change what the rollout decides.
    pub(super) async fn wait(
        &mut self,
        rollout: &mut Rollout,
        events: &mut mpsc::Receiver<Followed>,
        state: &mut Looping,
        progress: &Progress,
        interrupt: &CancellationToken,
        waits: Waits<'_>,
    ) -> Option<Stop> {
        tokio::select! {
            biased;
            () = interrupt.cancelled() => return Some(Stop::new(
                Status::Aborted,
                "interrupted; run `ebb rolling-restart --resume` to continue",
            )),
            followed = events.recv(), if state.events_open => match followed {
                Some(followed) => {
                    self.take(followed, rollout, state, progress);
                    // A burst is taken whole, then read once.
                    while state.dirty.len() < EVENT_BATCH {
                        let Ok(more) = events.try_recv() else { break };
                        self.take(more, rollout, state, progress);
                    }
                }
                None => state.events_open = false,
            },
            Some(done) = state.jobs.join_next_with_id(), if !state.jobs.is_empty() => {
                let (id, result) = match done {
                    Ok((id, result)) => (id, result),
                    Err(error) => (error.id(), Err(format!("the command's task failed: {error}"))),
                };
                if let Some((node, job)) = state.job_nodes.remove(&id) {
                    let input = match job {
                        Job::Exec => NodeInput::ExecDone(result),
                        Job::Check => NodeInput::CheckDone(result),
                    };
                    state.inputs.push((node, input));
                }
                // What the command did is judged on a read taken after it.
                state.read_all = true;
            }
            _ = waits.poll.tick() => state.read_all = true,
            _ = waits.renew.tick() => match self.io.renew(&self.lock).await {
                Ok(true) => state.last_renewed = Instant::now(),
                Ok(false) => return Some(Stop::lock_lost("")),
                Err(error) => {
                    tracing::warn!(%error, "renewing the rollout lock failed");
                    state.redis_down.get_or_insert_with(Instant::now);
                }
            },
            // The nodes in flight are read every tick whatever the events say: a timeout is
            // judged on a fresh read, and a lost event costs at most a tick.
            _ = waits.tick.tick() => {
                state.dirty.extend(rollout.in_flight().map(|r| r.name().clone()));
                state.read_control = true;
            }
        }
        if self.io.intake().take_overflow() {
            // Dropped events may have said anything: read everything, and trust no silence.
            rollout.missed_events = true;
            state.read_all = true;
        }
        None
    }

    /// Takes one item of the event stream: an event only marks what to read.
    pub(super) fn take(
        &self,
        followed: Followed,
        rollout: &mut Rollout,
        state: &mut Looping,
        progress: &Progress,
    ) {
        match followed {
            Followed::Event(event) => match state.obs.note_event(&event) {
                Wake::Node(name) if rollout.in_flight().any(|r| *r.name() == name) => {
                    state.dirty.insert(name);
                }
                Wake::All if self.policy.ephemeral_names => state.read_all = true,
                _ => {}
            },
            Followed::Subscribed => state.read_all = true,
            Followed::Lost(why) => {
                progress.note(&format!("lost the event subscription ({why}); retrying"));
                state.redis_down.get_or_insert_with(Instant::now);
                rollout.missed_events = true;
            }
        }
    }

    /// Reads what the wait said to read.
    pub(super) async fn refresh(&mut self, rollout: &mut Rollout, state: &mut Looping) {
        if std::mem::take(&mut state.read_control) {
            self.read_control(rollout, state).await;
        }
        let dirty = std::mem::take(&mut state.dirty);
        if std::mem::take(&mut state.read_all) {
            self.read_all(rollout, state).await;
        } else if !dirty.is_empty() {
            let names: Vec<NodeName> = dirty.into_iter().collect();
            self.read_some(rollout, &names, state).await;
        }
    }

    /// Takes the mode the rollout's control value asks for (one for another rollout is not
    /// this one's).
    pub(super) async fn read_control(&mut self, rollout: &mut Rollout, state: &mut Looping) {
        match self.io.control().await {
            Ok(Some(control)) if control.rollout == rollout.id => {
                if control.mode != rollout.mode {
                    tracing::info!(mode = control.mode.as_str(), by = %control.by, reason = %control.reason, "rollout mode changed");
                }
                rollout.set_mode(control.mode, Some(control.reason), Some(control.by));
            }
            Ok(_) => rollout.set_mode(Mode::Running, None, None),
            Err(error) => {
                tracing::warn!(%error, "reading the rollout's control value failed");
                state.redis_down.get_or_insert_with(Instant::now);
            }
        }
    }

    pub(super) async fn read_all(&mut self, rollout: &Rollout, state: &mut Looping) {
        state.obs.wall_ms = self.io.now_ms();
        match self.io.nodes().await {
            Ok(records) => {
                state.obs.apply_records(&records);
                state.redis_down = None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading node records failed");
                state.redis_down.get_or_insert_with(Instant::now);
                return;
            }
        }
        self.read_some(rollout, &[], state).await;
    }

    /// Reads the records of `names` and the own copies of every watched instance.
    pub(super) async fn read_some(
        &mut self,
        rollout: &Rollout,
        names: &[NodeName],
        state: &mut Looping,
    ) {
        let watched: Vec<_> = rollout
            .in_flight()
            .filter_map(|r| Some((r.name().clone(), r.old_instance()?)))
            .collect();
        state.obs.wall_ms = self.io.now_ms();
        match self.io.read(names, &watched).await {
            Ok(snapshot) => {
                for (name, record) in &snapshot.records {
                    state.obs.apply_record(name, record.as_ref());
                }
                for (instance, copy) in &snapshot.instances {
                    state.obs.apply_instance(*instance, copy.as_ref());
                }
                state.redis_down = None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading node records failed");
                state.redis_down.get_or_insert_with(Instant::now);
            }
        }
    }
}
