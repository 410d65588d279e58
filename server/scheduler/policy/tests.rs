use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;

fn policy(max: usize, preferred: &[usize], delay_ms: u64) -> BatchPolicy {
    BatchPolicy {
        max_batch_size: max,
        preferred_batch_sizes: preferred.to_vec(),
        max_queue_delay: Duration::from_millis(delay_ms),
    }
}

/// The queue's entries with their positions as ids.
fn positions(queue: &[Waiting]) -> impl Iterator<Item = (usize, &Waiting)> + Clone {
    queue.iter().enumerate()
}

fn waiting(rows: usize, key: u64) -> Waiting {
    Waiting::new(rows, Box::new([key]), Instant::now())
}

#[tokio::test(start_paused = true)]
async fn an_empty_queue_is_idle() {
    let queue: Vec<Waiting> = Vec::new();
    assert_eq!(
        policy(8, &[], 0).decide(positions(&queue), Instant::now()),
        Decision::Idle
    );
}

#[tokio::test(start_paused = true)]
async fn without_batching_the_oldest_runs_alone() {
    let queue = vec![waiting(1, 0), waiting(1, 0)];
    assert_eq!(
        BatchPolicy::unbatched().decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0])
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_delay_whatever_is_waiting_runs_now() {
    let queue = vec![waiting(1, 0), waiting(2, 0), waiting(1, 0)];
    assert_eq!(
        policy(8, &[], 0).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1, 2])
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_runs_before_the_delay() {
    let queue = vec![waiting(3, 0), waiting(1, 0), waiting(2, 0)];
    // 3 + 1 = 4 = max: the third request waits for the next batch.
    assert_eq!(
        policy(4, &[], 1000).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1])
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_waits_for_the_delay_then_runs() {
    let p = policy(8, &[], 5);
    let queue = vec![waiting(1, 0), waiting(1, 0)];
    let deadline = queue[0].enqueued + Duration::from_millis(5);
    assert_eq!(
        p.decide(positions(&queue), Instant::now()),
        Decision::WaitUntil(deadline)
    );
    advance(Duration::from_millis(4)).await;
    assert_eq!(
        p.decide(positions(&queue), Instant::now()),
        Decision::WaitUntil(deadline)
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        p.decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1])
    );
}

#[tokio::test(start_paused = true)]
async fn the_delay_counts_from_the_oldest_request() {
    let p = policy(8, &[], 10);
    let first = waiting(1, 0);
    advance(Duration::from_millis(8)).await;
    let queue = vec![first, waiting(1, 0)];
    advance(Duration::from_millis(2)).await;
    assert_eq!(
        p.decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1])
    );
}

#[tokio::test(start_paused = true)]
async fn the_largest_exact_preferred_size_runs_at_once() {
    let p = policy(16, &[2, 4], 1000);
    let queue = vec![
        waiting(1, 0),
        waiting(1, 0),
        waiting(1, 0),
        waiting(1, 0),
        waiting(1, 0),
    ];
    assert_eq!(
        p.decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1, 2, 3])
    );
    let queue = vec![waiting(1, 0), waiting(1, 0), waiting(1, 0)];
    assert_eq!(
        p.decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1])
    );
    // 3 rows then 2: no prefix is exactly 2 or 4, so it waits.
    let queue = vec![waiting(3, 0), waiting(2, 0)];
    assert!(matches!(
        p.decide(positions(&queue), Instant::now()),
        Decision::WaitUntil(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn only_compatible_requests_join_the_oldest() {
    let queue = vec![waiting(1, 7), waiting(1, 9), waiting(1, 7), waiting(1, 9)];
    assert_eq!(
        policy(8, &[], 0).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 2])
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_does_not_fit_stops_the_batch_fifo() {
    // The 4-row request does not fit after 3 rows; the 1-row request behind
    // it is not pulled ahead of it.
    let queue = vec![waiting(3, 0), waiting(4, 0), waiting(1, 0)];
    assert_eq!(
        policy(4, &[], 0).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0])
    );
}

#[tokio::test(start_paused = true)]
async fn requests_count_their_rows() {
    let queue = vec![waiting(5, 0), waiting(3, 0)];
    assert_eq!(
        policy(8, &[], 100).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0, 1])
    );
}

#[tokio::test(start_paused = true)]
async fn delayed_requests_yield_to_the_others_until_only_they_wait() {
    let now = Instant::now();
    let mut late = waiting(1, 0);
    late.delayed_after = Some(now);
    let fresh = waiting(1, 0);
    let p = policy(1, &[], 0);
    // The delayed one is older, but yields.
    assert_eq!(
        p.decide(positions(&[late.clone(), fresh.clone()]), now),
        Decision::Run(vec![1])
    );
    // Not delayed yet: arrival order.
    let mut not_yet = late.clone();
    not_yet.delayed_after = Some(now + Duration::from_secs(1));
    assert_eq!(
        p.decide(positions(&[not_yet, fresh]), now),
        Decision::Run(vec![0])
    );
    // Only delayed ones wait: they are served, in order.
    assert_eq!(
        p.decide(positions(&[late.clone(), late]), now),
        Decision::Run(vec![0])
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_above_the_limit_leads_alone() {
    let queue = vec![waiting(9, 0), waiting(1, 0)];
    assert_eq!(
        policy(4, &[], 1000).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0])
    );
    // Behind a smaller one, it ends that batch.
    let queue = vec![waiting(1, 0), waiting(9, 0), waiting(1, 0)];
    assert_eq!(
        policy(4, &[], 0).decide(positions(&queue), Instant::now()),
        Decision::Run(vec![0])
    );
}
