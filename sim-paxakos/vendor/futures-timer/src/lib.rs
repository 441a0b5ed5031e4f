//! The paxakos simulator's stand-in for `futures-timer` 3, patched in for its workspace
//! only: a [`Delay`] completes when the thread's virtual clock (the `instant` stand-in)
//! reaches its deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A future that completes at a point of virtual time.
#[derive(Debug)]
pub struct Delay {
    deadline: Duration,
    key: Option<(Duration, u64)>,
}

impl Delay {
    /// Completes `dur` from now.
    pub fn new(dur: Duration) -> Delay {
        Delay {
            deadline: instant::sim::now() + dur,
            key: None,
        }
    }

    /// Completes `dur` from now instead.
    pub fn reset(&mut self, dur: Duration) {
        if let Some(key) = self.key.take() {
            instant::sim::cancel(key);
        }
        self.deadline = instant::sim::now() + dur;
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(key) = self.key.take() {
            instant::sim::cancel(key);
        }
        if instant::sim::now() >= self.deadline {
            return Poll::Ready(());
        }
        let key = instant::sim::register(self.deadline, cx.waker().clone());
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            instant::sim::cancel(key);
        }
    }
}
