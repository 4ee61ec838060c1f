//! The run queue of `run`: which ledger a runner thread serves next.
//!
//! A ledger costs no thread while it waits. It is *queued* by a wake-up (a
//! file event, a reload, the stop) or by its timer (the next poll, the end
//! of a backoff), taken by one runner at a time, and *idle* again when its
//! step is done. Wake-ups that arrive while it is queued or running are
//! merged into one (the strongest: stop, then reload, then files), so a
//! busy ledger is served again at once, and a flood of file events costs
//! one catch-up. Ledgers are served in the order they were queued, so no
//! ledger starves another.
//!
//! A ledger that has just committed lines may be *paced*: a file wake-up
//! before the pace ends does not queue it at once but brings its timer
//! forward to the pace's end, and a ledger whose lines come in a steady
//! stream is queued at the pace's end whether or not a wake-up came (its
//! lines are most likely still coming, and the file watcher may be
//! resting between its rounds: see [`super::watch`]). Lines arriving in
//! a steady stream are committed a few at a time instead of one commit
//! per write (each commit costs whole pages of WAL), while a line after a
//! quiet spell is still taken at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Wake;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Queued,
    Running,
    /// Stopped for good (after a stop): never queued again.
    Finished,
}

#[derive(Debug)]
struct Slot {
    phase: Phase,
    /// Wake-ups not yet handed to a step, merged.
    wake: Option<Wake>,
    /// When the timer queues it (`None`: no timer).
    due: Option<Instant>,
    /// In a backoff: only a stop queues it before its timer.
    held: bool,
    /// A file wake-up before this instant waits for it (see the module
    /// doc); `None`: not paced.
    paced_until: Option<Instant>,
    /// Its earliest entry in the timer heap not yet fired. A step that
    /// wants a later deadline pushes nothing: that entry, when it fires,
    /// sets the timer again for `due`. So the heap holds about one entry
    /// per ledger, however many steps a busy minute has.
    armed: Option<Instant>,
}

struct State {
    slots: Vec<Slot>,
    queue: VecDeque<usize>,
    /// Deadlines; an entry that is not its slot's `armed` is stale.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
}

/// What a runner is handed: a ledger and why it was queued (`None`: its
/// timer).
pub(super) struct Turn {
    pub(super) ledger: usize,
    pub(super) wake: Option<Wake>,
}

/// What [`Schedule::take_within`] found.
pub(super) enum Taken {
    Turn(Turn),
    /// Nothing to do for the time given.
    Idle,
    /// Every ledger has finished.
    Finished,
}

/// What a step asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Queue again after this long, or sooner on a wake-up.
    After(Duration),
    /// Ignore file wake-ups until this long has passed (a backoff); a
    /// stop still comes through at once.
    Backoff(Duration),
    /// Queue again after `poll`; a file wake-up is served no sooner than
    /// `pace` from now (a reload or a stop at once). With `relook` (lines
    /// are coming in a steady stream) it is queued when the pace ends
    /// whether or not a wake-up came.
    Paced {
        pace: Duration,
        poll: Duration,
        relook: bool,
    },
    /// Stopped for good.
    Finished,
}

pub(super) struct Schedule {
    state: Mutex<State>,
    changed: Condvar,
}

fn merge(a: Option<Wake>, b: Wake) -> Wake {
    match (a, b) {
        (Some(Wake::Stop), _) | (_, Wake::Stop) => Wake::Stop,
        (Some(Wake::Reload), _) | (_, Wake::Reload) => Wake::Reload,
        _ => Wake::Files,
    }
}

