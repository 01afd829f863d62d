//! Group pickups through the gateway, several at once, driven by one [`Phones`] switchboard.
//! Lane `i` has a caller, a callee in call group `lane<i>` and a picker in pickup group
//! `lane<i>`: the caller dials the callee; when the callee's phone rings, the picker dials
//! `*8`; the gateway cancels the callee's INVITE and connects the caller to the picker
//! (INVITE with Replaces to the picker's phone, or the fallback bridge); the caller hangs up.
//! A pickup counts as completed when the caller's BYE got its 200 (the gateway sends it once
//! the CDR is on disk). Then the lane starts the next one. Each failure is recorded with the
//! step it happened at and the status code that ended it; failures the network explains (one
//! of our phones' requests unanswered for 64·T1) are kept apart from the others.

use crate::phones::{Event, Phones, PhonesError};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct PickupPlan {
    /// The first caller's extension number (lane `i` uses `callers + i`).
    pub callers: u32,
    /// The first callee's extension number.
    pub callees: u32,
    /// The first picker's extension number.
    pub pickers: u32,
    /// Pickups under way at once.
    pub lanes: u32,
    /// Pickups in all.
    pub pickups: u32,
    /// A pickup not completed this long after its caller dialled fails.
    pub timeout: Duration,
}

/// The password of extension `number` (what [`crate::servers::extension_blocks`] writes).
fn password(number: u32) -> String {
    format!("pw{number}")
}

impl PickupPlan {
    /// The gateway's `[[extension]]` blocks for the plan.
    pub fn extensions(&self) -> String {
        (0..self.lanes)
            .map(|i| {
                format!(
                    "[[extension]]\nnumber = \"{}\"\npassword = \"{}\"\n\
[[extension]]\nnumber = \"{}\"\npassword = \"{}\"\ncall_groups = [\"lane{i}\"]\n\
[[extension]]\nnumber = \"{}\"\npassword = \"{}\"\npickup_groups = [\"lane{i}\"]\n",
                    self.callers + i,
                    password(self.callers + i),
                    self.callees + i,
                    password(self.callees + i),
                    self.pickers + i,
                    password(self.pickers + i),
                )
            })
            .collect()
    }

    /// Registers the callees and the pickers with the switchboard.
    pub fn register(&self, phones: &Phones) -> Result<(), PhonesError> {
        for n in (0..self.lanes).flat_map(|i| [self.callees + i, self.pickers + i]) {
            phones.register(&n.to_string(), &password(n))?;
        }
        Ok(())
    }

    /// The picker of the lane whose callee is `callee`.
    pub fn picker_of(&self, callee: &str) -> Option<String> {
        let lane = callee.parse::<u32>().ok()?.checked_sub(self.callees)?;
        (lane < self.lanes).then(|| (self.pickers + lane).to_string())
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct PickupReport {
    /// Pickups started.
    pub attempted: u64,
    /// Pickups that went all the way to the caller's BYE and its 200.
    pub completed: u64,
    /// Why the others failed, with counts, when the network does not explain it.
    pub failures: BTreeMap<String, u64>,
    /// Pickups that failed because one of our phones' INVITEs or BYEs went unanswered until
    /// Timer B/F (every retransmission or its answer lost), by which request.
    pub network_failures: BTreeMap<String, u64>,
    /// The picker's `*8` INVITE to the caller's 200 OK, microseconds.
    pub latency_us: Histogram<u64>,
    /// INVITEs that rang a callee (a callee rung again after a failed pickup counts twice).
    pub callee_invites: u64,
    /// Of those, the ones CANCELled.
    pub callee_cancels: u64,
    /// Pickers connected by the gateway's bridge (their own `*8` INVITE answered 200)
    /// instead of through Replaces.
    pub bridged: u64,
}

/// Where a lane's pickup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The caller dialled; the callee's phone has not rung yet.
    Dialling,
    /// The picker dialled `*8`; the caller has no 200 yet.
    Picking,
    /// The caller got its 200 and sent BYE.
    HangingUp,
    /// The pickup failed; the caller's call is being ended.
    Clearing,
}

impl Step {
    fn waiting_for(self) -> &'static str {
        match self {
            Step::Dialling => "the callee's phone to ring",
            Step::Picking => "the caller's 200 OK after *8",
            Step::HangingUp => "the 200 to the caller's BYE",
            Step::Clearing => "the failed call to end",
        }
    }
}

/// Why a pickup failed.
#[derive(Debug, Clone)]
enum Failure {
    /// One of our requests went unanswered for 64·T1.
    Network(String),
    /// Anything else.
    Other(String),
}

struct Lane {
    caller_call: String,
    picker_call: Option<String>,
    step: Step,
    picked_at: Instant,
    deadline: Instant,
    failure: Option<Failure>,
}

