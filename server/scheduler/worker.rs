//! A worker thread: it waits for a batch its instance may run, runs it,
//! and when work stops coming tells its executor it is idle. Workers of
//! instances that take no work for now (`spread.rs`) park apart from the
//! others.

use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Batch, Decision, InstanceState, Shared, State, run};

/// How long a worker waits for work before telling its executor it is
/// idle.
pub(super) const TIDY_AFTER: Duration = Duration::from_millis(500);

/// Waits for the next batch `instance` runs, marking it busy; `None` once
/// the scheduler is dropped and the queue is empty. Returns the batch and
/// the rows per execution for a request larger than a batch. `ran` frees
/// the instance from the batch it ran before.
fn next_batch<J: Send + 'static, O: Send + 'static>(
    shared: &Shared<J, O>,
    instance: usize,
    ran: bool,
) -> Option<(Batch<J, O>, usize)> {
    let mut state = shared.lock();
    if ran {
        state.instances[instance] = InstanceState {
            busy: false,
            finished: Instant::now(),
        };
    }
    // Whether the executor has run since it was last told it is idle.
    let mut worked = ran;
    loop {
        if state.queue.is_empty() && state.closed {
            return None;
        }
        if instance >= state.spread.active() && !state.closed {
            // Not needed for now: parked where submitters' wake-ups do not
            // reach, until the active instances are saturated.
            let (guard, idle) = wait(state, &shared.park, worked, false);
            state = guard;
            if idle {
                worked = false;
                state = tidy(shared, state, instance);
            }
            continue;
        }
        let now = Instant::now();
        let limit = state.limit(&shared.policy);
        let decision = match state.instances[instance].busy {
            // A caller runs this instance inline; it wakes the workers when
            // it is done.
            true => Decision::Idle,
            false => shared
                .policy
                .decide_within(state.queue.waiting(), limit, now),
        };
        match decision {
            Decision::Run(ids) => {
                state.instances[instance].busy = true;
                let batch = state.queue.take(&ids);
                let pending = state.queue.len();
                let chunk = state.chunk(&shared.policy);
                drop(state);
                shared.observer.pending(pending);
                return Some((batch, chunk));
            }
            Decision::WaitUntil(deadline) => {
                let timeout = deadline.saturating_duration_since(now);
                state.sleeping += 1;
                state = shared
                    .wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                state.sleeping -= 1;
            }
            // Out of work after running batches: once no work came for a
            // while, the executor may give back what the batches needed
            // (not at once, or a closed-loop load would pay for it on
            // every round trip).
            Decision::Idle if worked => {
                let (guard, idle) = wait(state, &shared.wake, true, true);
                state = guard;
                if idle && state.queue.is_empty() && !state.instances[instance].busy {
                    worked = false;
                    state = tidy(shared, state, instance);
                }
            }
            Decision::Idle => state = wait(state, &shared.wake, false, true).0,
        }
    }
}

/// Waits on `condvar` (counted as sleeping if `counted`), for at most
/// [`TIDY_AFTER`] if `timed`; returns the lock and whether the wait timed
/// out.
fn wait<'a, J, O>(
    mut state: MutexGuard<'a, State<J, O>>,
    condvar: &Condvar,
    timed: bool,
    counted: bool,
) -> (MutexGuard<'a, State<J, O>>, bool) {
    if counted {
        state.sleeping += 1;
    }
    let (mut state, timed_out) = if timed {
        let (state, waited) = condvar
            .wait_timeout(state, TIDY_AFTER)
            .unwrap_or_else(|p| p.into_inner());
        (state, waited.timed_out())
    } else {
        (
            condvar.wait(state).unwrap_or_else(|p| p.into_inner()),
            false,
        )
    };
    if counted {
        state.sleeping -= 1;
    }
    (state, timed_out)
}

/// Tells `instance`'s executor it is idle, with the lock released and the
/// instance marked busy meanwhile (so no caller runs on it inline).
fn tidy<'a, J: Send + 'static, O: Send + 'static>(
    shared: &'a Shared<J, O>,
    mut state: MutexGuard<'a, State<J, O>>,
    instance: usize,
) -> MutexGuard<'a, State<J, O>> {
    state.instances[instance].busy = true;
    drop(state);
    if let Some(executor) = shared.instances[instance]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        executor.idle();
    }
    let mut state = shared.lock();
    state.instances[instance].busy = false;
    state
}

/// The worker thread of `instance`: runs batches until the scheduler is
/// dropped and its queue drained, then drops the instance's executor.
pub(super) fn work<J: Send + 'static, O: Send + 'static>(shared: &Shared<J, O>, instance: usize) {
    let mut ran = false;
    while let Some((batch, chunk)) = next_batch(shared, instance, ran) {
        let mut executor = shared.instances[instance]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(executor) = executor.as_mut() {
            run::run_batch(shared, executor.as_mut(), instance, batch, chunk);
        }
        ran = true;
    }
    let executor = shared.instances[instance]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    // The session is freed now, not when the last ticket goes.
    drop(executor);
}