impl Schedule {
    /// `ledgers` slots, every one queued (each starts with a step).
    pub(super) fn new(ledgers: usize) -> Schedule {
        Schedule {
            state: Mutex::new(State {
                slots: (0..ledgers)
                    .map(|_| Slot {
                        phase: Phase::Queued,
                        wake: None,
                        due: None,
                        held: false,
                        paced_until: None,
                        armed: None,
                    })
                    .collect(),
                queue: (0..ledgers).collect(),
                timers: BinaryHeap::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `ledger` (if it is idle) with `wake`.
    pub(super) fn wake(&self, ledger: usize, wake: Wake) {
        let mut state = self.lock();
        let queued = Self::queue_up(&mut state, ledger, wake);
        let brought_forward = !queued && Self::bring_forward(&mut state, ledger, wake);
        if queued || brought_forward {
            self.changed.notify_one();
        }
    }

    /// A file wake-up of a paced idle ledger (which `queue_up` left
    /// merged): its timer is brought forward to the pace's end. `true`
    /// when that is now the earliest timer (a waiting runner must look).
    fn bring_forward(state: &mut State, ledger: usize, wake: Wake) -> bool {
        let Some(slot) = state.slots.get_mut(ledger) else {
            return false;
        };
        let Some(until) = slot.paced_until else {
            return false;
        };
        if slot.phase != Phase::Idle || slot.held || wake != Wake::Files {
            return false;
        }
        if slot.due.is_some_and(|due| due <= until) {
            return false;
        }
        slot.due = Some(until);
        Self::arm(state, ledger, until)
    }

    /// Puts a timer for `ledger` at `at` unless an earlier one is armed;
    /// `true` when it is now the earliest of all.
    fn arm(state: &mut State, ledger: usize, at: Instant) -> bool {
        let slot = &mut state.slots[ledger];
        if slot.armed.is_some_and(|armed| armed <= at) {
            return false;
        }
        slot.armed = Some(at);
        let earliest = state.timers.peek().is_none_or(|Reverse((t, _))| at < *t);
        state.timers.push(Reverse((at, ledger)));
        earliest
    }

    /// [`Schedule::wake`] for every ledger, under one lock.
    pub(super) fn wake_all(&self, wake: Wake) {
        let mut state = self.lock();
        let mut queued = false;
        for ledger in 0..state.slots.len() {
            queued |= Self::queue_up(&mut state, ledger, wake);
        }
        if queued {
            self.changed.notify_all();
        }
    }

    /// Merges `wake` into the ledger's; `true` when that queued it.
    fn queue_up(state: &mut State, ledger: usize, wake: Wake) -> bool {
        let Some(slot) = state.slots.get_mut(ledger) else {
            return false;
        };
        if slot.phase == Phase::Finished {
            return false;
        }
        // A backoff lets only a stop through, a pace all but file
        // wake-ups; a poll timer, everything.
        slot.wake = Some(merge(slot.wake, wake));
        let paced = wake == Wake::Files && slot.paced_until.is_some_and(|p| p > Instant::now());
        if slot.phase == Phase::Idle && (!slot.held || wake == Wake::Stop) && !paced {
            slot.phase = Phase::Queued;
            slot.due = None;
            slot.paced_until = None;
            state.queue.push_back(ledger);
            return true;
        }
        false
    }

    /// The next ledger queued (or due), if any, without waiting.
    pub(super) fn try_take(&self) -> Option<Turn> {
        let mut state = self.lock();
        Self::fire_timers(&mut state, Instant::now());
        let ledger = state.queue.pop_front()?;
        let slot = &mut state.slots[ledger];
        slot.phase = Phase::Running;
        slot.held = false;
        let wake = slot.wake.take();
        Some(Turn { ledger, wake })
    }

    fn fire_timers(state: &mut State, now: Instant) {
        while let Some(&Reverse((at, ledger))) = state.timers.peek() {
            if at > now {
                break;
            }
            state.timers.pop();
            let slot = &mut state.slots[ledger];
            if slot.armed != Some(at) {
                continue; // superseded by an earlier entry
            }
            slot.armed = None;
            match slot.due {
                Some(due) if slot.phase == Phase::Idle && due <= now => {
                    slot.due = None;
                    slot.held = false;
                    slot.paced_until = None;
                    slot.phase = Phase::Queued;
                    state.queue.push_back(ledger);
                }
                Some(due) if slot.phase == Phase::Idle => {
                    slot.armed = Some(due);
                    state.timers.push(Reverse((due, ledger)));
                }
                _ => {}
            }
        }
    }

    /// The next ledger to serve; waits for one. `None` once every ledger
    /// has finished.
    #[cfg(test)]
    pub(super) fn take(&self) -> Option<Turn> {
        loop {
            match self.take_within(Duration::from_secs(3600)) {
                Taken::Turn(t) => return Some(t),
                Taken::Finished => return None,
                Taken::Idle => {}
            }
        }
    }

    /// [`Schedule::take`], waiting at most `patience`.
    pub(super) fn take_within(&self, patience: Duration) -> Taken {
        let give_up = Instant::now() + patience;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            Self::fire_timers(&mut state, now);
            if let Some(ledger) = state.queue.pop_front() {
                let slot = &mut state.slots[ledger];
                slot.phase = Phase::Running;
                slot.held = false;
                let wake = slot.wake.take();
                return Taken::Turn(Turn { ledger, wake });
            }
            if state.slots.iter().all(|s| s.phase == Phase::Finished) {
                self.changed.notify_all();
                return Taken::Finished;
            }
            if now >= give_up {
                return Taken::Idle;
            }
            let until = state
                .timers
                .peek()
                .map_or(give_up, |&Reverse((at, _))| at.min(give_up));
            state = self
                .changed
                .wait_timeout(state, until.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A runner finished `ledger`'s step; `next` says when it wants to run
    /// again.
    pub(super) fn done(&self, ledger: usize, next: Next) {
        let mut state = self.lock();
        let now = Instant::now();
        let slot = &mut state.slots[ledger];
        match next {
            Next::Finished => {
                slot.phase = Phase::Finished;
                slot.due = None;
                // Runners waiting for the last one to finish must look.
                self.changed.notify_all();
            }
            Next::After(wait) => self.idle_until(&mut state, ledger, now, wait, false, None),
            Next::Backoff(wait) => self.idle_until(&mut state, ledger, now, wait, true, None),
            Next::Paced { pace, poll, relook } => {
                let until = now + pace;
                let wait = if relook { poll.min(pace) } else { poll };
                self.idle_until(&mut state, ledger, now, wait, false, Some(until))
            }
        }
    }

    /// After a step: queued again at once for a wake-up that came during
    /// it and may go through, else idle until `now + wait` (`held`: a
    /// backoff; `paced_until`: see [`Next::Paced`]).
    fn idle_until(
        &self,
        state: &mut State,
        ledger: usize,
        now: Instant,
        wait: Duration,
        held: bool,
        paced_until: Option<Instant>,
    ) {
        let slot = &mut state.slots[ledger];
        let pending = slot.wake;
        let let_through = match pending {
            Some(Wake::Stop) => true,
            Some(Wake::Files) if paced_until.is_some() => false,
            Some(_) => !held,
            None => false,
        };
        if let_through {
            slot.phase = Phase::Queued;
            slot.due = None;
            slot.held = false;
            slot.paced_until = None;
            state.queue.push_back(ledger);
            self.changed.notify_one();
            return;
        }
        // Wake-ups held back by a backoff or a pace stay merged in
        // `wake`: the step after it is told.
        let mut at = now + wait;
        if let (Some(Wake::Files), Some(until)) = (pending, paced_until) {
            at = at.min(until);
        }
        slot.phase = Phase::Idle;
        slot.due = Some(at);
        slot.held = held;
        slot.paced_until = paced_until;
        if Self::arm(state, ledger, at) {
            // A runner may be waiting for a later deadline.
            self.changed.notify_one();
        }
    }

    /// Some ledger waits for a runner.
    pub(super) fn others_waiting(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// The ledgers not finished (for the grace period's report).
    pub(super) fn unfinished(&self) -> Vec<usize> {
        self.lock()
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.phase != Phase::Finished)
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_now(s: &Schedule) -> Turn {
        s.take().expect("a ledger to serve")
    }

    #[test]
    fn every_ledger_starts_queued_and_wakes_merge_while_running() {
        let s = Schedule::new(3);
        let order: Vec<usize> = (0..3).map(|_| take_now(&s).ledger).collect();
        assert_eq!(order, [0, 1, 2]);
        // Ledger 1 gets three wake-ups while running: one turn, the
        // strongest wake.
        s.wake(1, Wake::Files);
        s.wake(1, Wake::Reload);
        s.wake(1, Wake::Files);
        s.done(0, Next::After(Duration::from_secs(3600)));
        s.done(1, Next::After(Duration::from_secs(3600)));
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (1, Some(Wake::Reload)));
        s.done(1, Next::After(Duration::from_secs(3600)));
        s.done(2, Next::After(Duration::from_secs(3600)));
        // Idle: a wake queues it at once.
        s.wake(2, Wake::Files);
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (2, Some(Wake::Files)));
    }

    #[test]
    fn timers_queue_idle_ledgers_in_deadline_order() {
        let s = Schedule::new(2);
        let (a, b) = (take_now(&s).ledger, take_now(&s).ledger);
        s.done(a, Next::After(Duration::from_millis(60)));
        s.done(b, Next::After(Duration::from_millis(20)));
        let started = Instant::now();
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (b, None));
        assert!(started.elapsed() >= Duration::from_millis(15));
        assert_eq!(take_now(&s).ledger, a);
        assert!(started.elapsed() >= Duration::from_millis(55));
    }

    #[test]
    fn many_steps_of_one_ledger_keep_one_timer_and_the_latest_deadline_holds() {
        let s = Schedule::new(1);
        let first = take_now(&s).ledger;
        s.done(first, Next::After(Duration::from_millis(40)));
        for _ in 0..1000 {
            s.wake(0, Wake::Files);
            let t = take_now(&s);
            s.done(t.ledger, Next::After(Duration::from_millis(80)));
        }
        assert!(
            s.lock().timers.len() <= 2,
            "{} timers",
            s.lock().timers.len()
        );
        // The early entry fires, finds the later deadline, and sets it.
        let started = Instant::now();
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (0, None));
        assert!(started.elapsed() >= Duration::from_millis(60));
    }

    #[test]
    fn a_backoff_holds_file_wakes_back_but_not_a_stop() {
        let s = Schedule::new(2);
        let (a, b) = (take_now(&s).ledger, take_now(&s).ledger);
        s.done(a, Next::Backoff(Duration::from_millis(80)));
        s.done(b, Next::After(Duration::from_secs(3600)));
        let started = Instant::now();
        s.wake(a, Wake::Files);
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (a, Some(Wake::Files)));
        assert!(
            started.elapsed() >= Duration::from_millis(70),
            "the file wake-up waited for the backoff"
        );
        s.done(a, Next::Backoff(Duration::from_secs(3600)));
        s.wake(a, Wake::Stop);
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (a, Some(Wake::Stop)));
    }

    #[test]
    fn a_paced_ledger_takes_file_wakes_at_the_pace_end_and_others_at_once() {
        let s = Schedule::new(2);
        let (a, b) = (take_now(&s).ledger, take_now(&s).ledger);
        let pace = Duration::from_millis(60);
        let started = Instant::now();
        s.done(
            a,
            Next::Paced {
                pace,
                poll: Duration::from_secs(3600),
                relook: false,
            },
        );
        s.done(b, Next::After(Duration::from_secs(3600)));
        // Many file wake-ups during the pace: one turn, at its end.
        for _ in 0..100 {
            s.wake(a, Wake::Files);
        }
        assert!(s.try_take().is_none(), "held until the pace ends");
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (a, Some(Wake::Files)));
        assert!(started.elapsed() >= Duration::from_millis(55));
        assert!(s.lock().timers.len() <= 3, "one timer per ledger");
        // After the pace, a wake-up is served at once.
        s.done(
            a,
            Next::Paced {
                pace: Duration::from_millis(10),
                poll: Duration::from_secs(3600),
                relook: false,
            },
        );
        std::thread::sleep(Duration::from_millis(20));
        s.wake(a, Wake::Files);
        assert_eq!(s.try_take().map(|t| t.ledger), Some(a));
        // A reload and a stop are never paced.
        s.done(
            a,
            Next::Paced {
                pace: Duration::from_secs(3600),
                poll: Duration::from_secs(3600),
                relook: false,
            },
        );
        s.wake(a, Wake::Reload);
        assert_eq!(s.try_take().map(|t| t.wake), Some(Some(Wake::Reload)));
        s.done(
            a,
            Next::Paced {
                pace: Duration::from_secs(3600),
                poll: Duration::from_secs(3600),
                relook: false,
            },
        );
        s.wake(a, Wake::Stop);
        assert_eq!(s.try_take().map(|t| t.wake), Some(Some(Wake::Stop)));
    }