/// The run's state: the lanes and what identifies their calls.
struct Run<'a> {
    plan: &'a PickupPlan,
    lanes: Vec<Option<Lane>>,
    started: u32,
    /// Call-IDs of our calls (callers' and pickers') and callees' extensions, to lanes.
    lane_of_call: HashMap<String, usize>,
    callee_calls: HashSet<String>,
    /// The pickers' `*8` calls (their 200 may come after the lane moved on).
    picker_calls: HashSet<String>,
    report: PickupReport,
}

/// Runs the plan's pickups (the extensions registered, the gateway configured with
/// [`PickupPlan::extensions`]).
pub fn run(phones: &mut Phones, plan: &PickupPlan) -> Result<PickupReport, PhonesError> {
    let mut run = Run {
        plan,
        lanes: (0..plan.lanes).map(|_| None).collect(),
        started: 0,
        lane_of_call: HashMap::new(),
        callee_calls: HashSet::new(),
        picker_calls: HashSet::new(),
        report: PickupReport {
            attempted: 0,
            completed: 0,
            failures: BTreeMap::new(),
            network_failures: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)
                .map_err(|e| PhonesError::Io(std::io::Error::other(e.to_string())))?,
            callee_invites: 0,
            callee_cancels: 0,
            bridged: 0,
        },
    };
    for lane in 0..run.lanes.len() {
        run.start(phones, lane, Instant::now());
    }
    while run.lanes.iter().any(Option::is_some) {
        let deadline = run
            .lanes
            .iter()
            .flatten()
            .map(|lane| lane.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        match phones.next_event(deadline)? {
            Some(event) => run.on_event(phones, event, Instant::now()),
            None => run.expire(phones, Instant::now()),
        }
    }
    // The callees' CANCELs may still be on their way (retransmitted): wait for them.
    let drain = Instant::now() + plan.timeout;
    while run.report.callee_cancels < run.report.callee_invites {
        match phones.next_event(drain)? {
            Some(event) => run.on_event(phones, event, Instant::now()),
            None => break,
        }
    }
    Ok(run.report)
}

