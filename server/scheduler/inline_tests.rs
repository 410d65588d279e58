//! Inline runs: a lone request to a short model runs on the submitting
//! thread; anything else goes through the queue and the worker.

use std::sync::Arc;
use std::thread::{self, ThreadId};
use std::time::Duration;

use super::*;

/// Answers at once with the thread it ran on, claiming `took` per run.
struct Quick {
    took: Duration,
}

impl Executor for Quick {
    type Job = u32;
    type Output = (u32, ThreadId);

    fn execute(&mut self, jobs: &[&u32], _: usize) -> Result<Executed<(u32, ThreadId)>, ExecError> {
        Ok(Executed {
            outputs: jobs.iter().map(|&&j| (j, thread::current().id())).collect(),
            times: ComputeTimes {
                infer: self.took,
                ..ComputeTimes::default()
            },
            runs: 1,
        })
    }
}

fn scheduler(
    instances: usize,
    took: Duration,
    inline_below: Option<Duration>,
) -> Scheduler<u32, (u32, ThreadId)> {
    scheduler_with(instances, took, inline_below, false)
}

fn scheduler_with(
    instances: usize,
    took: Duration,
    inline_below: Option<Duration>,
    adaptive_instances: bool,
) -> Scheduler<u32, (u32, ThreadId)> {
    let settings = SchedulerSettings {
        policy: BatchPolicy {
            max_batch_size: 8,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
        },
        capacities: vec![16],
        auto: None,
        inline_below,
        adaptive_instances,
    };
    let executors = (0..instances).map(|_| Quick { took }).collect();
    Scheduler::start("inline", executors, settings, Arc::new(Unobserved)).unwrap()
}