    #[test]
    fn a_streaming_ledger_is_looked_at_again_when_its_pace_ends_unwoken() {
        let s = Schedule::new(1);
        let a = take_now(&s).ledger;
        let started = Instant::now();
        s.done(
            a,
            Next::Paced {
                pace: Duration::from_millis(40),
                poll: Duration::from_secs(3600),
                relook: true,
            },
        );
        assert!(s.try_take().is_none());
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (a, None), "its timer, not a wake-up");
        assert!(started.elapsed() >= Duration::from_millis(35));
        // Not streaming: without a wake-up, the poll stands.
        s.done(
            a,
            Next::Paced {
                pace: Duration::from_millis(10),
                poll: Duration::from_secs(3600),
                relook: false,
            },
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.try_take().is_none());
        // A step that found nothing new is not paced: the poll stands.
        s.done(a, Next::After(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.try_take().is_none());
    }

    #[test]
    fn a_file_wake_during_the_step_before_a_pace_waits_for_the_pace() {
        let s = Schedule::new(1);
        let a = take_now(&s).ledger;
        s.wake(a, Wake::Files); // while running
        let started = Instant::now();
        s.done(
            a,
            Next::Paced {
                pace: Duration::from_millis(40),
                poll: Duration::from_secs(3600),
                relook: false,
            },
        );
        assert!(s.try_take().is_none());
        let t = take_now(&s);
        assert_eq!((t.ledger, t.wake), (a, Some(Wake::Files)));
        assert!(started.elapsed() >= Duration::from_millis(35));
    }

    #[test]
    fn take_ends_when_every_ledger_finished() {
        let s = std::sync::Arc::new(Schedule::new(2));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut served = Vec::new();
                while let Some(t) = s.take() {
                    served.push(t.ledger);
                    s.done(t.ledger, Next::Finished);
                }
                served
            })
        };
        let mut served = waiter.join().unwrap();
        served.sort_unstable();
        assert_eq!(served, [0, 1]);
        assert!(s.unfinished().is_empty());
        assert!(s.take().is_none());
    }
}
