//! Detach: run a future in the caller's task, and move it to a task of its own only if the caller
//! is dropped before it finishes.
//!
//! Why: everything from a successful claim to its commit or release must run to the end even
//! when the client hangs up (a cancelled delivery would leave the identity in flight until its
//! lease ends, and MinIO's retry would find it so). A spawned task the request awaits gives that,
//! but costs a task per forwarded record: the spawn, a trip through the scheduler's run queue and
//! the join's wake-up. [`Detached`] polls the same boxed future inline, in the request's task, and
//! only its `Drop` — which runs when hyper drops the request future of a closed connection —
//! spawns what is left of it. A hang-up is rare; every other request saves the task.
//!
//! A panic while polling is caught and returned as [`Panicked`], as a spawned task's `JoinError`
//! was, so the request still answers (503) instead of tearing down its connection. Dropped outside
//! a runtime (a runtime shutting down drops its tasks), the rest is dropped, as the runtime would
//! have dropped a spawned task.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

/// The future panicked while it was polled in the caller's task.
#[derive(Debug, thiserror::Error)]
#[error("the detachable future panicked")]
pub struct Panicked;

/// A future that finishes even if its caller is dropped (see the module doc).
pub struct Detached<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    fut: Option<Pin<Box<F>>>,
}

impl<F> Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub fn new(fut: F) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
        }
    }
}

impl<F> Future for Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.fut.as_mut() else {
            // Polled again after it finished: a caller bug, answered as a failure, not a panic.
            return Poll::Ready(Err(Panicked));
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.fut = None;
                Poll::Ready(Ok(out))
            }
            Err(_) => {
                self.fut = None;
                Poll::Ready(Err(Panicked))
            }
        }
    }
}

impl<F> Drop for Detached<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(rest) = self.fut.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn it_runs_inline_and_returns_the_output() {
        assert_eq!(Detached::new(async { 7 }).await.expect("no panic"), 7);
    }

    #[tokio::test]
    async fn a_dropped_caller_leaves_the_rest_running_in_a_task() {
        let done = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let flag = done.clone();
        let caller = tokio::spawn(Detached::new(async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        }));
        started_rx.await.expect("the future started inline");
        caller.abort();
        assert!(caller.await.is_err_and(|e| e.is_cancelled()));
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the detached rest did not finish");
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_an_unwind() {
        let r = Detached::new(async {
            if true {
                panic!("boom");
            }
            1
        })
        .await;
        assert!(matches!(r, Err(Panicked)));
    }
}