async fn ask(scheduler: &Scheduler<u32, (u32, ThreadId)>, job: u32) -> Served<(u32, ThreadId)> {
    scheduler
        .submit_alone(job, 1, Box::new([0]), 0, None)
        .unwrap()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_short_model_runs_a_lone_request_on_the_callers_thread() {
    let scheduler = scheduler(
        1,
        Duration::from_micros(5),
        Some(Duration::from_micros(100)),
    );
    let here = thread::current().id();
    // Nothing measured yet: the first request goes to the worker.
    let first = ask(&scheduler, 1).await;
    assert_eq!(first.output.0, 1);
    assert_ne!(first.output.1, here);
    // The worker frees its instance just after answering.
    let mut job = 2;
    tokio::time::sleep(Duration::from_millis(1)).await;
    while ask(&scheduler, job).await.output.1 != here {
        assert!(job < 1000, "no request ran inline");
        tokio::time::sleep(Duration::from_millis(1)).await;
        job += 1;
    }
    for job in job + 1..job + 10 {
        // A lone client: the instance has been idle a while.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let served = ask(&scheduler, job).await;
        assert_eq!(served.output, (job, here));
        assert_eq!(served.instance, 0);
        assert_eq!(served.batch_rows, 1);
    }
}

#[tokio::test]
async fn a_slow_model_always_runs_on_its_worker() {
    let scheduler = scheduler(
        1,
        Duration::from_millis(2),
        Some(Duration::from_micros(100)),
    );
    let here = thread::current().id();
    for job in 0..5 {
        assert_ne!(ask(&scheduler, job).await.output.1, here);
    }
}

#[tokio::test]
async fn a_request_not_alone_in_the_server_is_queued() {
    let scheduler = scheduler(
        1,
        Duration::from_micros(5),
        Some(Duration::from_micros(100)),
    );
    let here = thread::current().id();
    ask(&scheduler, 0).await;
    for job in 1..5 {
        let ticket = scheduler.submit(job, 1, Box::new([0]), 0, None).unwrap();
        assert_ne!(ticket.await.unwrap().output.1, here);
    }
}

#[tokio::test]
async fn back_to_back_requests_are_queued() {
    // Executions of 5 µs; requests arriving with no gap between them are a
    // load, not a lone client: the instance is never idle for 4 of them.
    let scheduler = scheduler(
        1,
        Duration::from_micros(50),
        Some(Duration::from_micros(100)),
    );
    ask(&scheduler, 0).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let here = thread::current().id();
    // The first after a pause runs inline; at once after it, the next is
    // queued (the instance finished less than 180 µs ago).
    assert_eq!(ask(&scheduler, 1).await.output.1, here);
    assert_ne!(ask(&scheduler, 2).await.output.1, here);
}

#[tokio::test]
async fn without_the_setting_nothing_runs_inline() {
    let scheduler = scheduler(1, Duration::from_micros(5), None);
    let here = thread::current().id();
    for job in 0..5 {
        assert_ne!(ask(&scheduler, job).await.output.1, here);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_all_get_their_own_answer() {
    let scheduler = Arc::new(scheduler(
        2,
        Duration::from_micros(5),
        Some(Duration::from_micros(100)),
    ));
    let mut tasks = Vec::new();
    for caller in 0..8u32 {
        let scheduler = Arc::clone(&scheduler);
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let job = caller * 1000 + i;
                assert_eq!(ask(&scheduler, job).await.output.0, job);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_panic_inline_costs_the_request_not_the_model() {
    struct Flaky;
    impl Executor for Flaky {
        type Job = u32;
        type Output = u32;
        fn execute(&mut self, jobs: &[&u32], _: usize) -> Result<Executed<u32>, ExecError> {
            if *jobs[0] == 13 {
                panic!("unlucky");
            }
            Ok(Executed {
                outputs: jobs.iter().map(|&&j| j).collect(),
                times: ComputeTimes {
                    infer: Duration::from_micros(1),
                    ..ComputeTimes::default()
                },
                runs: 1,
            })
        }
    }
    let settings = SchedulerSettings {
        policy: BatchPolicy::unbatched(),
        capacities: vec![4],
        auto: None,
        inline_below: Some(Duration::from_micros(100)),
        adaptive_instances: false,
    };
    let scheduler = Scheduler::start("flaky", vec![Flaky], settings, Arc::new(Unobserved)).unwrap();
    let submit = |job| {
        scheduler
            .submit_alone(job, 1, Box::new([0]), 0, None)
            .unwrap()
    };
    assert_eq!(submit(1).await.unwrap().output, 1);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let failed = submit(13).await.unwrap_err();
    assert!(matches!(failed, SchedulerError::Failed(_)), "{failed:?}");
    assert_eq!(submit(2).await.unwrap().output, 2);
}

/// The instances that served a steady load of 8 requests at a time for
/// `for_how_long`.
async fn instances_used(
    scheduler: &Scheduler<u32, (u32, ThreadId)>,
    for_how_long: Duration,
) -> Vec<usize> {
    let until = Instant::now() + for_how_long;
    let mut used = Vec::new();
    while Instant::now() < until {
        let tickets: Vec<_> = (0..8)
            .map(|j| scheduler.submit(j, 1, Box::new([0]), 0, None).unwrap())
            .collect();
        for ticket in tickets {
            let instance = ticket.await.unwrap().instance;
            if !used.contains(&instance) {
                used.push(instance);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    used.sort_unstable();
    used
}

#[tokio::test]
async fn instances_the_server_chose_take_work_only_when_the_active_ones_are_saturated() {
    // Executions that take no time: one instance does it all.
    let short = scheduler_with(3, Duration::from_micros(1), None, true);
    assert_eq!(
        instances_used(&short, Duration::from_millis(700)).await,
        [0]
    );
    // Executions claiming far more time than passes: every instance joins.
    let long = scheduler_with(3, Duration::from_millis(50), None, true);
    assert_eq!(
        instances_used(&long, Duration::from_millis(1500)).await,
        [0, 1, 2]
    );
    // Named instances all take work whatever the load.
    let named = scheduler_with(3, Duration::from_micros(1), None, false);
    let used = instances_used(&named, Duration::from_millis(700)).await;
    assert!(used.len() > 1, "{used:?}");
}
