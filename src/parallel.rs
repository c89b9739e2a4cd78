//! A small bounded parallel map over scoped threads, for fan-out reads (index and snapshot
//! objects) where latency, not CPU, is the cost.

use std::sync::Mutex;

/// Applies `f` to every item using up to `threads` threads; results come back in input order.
pub fn map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    if n <= 1 || threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}
