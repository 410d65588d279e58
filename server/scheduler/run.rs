//! Running one batch with one instance, on its worker thread or inline on
//! a caller's: the execution, its accounting, and the answers.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Batch, ComputeTimes, ExecError, Executed, Executor, Reply, Served, Shared};

/// Where one request's answer goes, and how long it waited in the queue.
type Answer<O> = (oneshot::Sender<Reply<O>>, std::time::Duration);

/// Runs `batch` on `executor` (instance `instance`) and answers each of its
/// requests; a request larger than a batch runs in chunks of `chunk` rows.
pub(super) fn run_batch<J: Send + 'static, O: Send + 'static>(
    shared: &Shared<J, O>,
    executor: &mut dyn Executor<Job = J, Output = O>,
    instance: usize,
    batch: Batch<J, O>,
    chunk: usize,
) {
    let started = Instant::now();
    let mut rows = 0;
    let mut jobs = Vec::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    for queued in batch {
        let waited = started.saturating_duration_since(queued.waiting.enqueued);
        shared.observer.dequeued(waited);
        rows += queued.waiting.rows;
        jobs.push((queued.job.job, queued.waiting.rows));
        answers.push((queued.job.reply, waited));
    }
    let refs: Vec<&J> = jobs.iter().map(|(job, _)| job).collect();
    match execute(executor, &refs, chunk) {
        Ok(done) => {
            let (runs, times) = (done.runs.max(1), done.times);
            answer(shared, instance, answers, rows, done);
            // The instance was taken for this batch from `started` until
            // now: the model's time and everything around it that an
            // execution costs (its inputs' accounting, the answers).
            learn(shared, rows, runs, times, started.elapsed());
        }
        // One request's data can fail the whole execution (an index out of
        // a table's range fails the batch it is in): each request runs
        // again alone, so that only the ones that fail are told, and a
        // caller is never failed for what another sent.
        Err(_) if jobs.len() > 1 => {
            for ((job, rows), answer_to) in jobs.iter().zip(answers) {
                if answer_to.0.is_closed() {
                    // Its caller has gone: nobody is waiting for the run.
                    continue;
                }
                match execute(executor, &[job], chunk) {
                    Ok(done) => answer(shared, instance, vec![answer_to], *rows, done),
                    // The caller may have gone meanwhile; nobody is left to tell.
                    Err(error) => drop(answer_to.0.send(Err(error))),
                }
            }
        }
        Err(error) => {
            for (reply, _) in answers {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// One execution of `jobs`, with one output per job.
fn execute<J: Send + 'static, O: Send + 'static>(
    executor: &mut dyn Executor<Job = J, Output = O>,
    jobs: &[&J],
    chunk: usize,
) -> Result<Executed<O>, ExecError> {
    // A panic inside an execution must cost this batch, not the model:
    // the worker goes on with the next one.
    let done = std::panic::catch_unwind(AssertUnwindSafe(|| executor.execute(jobs, chunk)))
        .unwrap_or_else(|_| Err(ExecError::server("the inference thread panicked")))?;
    if done.outputs.len() == jobs.len() {
        Ok(done)
    } else {
        Err(ExecError::server(format!(
            "the execution returned {} outputs for {} requests",
            done.outputs.len(),
            jobs.len()
        )))
    }
}

/// Counts a successful execution of `rows` rows and sends each request its
/// output.
fn answer<J: Send + 'static, O: Send + 'static>(
    shared: &Shared<J, O>,
    instance: usize,
    answers: Vec<Answer<O>>,
    rows: usize,
    done: Executed<O>,
) {
    let runs = done.runs.max(1);
    shared
        .observer
        .executed(answers.len(), rows, runs, done.times);
    for ((reply, queued), output) in answers.into_iter().zip(done.outputs) {
        // The caller may have gone meanwhile; nobody is left to tell.
        let _ = reply.send(Ok(Served {
            output,
            queued,
            times: done.times,
            batch_rows: rows,
            instance,
        }));
    }
}

/// Feeds an execution's time to the moving average that decides inline
/// runs and to the count of instances that take work, and, if the server
/// picks the batch size, the time the instance was `occupied` to the batch
/// sizer: what a batch costs the server is the model's time plus a share
/// of each execution's fixed cost around it, which bigger batches amortise
/// too.
fn learn<J, O>(
    shared: &Shared<J, O>,
    rows: usize,
    runs: usize,
    times: ComputeTimes,
    occupied: std::time::Duration,
) {
    // A chunked request: each run is one execution of its share.
    let total = times.input + times.infer + times.output;
    let runs_u32 = u32::try_from(runs).unwrap_or(u32::MAX);
    let per_run = total / runs_u32;
    let sample = u64::try_from(per_run.as_nanos()).unwrap_or(u64::MAX).max(1);
    // Races between instances lose a sample at worst.
    let average = shared.execution_ns.load(Ordering::Relaxed);
    let next = match average {
        0 => sample,
        // Weight 1/8: a few slow runs turn inline runs off.
        _ => average - average / 8 + sample / 8,
    };
    shared.execution_ns.store(next.max(1), Ordering::Relaxed);
    let (changed, active, more) = {
        let mut state = shared.lock();
        let before = state.spread.active();
        let active = state.spread.record(total, Instant::now());
        let more = active.is_some_and(|active| active > before);
        let mut changed = None;
        if let Some(sizer) = state.sizer.as_mut() {
            let occupied_per_run = occupied.max(total) / runs_u32;
            for _ in 0..runs.min(64) {
                changed = sizer
                    .observe(rows.div_ceil(runs), occupied_per_run)
                    .or(changed);
            }
        }
        (changed, active, more)
    };
    if more {
        shared.park.notify_all();
    }
    if let Some(active) = active {
        shared.observer.active_instances(active);
    }
    if let Some(limit) = changed {
        shared.observer.batch_limit(limit);
        // A larger limit may make a waiting batch complete.
        shared.wake.notify_all();
    }
}