impl Run<'_> {
    /// Starts the next pickup in `lane`, if any is left.
    fn start(&mut self, phones: &mut Phones, lane: usize, now: Instant) {
        if self.started >= self.plan.pickups {
            self.lanes[lane] = None;
            return;
        }
        self.started += 1;
        self.report.attempted += 1;
        let caller = self.plan.callers + lane as u32;
        let callee = self.plan.callees + lane as u32;
        let caller_call = phones.dial(
            &caller.to_string(),
            &password(caller),
            &callee.to_string(),
            false,
        );
        self.lane_of_call.insert(caller_call.clone(), lane);
        self.lanes[lane] = Some(Lane {
            caller_call,
            picker_call: None,
            step: Step::Dialling,
            picked_at: now,
            deadline: now + self.plan.timeout,
            failure: None,
        });
    }

    /// The lane's pickup is over (`failure` says why if it failed): the next one starts.
    fn finish(&mut self, phones: &mut Phones, lane: usize, failure: Option<Failure>, now: Instant) {
        let Some(old) = self.lanes[lane].take() else {
            return;
        };
        self.lane_of_call.remove(&old.caller_call);
        if let Some(picker_call) = &old.picker_call {
            self.lane_of_call.remove(picker_call);
        }
        let (counts, why) = match failure {
            None => {
                self.report.completed += 1;
                return self.start(phones, lane, now);
            }
            Some(Failure::Network(why)) => (&mut self.report.network_failures, why),
            Some(Failure::Other(why)) => (&mut self.report.failures, why),
        };
        *counts.entry(why).or_default() += 1;
        self.start(phones, lane, now);
    }

    /// The pickup in `lane` failed for `why`: the caller's call is ended first.
    fn fail(&mut self, phones: &mut Phones, lane: usize, why: Failure) {
        if let Some(state) = self.lanes[lane].as_mut() {
            state.step = Step::Clearing;
            state.failure.get_or_insert(why);
            phones.cancel(&state.caller_call);
            phones.hang_up(&state.caller_call);
        }
    }

    fn on_event(&mut self, phones: &mut Phones, event: Event, now: Instant) {
        match event {
            Event::Incoming { call_id, user } => {
                let lane = user
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| n.checked_sub(self.plan.callees))
                    .map(|lane| lane as usize);
                if let Some(lane) = lane.filter(|&lane| lane < self.lanes.len()) {
                    self.report.callee_invites += 1;
                    self.callee_calls.insert(call_id);
                    self.callee_rings(phones, lane, now);
                }
            }
            Event::Cancelled { call_id, .. } => {
                if self.callee_calls.remove(&call_id) {
                    self.report.callee_cancels += 1;
                }
            }
            Event::Answered { call_id, at } => self.answered(phones, &call_id, at),
            Event::Failed { call_id, code } => self.failed(phones, &call_id, code, now),
            Event::HungUp { call_id, code } => {
                let Some(&lane) = self.lane_of_call.get(&call_id) else {
                    return;
                };
                let failure = self.lanes[lane]
                    .as_ref()
                    .and_then(|state| match state.step {
                        Step::HangingUp if code == 200 => None,
                        Step::HangingUp => {
                            Some(Failure::Other(format!("the caller's BYE got {code}")))
                        }
                        _ => state.failure.clone(),
                    });
                self.finish(phones, lane, failure, now);
            }
            Event::TimedOut { call_id, method } => self.timed_out(phones, &call_id, &method, now),
            Event::Ringing { .. } => {}
        }
    }

    /// The callee of `lane` rings: its picker dials `*8`.
    fn callee_rings(&mut self, phones: &mut Phones, lane: usize, now: Instant) {
        let Some(state) = self.lanes[lane].as_mut() else {
            return;
        };
        if state.step != Step::Dialling {
            // Rung again: the gateway gave up the pickup; the caller's 200 decides.
            return;
        }
        let picker = self.plan.pickers + lane as u32;
        let picker_call = phones.dial(&picker.to_string(), &password(picker), "*8", true);
        self.lane_of_call.insert(picker_call.clone(), lane);
        self.picker_calls.insert(picker_call.clone());
        state.picker_call = Some(picker_call);
        state.step = Step::Picking;
        state.picked_at = now;
    }

    fn answered(&mut self, phones: &mut Phones, call_id: &str, at: Instant) {
        if self.picker_calls.remove(call_id) {
            self.report.bridged += 1;
            return;
        }
        let Some(&lane) = self.lane_of_call.get(call_id) else {
            return;
        };
        let Some(state) = self.lanes[lane].as_mut() else {
            return;
        };
        if state.step == Step::Picking {
            let micros = at.duration_since(state.picked_at).as_micros().max(1) as u64;
            let _ = self.report.latency_us.record(micros);
            state.step = Step::HangingUp;
        }
        phones.hang_up(call_id);
    }

    fn failed(&mut self, phones: &mut Phones, call_id: &str, code: u16, now: Instant) {
        let Some(&lane) = self.lane_of_call.get(call_id) else {
            return;
        };
        let Some(state) = self.lanes[lane].as_ref() else {
            return;
        };
        if state.picker_call.as_deref() == Some(call_id) {
            // 487: the picker's phone CANCELled its *8 INVITE on taking the call (or the
            // gateway ended it): the normal end of the dummy dialog.
            if code != 487 && state.step == Step::Picking {
                let why = format!("the picker's *8 INVITE got {code}");
                self.fail(phones, lane, Failure::Other(why));
            }
            return;
        }
        let failure = state.failure.clone().unwrap_or_else(|| {
            Failure::Other(format!(
                "the caller's INVITE got {code} while waiting for {}",
                state.step.waiting_for()
            ))
        });
        self.finish(phones, lane, Some(failure), now);
    }

    /// One of our requests went unanswered for 64·T1: the network lost the pickup.
    fn timed_out(&mut self, phones: &mut Phones, call_id: &str, method: &str, now: Instant) {
        let Some(&lane) = self.lane_of_call.get(call_id) else {
            return;
        };
        let Some(state) = self.lanes[lane].as_ref() else {
            return;
        };
        let who = if state.picker_call.as_deref() == Some(call_id) {
            "picker"
        } else {
            "caller"
        };
        let why = Failure::Network(format!("the {who}'s {method} unanswered until Timer B/F"));
        if who == "picker" {
            self.fail(phones, lane, why);
        } else {
            let failure = state.failure.clone().unwrap_or(why);
            self.finish(phones, lane, Some(failure), now);
        }
    }

    /// Lanes past their deadline fail, naming what they waited for.
    fn expire(&mut self, phones: &mut Phones, now: Instant) {
        for lane in 0..self.lanes.len() {
            let Some(state) = self.lanes[lane].as_ref().filter(|s| s.deadline <= now) else {
                continue;
            };
            let why = state.failure.clone().unwrap_or_else(|| {
                Failure::Other(format!(
                    "no end within {} s: waited for {}",
                    self.plan.timeout.as_secs(),
                    state.step.waiting_for()
                ))
            });
            let caller_call = state.caller_call.clone();
            phones.cancel(&caller_call);
            phones.hang_up(&caller_call);
            self.finish(phones, lane, Some(why), now);
        }
    }
}
