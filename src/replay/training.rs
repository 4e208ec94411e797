//! Model training for replay: a fixed number of worker threads (one per core, at most
//! [`MAX_WORKERS`]) train the models the driver asks for, and hand them back in the order
//! asked, so a replay gives the same output on every run whatever finishes first.
//! [`OrderedPool`] is the pool; [`TrainingPool`] is it for training jobs.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::stage::detect::TrainedModel;

/// Workers at most, whatever the machine: training jobs are short and many.
pub const MAX_WORKERS: usize = 4;

/// The pool replay trains its models on.
pub type TrainingPool = OrderedPool<TrainedModel>;

type Job<T> = Box<dyn FnOnce() -> T + Send>;
type Outcome<T> = thread::Result<T>;

/// Jobs in flight and the threads that run them (started on the first job); results come
/// back in the order the jobs were submitted.
pub struct OrderedPool<T> {
    workers: usize,
    jobs: Option<Sender<(u64, Job<T>)>>,
    results: Option<Receiver<(u64, Outcome<T>)>>,
    threads: Vec<JoinHandle<()>>,
    asked: u64,
    landed: u64,
    early: BTreeMap<u64, Outcome<T>>,
}

/// Lowers the calling thread's scheduling priority (nice 10): training fills the cores
/// the driver and the stages leave idle instead of taking turns with them, and a model a
/// step waits for still trains then (the waiting step leaves its core idle).
fn yield_to_the_stages() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; on Linux PRIO_PROCESS with who 0 is
    // the calling thread. Failing leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

impl<T: Send + 'static> OrderedPool<T> {
    /// A pool of `workers` threads (at least one).
    pub fn new(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            jobs: None,
            results: None,
            threads: Vec::new(),
            asked: 0,
            landed: 0,
            early: BTreeMap::new(),
        }
    }

    /// One worker per core, at most [`MAX_WORKERS`].
    pub fn per_core() -> Self {
        let cores = thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores.min(MAX_WORKERS))
    }

    /// Jobs asked for and not yet handed back.
    pub fn in_flight(&self) -> u64 {
        self.asked - self.landed
    }

    /// Queues a job; a worker picks it up as soon as one is free.
    pub fn submit(&mut self, job: impl FnOnce() -> T + Send + 'static) {
        if self.jobs.is_none() {
            self.start();
        }
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((self.asked, Box::new(job))).is_ok());
        assert!(sent, "the training workers stopped");
        self.asked += 1;
    }

    /// Jobs asked for so far, a mark for [`OrderedPool::drain_until`].
    pub fn asked(&self) -> u64 {
        self.asked
    }

    /// Waits for the jobs asked for before `mark` (an [`OrderedPool::asked`] taken
    /// earlier) and returns those not returned yet, in the order asked. A job that
    /// panicked panics here, as it would have inline.
    pub fn drain_until(&mut self, mark: u64) -> Vec<T> {
        let mark = mark.min(self.asked);
        let mut out = Vec::with_capacity(mark.saturating_sub(self.landed) as usize);
        while self.landed < mark {
            let outcome = match self.early.remove(&self.landed) {
                Some(outcome) => outcome,
                None => {
                    let results = self.results.as_ref().expect("started with the first job");
                    let (i, outcome) = results.recv().expect("the training workers stopped");
                    if i != self.landed {
                        self.early.insert(i, outcome);
                        continue;
                    }
                    outcome
                }
            };
            self.landed += 1;
            match outcome {
                Ok(model) => out.push(model),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    }

    fn start(&mut self) {
        let (jobs, queue) = channel::<(u64, Job<T>)>();
        let (done, results) = channel::<(u64, Outcome<T>)>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..self.workers {
            let queue = Arc::clone(&queue);
            let done = done.clone();
            let thread = thread::Builder::new()
                .name(format!("spanline-train-{n}"))
                .spawn(move || {
                    yield_to_the_stages();
                    loop {
                        // the lock is held only to take the next job
                        let next = queue
                            .lock()
                            .map_err(|_| ())
                            .and_then(|q| q.recv().map_err(|_| ()));
                        let Ok((i, job)) = next else { return };
                        let outcome = catch_unwind(AssertUnwindSafe(job));
                        if done.send((i, outcome)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning a training thread");
            self.threads.push(thread);
        }
        self.jobs = Some(jobs);
        self.results = Some(results);
    }
}

impl<T> Drop for OrderedPool<T> {
    fn drop(&mut self) {
        // closing the queue ends the workers once their current job is done
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_order_asked_whatever_finishes_first() {
        let mut pool = OrderedPool::new(2);
        // the first job cannot finish before the second has
        let (second_done, wait_for_second) = channel::<()>();
        pool.submit(move || {
            wait_for_second.recv().unwrap();
            "first"
        });
        pool.submit(move || {
            second_done.send(()).unwrap();
            "second"
        });
        let mark = pool.asked();
        pool.submit(|| "third");
        assert_eq!(pool.in_flight(), 3);
        assert_eq!(pool.drain_until(mark), vec!["first", "second"]);
        assert_eq!(pool.in_flight(), 1);
        assert_eq!(pool.drain_until(mark), Vec::<&str>::new());
        assert_eq!(pool.drain_until(u64::MAX), vec!["third"]);
        assert_eq!(pool.in_flight(), 0);
        // the workers stay for the next jobs
        pool.submit(|| "again");
        assert_eq!(pool.drain_until(u64::MAX), vec!["again"]);
    }

    #[test]
    fn no_more_threads_than_workers() {
        let mut pool = OrderedPool::new(3);
        for i in 0..100 {
            pool.submit(move || (i, thread::current().id()));
        }
        let results = pool.drain_until(u64::MAX);
        assert_eq!(
            results.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        let mut threads: Vec<_> = results.iter().map(|r| format!("{:?}", r.1)).collect();
        threads.sort();
        threads.dedup();
        assert!(threads.len() <= 3, "{} threads ran 100 jobs", threads.len());
    }

    #[test]
    #[should_panic(expected = "bad data")]
    fn a_job_that_panics_panics_at_drain() {
        let mut pool = OrderedPool::new(1);
        pool.submit(|| -> u8 { panic!("bad data") });
        pool.drain_until(u64::MAX);
    }
}
