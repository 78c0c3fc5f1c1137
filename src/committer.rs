//! One long-lived thread for the blocking commit calls (synchronous offset commits, and the
//! transaction's commits and aborts), each waited for with a deadline.
//!
//! librdkafka's commit calls block, sometimes past their own timeouts (a group coordinator that
//! disappears, librdkafka #5456 and #5511), and they must not run on a tokio worker. Running
//! them here lets the caller stop waiting at its deadline while the call goes on, and keeps one
//! thread for every commit of the run instead of a new one per commit. Calls run one at a
//! time, in order: a stuck call holds up the ones after it, which then miss their deadlines
//! too, as they would behind the same stuck client.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

type Job = Box<dyn FnOnce() + Send>;

pub struct Committer {
    jobs: Mutex<mpsc::Sender<Job>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the commit thread did not answer before the deadline")]
pub struct Late;

impl Committer {
    /// Starts the thread; it ends when the `Committer` is dropped and its calls are done.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ktransform-commit".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })?;
        Ok(Committer {
            jobs: Mutex::new(jobs),
        })
    }

    /// Runs `call` on the commit thread and waits for its result until `deadline` (blocking).
    pub fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Late> {
        let (done, result): (SyncSender<T>, Receiver<T>) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = done.send(call());
        });
        self.jobs.lock().unwrap().send(job).map_err(|_| Late)?;
        result
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| Late)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn calls_run_in_order_on_one_thread() {
        let committer = Committer::start().unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let first = committer.run(far, || std::thread::current().id()).unwrap();
        let second = committer.run(far, || std::thread::current().id()).unwrap();
        assert_eq!(first, second);
        assert_ne!(first, std::thread::current().id());
    }

    #[test]
    fn a_call_past_its_deadline_is_reported_late() {
        let committer = Committer::start().unwrap();
        let (release, wait) = mpsc::channel::<()>();
        let result = committer.run(Instant::now(), move || {
            let _ = wait.recv();
        });
        assert!(result.is_err());
        release.send(()).unwrap();
    }
}
